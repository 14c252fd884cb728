// A multi-queue TUN device: one non-blocking descriptor per queue (IFF_MULTI_QUEUE), raw IP
// packets without the 4-byte packet-information prefix (IFF_NO_PI). Descriptors are
// process-wide, so queue k can be read by one thread and written by others. Link settings (MTU,
// up, ifindex) go through ioctls on a throwaway socket, by interface name, in the calling
// thread's network namespace: after the interface has been moved to another namespace those
// calls fail (ENODEV) while the queue descriptors keep working.
import { SyscallError } from '../errors.ts';
import {
  AF_INET, EAGAIN, EBADF, EBADFD, EINTR, EINVAL, O_CLOEXEC, O_NONBLOCK, O_RDWR, SOCK_CLOEXEC, SOCK_DGRAM, addressOf,
  closeFd, errno, libc, throwErrno,
} from './libc.ts';

// linux/if_tun.h: TUNSETIFF = _IOW('T', 202, int), TUNGETIFF = _IOR('T', 210, unsigned int).
const TUNSETIFF = 0x400454ca;
const TUNGETIFF = 0x800454d2;
export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
export const IFF_MULTI_QUEUE = 0x0100;
/** Every read and write starts with a struct virtio_net_hdr (see src/workers/offload.ts). */
export const IFF_VNET_HDR = 0x4000;
// _IOW('T', 208, unsigned int) and _IOW('T', 216, int).
const TUNSETOFFLOAD = 0x400454d0;
const TUNSETVNETHDRSZ = 0x400454d8;
// linux/if_tun.h: what the reader can take (checksum left partial, TCP and UDP super-packets).
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const TUN_F_TSO6 = 0x04;
const TUN_F_USO4 = 0x20;
const TUN_F_USO6 = 0x40;
/** sizeof(struct virtio_net_hdr): what TUNSETVNETHDRSZ is set to. */
export const TUN_VNET_HDR_SIZE = 10;
// linux/sockios.h and linux/if.h.
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFMTU = 0x8921;
const SIOCSIFMTU = 0x8922;
const SIOCGIFINDEX = 0x8933;
const IFF_UP = 0x1;
/** struct ifreq: a 16-byte name, then a 24-byte union (short flags, int mtu, int ifindex). */
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function makeIfreq(name: string): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(IFREQ_SIZE);
  const encoded = encoder.encode(name);
  // A name of 15 bytes at most leaves room for the terminating NUL; "%d" lets the kernel number it.
  if (encoded.length === 0 || encoded.length >= IFNAMSIZ || encoded.includes(0) || encoded.includes(0x2f)) {
    throw new RangeError(`tun: bad interface name '${name}'`);
  }
  bytes.set(encoded);
  return { bytes, view: new DataView(bytes.buffer) };
}

function ifreqName(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return decoder.decode(bytes.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end));
}

/** Runs one interface ioctl by name on a throwaway AF_INET socket of the current namespace. */
function interfaceIoctl(name: string, request: number, what: string, fill?: (view: DataView) => void): DataView {
  const { bytes, view } = makeIfreq(name);
  fill?.(view);
  const sock = libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throwErrno('socket', 'for interface ioctl');
  try {
    if (libc.ioctl(sock, request, bytes) < 0) throwErrno('ioctl', `${what} ${name}`);
  } finally {
    libc.close(sock);
  }
  return view;
}

export function interfaceIndex(name: string): number {
  return interfaceIoctl(name, SIOCGIFINDEX, 'SIOCGIFINDEX').getInt32(IFNAMSIZ, true);
}

export function interfaceMtu(name: string): number {
  return interfaceIoctl(name, SIOCGIFMTU, 'SIOCGIFMTU').getInt32(IFNAMSIZ, true);
}

export function setInterfaceMtu(name: string, mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`tun: bad MTU ${mtu}`);
  interfaceIoctl(name, SIOCSIFMTU, 'SIOCSIFMTU', (view) => view.setInt32(IFNAMSIZ, mtu, true));
}

/** Sets or clears IFF_UP, keeping the other flags. */
export function setInterfaceUp(name: string, up: boolean): void {
  const flags = interfaceIoctl(name, SIOCGIFFLAGS, 'SIOCGIFFLAGS').getUint16(IFNAMSIZ, true);
  const wanted = up ? flags | IFF_UP : flags & ~IFF_UP;
  if (wanted !== flags) interfaceIoctl(name, SIOCSIFFLAGS, 'SIOCSIFFLAGS', (view) => view.setUint16(IFNAMSIZ, wanted, true));
}

/** Whether TUN offloads are wanted by default: the off switch is ZTGATE_TUN_OFFLOAD=0. */
export function tunOffloadWantedByDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['ZTGATE_TUN_OFFLOAD'] !== '0';
}

/**
 * Opens one queue. With `vnetHeader`, asks for checksum, TSO and USO offloads; a kernel older
 * than 6.2 refuses USO (EINVAL), and then the queue gets checksum and TSO only: it neither hands
 * out nor takes UDP super-packets, so `udpSegmentation` says whether writers may send them.
 */
function openQueue(name: string, vnetHeader: boolean): { fd: number; name: string; udpSegmentation: boolean } {
  const fd = libc.open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) throwErrno('open', '/dev/net/tun');
  try {
    const { bytes, view } = makeIfreq(name);
    view.setUint16(IFNAMSIZ, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | (vnetHeader ? IFF_VNET_HDR : 0), true);
    if (libc.ioctl(fd, TUNSETIFF, bytes) < 0) throwErrno('ioctl', `TUNSETIFF ${name}`);
    let udpSegmentation = false;
    if (vnetHeader) {
      if (libc.ioctl(fd, TUNSETVNETHDRSZ, new Int32Array([TUN_VNET_HDR_SIZE])) < 0) throwErrno('ioctl', 'TUNSETVNETHDRSZ');
      // The argument is the flag word itself, not a pointer to it.
      const offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
      udpSegmentation = libc.ioctl(fd, TUNSETOFFLOAD, offloads | TUN_F_USO4 | TUN_F_USO6) >= 0;
      if (!udpSegmentation && (errno() !== EINVAL || libc.ioctl(fd, TUNSETOFFLOAD, offloads) < 0)) throwErrno('ioctl', 'TUNSETOFFLOAD');
    }
    // The kernel writes back the final name (it expands a "%d" pattern).
    return { fd, name: ifreqName(bytes), udpSegmentation };
  } catch (error) {
    libc.close(fd);
    throw error;
  }
}

/**
 * The name of the interface a queue descriptor is attached to, or null once the interface has
 * been deleted (TUNGETIFF fails with EBADFD). Moving the interface to another namespace keeps it
 * attached, which is how a move is told apart from a deletion.
 */
export function attachedInterfaceName(fd: number): string | null {
  const bytes = new Uint8Array(IFREQ_SIZE);
  if (libc.ioctl(fd, TUNGETIFF, bytes) < 0) {
    if (errno() === EBADFD) return null;
    throwErrno('ioctl', 'TUNGETIFF');
  }
  return ifreqName(bytes);
}

export interface TunOptions {
  /** Number of queues (descriptors); each can be served by its own thread. */
  readonly queues?: number;
  /** Set this MTU right after creation. */
  readonly mtu?: number;
  /** Bring the link up after creation (default true). */
  readonly up?: boolean;
  /**
   * IFF_VNET_HDR with checksum, TSO and (Linux 6.2 on) USO offloads: reads and writes carry a
   * 10-byte virtio-net header and reads may return super-packets (default false).
   */
  readonly offload?: boolean;
}

export class Tun {
  /** The queue descriptors, process-wide: hand the numbers to worker threads. */
  readonly fds: readonly number[];
  /** The interface index, taken at creation in the creating namespace. */
  readonly ifindex: number;
  /** Whether every read and write carries a virtio-net header (offloads on). */
  readonly vnetHeader: boolean;
  /** Whether the device takes UDP super-packets (USO, Linux 6.2): only then may writers coalesce UDP. */
  readonly udpSegmentation: boolean;
  private closed = false;

  private constructor(fds: readonly number[], ifindex: number, vnetHeader: boolean, udpSegmentation: boolean) {
    this.fds = fds;
    this.ifindex = ifindex;
    this.vnetHeader = vnetHeader;
    this.udpSegmentation = udpSegmentation;
  }

  /** Creates (or attaches to) TUN interface `name` with `queues` queue descriptors. */
  static open(name: string, options: TunOptions = {}): Tun {
    const queues = options.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 256) throw new RangeError(`tun: bad queue count ${queues}`);
    const fds: number[] = [];
    const offload = options.offload ?? false;
    try {
      const first = openQueue(name, offload);
      fds.push(first.fd);
      let udpSegmentation = first.udpSegmentation;
      for (let q = 1; q < queues; q++) {
        const queue = openQueue(first.name, offload);
        fds.push(queue.fd);
        udpSegmentation &&= queue.udpSegmentation;
      }
      if (options.mtu !== undefined) setInterfaceMtu(first.name, options.mtu);
      if (options.up ?? true) setInterfaceUp(first.name, true);
      return new Tun(fds, interfaceIndex(first.name), offload, udpSegmentation);
    } catch (error) {
      for (const fd of fds) libc.close(fd);
      throw error;
    }
  }

  /** The interface's current name (follows renames); throws EBADFD once it is deleted. */
  name(): string {
    const name = attachedInterfaceName(this.firstFd());
    if (name === null) throw new SyscallError('ioctl', EBADFD, 'TUNGETIFF: interface deleted');
    return name;
  }

  /** Whether the interface still exists (in this namespace or another one). */
  isAttached(): boolean {
    return attachedInterfaceName(this.firstFd()) !== null;
  }

  mtu(): number { return interfaceMtu(this.name()); }
  setMtu(mtu: number): void { setInterfaceMtu(this.name(), mtu); }
  setUp(up: boolean): void { setInterfaceUp(this.name(), up); }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds) closeFd(fd);
  }

  private firstFd(): number {
    const fd = this.fds[0];
    if (this.closed || fd === undefined) throw new SyscallError('ioctl', EBADF, 'tun: closed');
    return fd;
  }
}

/**
 * Reads one packet into `view` (a whole slot) from queue descriptor `fd`. Returns its length,
 * or 0 when no packet is waiting (EAGAIN) or the call was interrupted. Throws SyscallError:
 * EBADFD once the interface is deleted (wireguard-go stops the device then).
 */
export function tunRead(fd: number, view: Uint8Array): number {
  const n = libc.read(fd, addressOf(view), view.byteLength);
  if (n >= 0) return n;
  const code = errno();
  if (code === EAGAIN || code === EINTR) return 0;
  return throwErrno('read', 'tun');
}

/**
 * Writes the packet view[offset, offset+length) to queue descriptor `fd`. Returns the bytes
 * written, or 0 when the queue is full (EAGAIN) or the call was interrupted. Throws SyscallError
 * (EIO while the link is down, EINVAL for a malformed packet, EBADFD once deleted).
 */
export function tunWrite(fd: number, view: Uint8Array, offset: number, length: number): number {
  if (offset < 0 || length < 0 || offset + length > view.byteLength) {
    throw new RangeError(`tun: write range ${offset}+${length} outside a ${view.byteLength}-byte view`);
  }
  const n = libc.write(fd, addressOf(view) + offset, length);
  if (n >= 0) return n;
  const code = errno();
  if (code === EAGAIN || code === EINTR) return 0;
  return throwErrno('write', 'tun');
}
