// Dual-stack UDP sockets: a thread receives in batches with recvmmsg(2) and sends in batches with
// sendmmsg(2). The daemon binds one port with a steered group of sockets (SteeredUdpGroup, at the
// end): the reader's and one per worker, which the worker also sends on.
// Packet bytes stay in the caller's (SharedArrayBuffer) slots: the iovecs point straight at them.
// Each UdpSocket object owns native scratch memory (mmsghdr array, iovecs, addresses, control
// buffers) that is built once and reused, so one object belongs to one thread; other threads
// wrap the same descriptor with `UdpSocket.attach(fd)`.
import {
  AF_INET6, CMSGHDR_SIZE, EADDRNOTAVAIL, EAGAIN, EINTR, EINVAL, EIO, ENETUNREACH, IN6_PKTINFO_SIZE, IN_PKTINFO_SIZE, IOVEC_SIZE,
  IPV6_PKTINFO, IPV6_RECVPKTINFO, IPV6_V6ONLY, IP_PKTINFO, MMSGHDR_LEN, MMSGHDR_SIZE, MSGHDR_CONTROL,
  MSGHDR_CONTROLLEN, MSGHDR_FLAGS, MSGHDR_IOV, MSGHDR_IOVLEN, MSGHDR_NAME, MSGHDR_NAMELEN,
  F_DUPFD_CLOEXEC, MSG_DONTWAIT, O_CLOEXEC, SOCKADDR_IN6_SIZE, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOL_IP, SOL_IPV6,
  SOL_SOCKET, SOL_UDP, SO_ATTACH_REUSEPORT_CBPF, SO_RCVBUF, SO_RCVBUFFORCE, SO_REUSEPORT, SO_SNDBUF, SO_SNDBUFFORCE, UDP_GRO, UDP_SEGMENT,
  addressOf, closeFd, cmsgSpace, errno, getIntOption, isRoot, libc, setFilterOption, setIntOption, storePointer, storeSize, throwErrno,
  type BpfInstruction,
} from './libc.ts';

/**
 * Per-datagram metadata, 16 int32 words (64 bytes) per message, in caller-owned memory (it may
 * live in a SharedArrayBuffer next to a ring). Addresses are raw network-order bytes.
 *
 * | word  | bytes  | receive                               | send                                  |
 * |-------|--------|---------------------------------------|---------------------------------------|
 * | 0     | 0–3    | datagram length                       | bytes to send from the view's start   |
 * | 1     | 4–7    | msg_flags (MSG_TRUNC: slot too small) | 0 sent, else the errno of this message |
 * | 2     | 8–11   | source family: 4 or 6                 | destination family: 4 or 6            |
 * | 3     | 12–15  | source port                           | destination port                      |
 * | 4–7   | 16–31  | source address (IPv4: bytes 16–19)    | destination address                   |
 * | 8     | 32–35  | local family 4/6 (0: no pktinfo)      | source family 4/6, 0: kernel chooses  |
 * | 9     | 36–39  | ifindex the datagram arrived on       | outgoing ifindex for the source, 0 any |
 * | 10–13 | 40–55  | local (destination) address           | source address                        |
 * | 14    | 56–59  | source IPv6 scope id                  | destination IPv6 scope id             |
 * | 15    | 60–63  | GRO segment size (0: one datagram)    | unused                                |
 *
 * IPv4 addresses are never shown v4-mapped: family 4 and four bytes, the rest zero.
 */
export const META_WORDS = 16;
export const META_BYTES = META_WORDS * 4;
export const META_LENGTH = 0;
export const META_STATUS = 1;
export const META_REMOTE_FAMILY = 2;
export const META_REMOTE_PORT = 3;
export const META_REMOTE_ADDRESS_BYTE = 16;
export const META_LOCAL_FAMILY = 8;
export const META_LOCAL_IFINDEX = 9;
export const META_LOCAL_ADDRESS_BYTE = 40;
export const META_REMOTE_SCOPE = 14;
export const META_SEGMENT_SIZE = 15;

export type IpFamily = 4 | 6;

/** Typed views over a metadata table (see the layout above). */
export class DatagramMeta {
  readonly capacity: number;
  readonly words: Int32Array;
  readonly bytes: Uint8Array;

  constructor(capacity: number, buffer?: ArrayBufferLike, byteOffset = 0) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`udp: meta capacity ${capacity}`);
    const memory = buffer ?? new ArrayBuffer(capacity * META_BYTES);
    this.capacity = capacity;
    this.words = new Int32Array(memory, byteOffset, capacity * META_WORDS);
    this.bytes = new Uint8Array(memory, byteOffset, capacity * META_BYTES);
  }

  length(i: number): number { return this.words[i * META_WORDS + META_LENGTH] ?? 0; }
  status(i: number): number { return this.words[i * META_WORDS + META_STATUS] ?? 0; }
  remoteFamily(i: number): number { return this.words[i * META_WORDS + META_REMOTE_FAMILY] ?? 0; }
  remotePort(i: number): number { return this.words[i * META_WORDS + META_REMOTE_PORT] ?? 0; }
  localFamily(i: number): number { return this.words[i * META_WORDS + META_LOCAL_FAMILY] ?? 0; }
  localIfindex(i: number): number { return this.words[i * META_WORDS + META_LOCAL_IFINDEX] ?? 0; }
  /**
   * For a message the kernel coalesced with UDP GRO (udp(7)): the size of each datagram in it (the
   * last may be shorter), so datagram k sits at bytes k·size .. min((k+1)·size, length). 0 when
   * the message is one datagram.
   */
  segmentSize(i: number): number { return this.words[i * META_WORDS + META_SEGMENT_SIZE] ?? 0; }

  setLength(i: number, length: number): void { this.words[i * META_WORDS + META_LENGTH] = length; }

  /** Sets the destination of message i (send) from 4 or 16 address bytes. */
  setRemote(i: number, family: IpFamily, address: Uint8Array, port: number, scopeId = 0): void {
    const w = i * META_WORDS;
    this.words[w + META_REMOTE_FAMILY] = family;
    this.words[w + META_REMOTE_PORT] = port;
    this.words[w + META_REMOTE_SCOPE] = scopeId;
    copyAddress(address, family, this.bytes, i * META_BYTES + META_REMOTE_ADDRESS_BYTE);
  }

  /** Sets the source address (and outgoing ifindex, 0 for any) that message i must leave from. */
  setLocal(i: number, family: IpFamily, address: Uint8Array, ifindex = 0): void {
    const w = i * META_WORDS;
    this.words[w + META_LOCAL_FAMILY] = family;
    this.words[w + META_LOCAL_IFINDEX] = ifindex;
    copyAddress(address, family, this.bytes, i * META_BYTES + META_LOCAL_ADDRESS_BYTE);
  }

  /** Lets the kernel choose the source address of message i (after EINVAL/EADDRNOTAVAIL). */
  clearLocal(i: number): void {
    this.words[i * META_WORDS + META_LOCAL_FAMILY] = 0;
    this.words[i * META_WORDS + META_LOCAL_IFINDEX] = 0;
  }

  /** Copies the received source of message i into message j of `to` as a send destination. */
  copyRemoteTo(i: number, to: DatagramMeta, j: number): void {
    // Words 2–7 (family, port, address) and 14 (scope id).
    for (let k = META_REMOTE_FAMILY; k < META_LOCAL_FAMILY; k++) to.words[j * META_WORDS + k] = this.words[i * META_WORDS + k] ?? 0;
    to.words[j * META_WORDS + META_REMOTE_SCOPE] = this.words[i * META_WORDS + META_REMOTE_SCOPE] ?? 0;
  }

  /** "1.2.3.4:5" or "[::1]:5" for logs and tests (allocates). */
  remoteToString(i: number): string {
    return formatAddress(this.remoteFamily(i), this.bytes, i * META_BYTES + META_REMOTE_ADDRESS_BYTE, this.remotePort(i));
  }

  /** The local address of message i as "1.2.3.4" or "::1", or "" without pktinfo (allocates). */
  localToString(i: number): string {
    const family = this.localFamily(i);
    return family === 0 ? '' : formatAddress(family, this.bytes, i * META_BYTES + META_LOCAL_ADDRESS_BYTE);
  }
}

function copyAddress(address: Uint8Array, family: IpFamily, to: Uint8Array, at: number): void {
  const size = family === 4 ? 4 : 16;
  if (address.length !== size) throw new RangeError(`udp: IPv${family} address must be ${size} bytes, got ${address.length}`);
  to.fill(0, at, at + 16);
  to.set(address, at);
}

/** Formats an address held as raw bytes (allocates; for logs and tests). */
export function formatAddress(family: number, bytes: Uint8Array, at: number, port?: number): string {
  let text: string;
  if (family === 4) {
    text = `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
    return port === undefined ? text : `${text}:${port}`;
  }
  const groups: string[] = [];
  for (let g = 0; g < 8; g++) groups.push((((bytes[at + 2 * g] ?? 0) << 8) | (bytes[at + 2 * g + 1] ?? 0)).toString(16));
  // Compress the longest run of zero groups (RFC 5952 §4.2).
  let bestStart = -1;
  let bestLength = 1;
  for (let g = 0; g < 8;) {
    if (groups[g] !== '0') { g++; continue; }
    let end = g;
    while (end < 8 && groups[end] === '0') end++;
    if (end - g > bestLength) { bestStart = g; bestLength = end - g; }
    g = end;
  }
  text = bestStart < 0
    ? groups.join(':')
    : `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLength).join(':')}`;
  return port === undefined ? text : `[${text}]:${port}`;
}

/** Parses a literal IPv4 or IPv6 address (no zone) into bytes; for configuration and tests. */
export function parseAddress(text: string): { family: IpFamily; bytes: Uint8Array } {
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const bytes = new Uint8Array(4);
    for (let k = 0; k < 4; k++) {
      const octet = Number(v4[k + 1]);
      if (octet > 255) throw new RangeError(`udp: bad IPv4 address '${text}'`);
      bytes[k] = octet;
    }
    return { family: 4, bytes };
  }
  const halves = text.split('::');
  if (halves.length > 2 || !/^[0-9a-fA-F:]+$/.test(text)) throw new RangeError(`udp: bad IPv6 address '${text}'`);
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) {
    throw new RangeError(`udp: bad IPv6 address '${text}'`);
  }
  const groups = [...head, ...new Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  const bytes = new Uint8Array(16);
  groups.forEach((group, g) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) throw new RangeError(`udp: bad IPv6 address '${text}'`);
    const value = parseInt(group, 16);
    bytes[2 * g] = value >> 8;
    bytes[2 * g + 1] = value & 0xff;
  });
  return { family: 6, bytes };
}

/** wireguard-go asks for 7 MiB socket buffers (conn/controlfns_linux.go). */
export const DEFAULT_SOCKET_BUFFER_BYTES = 7 << 20;
export const DEFAULT_BATCH_SIZE = 64;
/**
 * Room for IP_PKTINFO and IPV6_PKTINFO together (a v4 datagram on a dual-stack socket gets both)
 * plus a UDP_GRO cmsg (32 + 40 + 24), and for a UDP_SEGMENT cmsg beside IPV6_PKTINFO on send.
 */
const CONTROL_BYTES = 128;
const NAME_STRIDE = 32; // sockaddr_in6 (28) rounded to 8

export interface UdpSocketOptions {
  /** Messages per recvBatch/sendBatch call this object can handle (native scratch size). */
  readonly batchSize?: number;
  /** SO_RCVBUF/SO_SNDBUF request (the *FORCE variants when root). */
  readonly bufferBytes?: number;
  /**
   * Send runs of same-size datagrams to one destination as one UDP GSO message (udp(7),
   * UDP_SEGMENT). Default: on unless the environment says ZTGATE_UDP_GSO=0.
   */
  readonly gso?: boolean;
  /**
   * For `open` (a property of the socket, kept across rebind): let the kernel coalesce runs of
   * same-size datagrams from one source into one received message (udp(7), UDP_GRO); recvBatch
   * then reports each message's segment size (DatagramMeta.segmentSize) and the reader splits it.
   * Default: on unless the environment says ZTGATE_UDP_GRO=0; silently off when the kernel refuses.
   */
  readonly gro?: boolean;
}

/**
 * Runs a thread's datagram paths once, sendBatch and recvBatch and the code they call, on a scratch
 * socket that sends one byte to itself over loopback. Their first run in a fresh daemon took
 * 0.5–1.5 ms (V8 compiles a function on its first call), which a peer's first handshake and first
 * data packets paid. Returns how many datagrams came back: 1, or 0 when loopback is down (the send
 * then fails, and the code has run all the same).
 */
export function warmUdpPaths(): number {
  const scratch = UdpSocket.open(0, { batchSize: 1 });
  try {
    const meta = new DatagramMeta(1);
    const views = [new Uint8Array(64)];
    meta.setLength(0, 1);
    meta.setRemote(0, 4, Uint8Array.of(127, 0, 0, 1), scratch.port());
    meta.clearLocal(0);
    scratch.sendBatch(views, meta, 1);
    return scratch.recvBatch(views, meta, 1);
  } finally {
    scratch.close();
  }
}

/** Whether UDP GSO is wanted by default: the off switch is ZTGATE_UDP_GSO=0. */
export function gsoWantedByDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['ZTGATE_UDP_GSO'] !== '0';
}

/**
 * Whether UDP GRO is wanted by default: off until it measurably helps (on this 2-vCPU lab it did
 * not: bigger bursts into the TUN device cost iperf3's socket more loss than the saved receives
 * gained). ZTGATE_UDP_GRO=1 turns it on.
 */
export function groWantedByDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['ZTGATE_UDP_GRO'] === '1';
}

/** The UDP_GRO cmsg carries an int: the segment size of a coalesced message. */
const UDP_GRO_DATA_SIZE = 4;

/**
 * The kernel's limits for one GSO send (udp_send_skb): at most UDP_MAX_SEGMENTS (64 on older
 * kernels) segments, and the whole payload must fit one IP packet's 16-bit length.
 */
const GSO_MAX_SEGMENTS = 64;
const GSO_MAX_BYTES = 65_535 - 40 - 8;
/** The UDP_SEGMENT cmsg carries a u16 segment size. */
const UDP_SEGMENT_DATA_SIZE = 2;

/**
 * Whether a send that named a source address failed in a way that means the address is no longer
 * usable (removed, or routing changed), so the caller should clear it and send again: IPv6 says
 * EADDRNOTAVAIL or EINVAL, IPv4 ENETUNREACH or EINVAL (the route lookup with a non-local source).
 */
export function sourceMayBeStale(status: number): boolean {
  return status === EINVAL || status === EADDRNOTAVAIL || status === ENETUNREACH;
}

/** Same destination (family, port, address, scope id) and same source (family, ifindex, address). */
function sameRoute(words: Int32Array, i: number, j: number): boolean {
  const a = i * META_WORDS;
  const b = j * META_WORDS;
  for (let k = META_REMOTE_FAMILY; k <= META_REMOTE_SCOPE; k++) if (words[a + k] !== words[b + k]) return false;
  return true;
}

function isV4Mapped(bytes: Uint8Array, at: number): boolean {
  for (let k = 0; k < 10; k++) if (bytes[at + k] !== 0) return false;
  return bytes[at + 10] === 0xff && bytes[at + 11] === 0xff;
}

function openBoundSocket(port: number, bufferBytes: number, gro: boolean, reusePort = false): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`udp: bad port ${port}`);
  const fd = libc.socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throwErrno('socket', 'AF_INET6 UDP');
  try {
    // One socket for both families: IPv4 peers appear as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
    setIntOption(fd, SOL_IPV6, IPV6_V6ONLY, 0, 'IPV6_V6ONLY');
    // Both pktinfo kinds, so each datagram names the local address it arrived on and a reply can
    // be sent from that same address (wireguard-go's sticky source, conn/sticky_linux.go).
    setIntOption(fd, SOL_IP, IP_PKTINFO, 1, 'IP_PKTINFO');
    setIntOption(fd, SOL_IPV6, IPV6_RECVPKTINFO, 1, 'IPV6_RECVPKTINFO');
    setBufferSizes(fd, bufferBytes);
    if (reusePort) setIntOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, 'SO_REUSEPORT');
    if (gro) {
      // Fewer, larger receives (wireguard-go does the same, conn/gso_linux.go); kernels before
      // 5.0 refuse the option, and then every datagram simply arrives on its own.
      try { setIntOption(fd, SOL_UDP, UDP_GRO, 1, 'UDP_GRO'); } catch { /* stays off */ }
    }
    const address = new Uint8Array(SOCKADDR_IN6_SIZE);
    new DataView(address.buffer).setUint16(0, AF_INET6, true);
    new DataView(address.buffer).setUint16(2, port, false);
    if (libc.bind(fd, address, SOCKADDR_IN6_SIZE) < 0) throwErrno('bind', `[::]:${port}`);
    return fd;
  } catch (error) {
    libc.close(fd);
    throw error;
  }
}

function setBufferSizes(fd: number, bytes: number): void {
  const root = isRoot();
  for (const [force, plain, name] of [[SO_RCVBUFFORCE, SO_RCVBUF, 'SO_RCVBUF'], [SO_SNDBUFFORCE, SO_SNDBUF, 'SO_SNDBUF']] as const) {
    // The FORCE variants pass net.core.[rw]mem_max; without CAP_NET_ADMIN the plain option is
    // capped silently, which is still the best an unprivileged process can get.
    if (root) {
      try { setIntOption(fd, SOL_SOCKET, force, bytes, `${name}FORCE`); continue; } catch { /* fall back below */ }
    }
    setIntOption(fd, SOL_SOCKET, plain, bytes, name);
  }
}

export function boundPort(fd: number): number {
  const address = new Uint8Array(SOCKADDR_IN6_SIZE);
  const length = new Uint32Array([SOCKADDR_IN6_SIZE]);
  if (libc.getsockname(fd, address, length) < 0) throwErrno('getsockname');
  return new DataView(address.buffer).getUint16(2, false);
}

export class UdpSocket {
  readonly fd: number;
  readonly batchSize: number;
  private readonly owned: boolean;
  private readonly scratch: ArrayBuffer;
  private readonly scratchView: DataView;
  private readonly scratchBytes: Uint8Array;
  private readonly scratchAddress: number;
  private readonly iovOffset: number;
  private readonly nameOffset: number;
  private readonly controlOffset: number;
  /** Per scratch header: the first message and the message count it sends (a GSO group or 1). */
  private readonly groupFirst: Int32Array;
  private readonly groupSize: Int32Array;
  /** Cleared for good once the kernel refuses GSO with EIO (no checksum offload on the route). */
  private gsoEnabled: boolean;
  private closed = false;
  /**
   * Per scratch header, the view its iovec points at for receiving (undefined: not wired for a
   * receive). A reader that posts the same views call after call then only resets the fields the
   * kernel overwrote; a send rewires the headers and clears this.
   */
  private readonly receiveViews: (Uint8Array | undefined)[];
  private receiveViewsValid = false;
  /** Headers the last receive filled (0 .. n - 1): only those have fields the kernel overwrote. */
  private receivedLast = 0;

  private constructor(fd: number, owned: boolean, options: UdpSocketOptions) {
    const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1024) throw new RangeError(`udp: batchSize ${batchSize}`);
    this.fd = fd;
    this.owned = owned;
    this.batchSize = batchSize;
    this.gsoEnabled = options.gso ?? gsoWantedByDefault();
    this.groupFirst = new Int32Array(batchSize);
    this.groupSize = new Int32Array(batchSize);
    this.receiveViews = new Array<Uint8Array | undefined>(batchSize).fill(undefined);
    // Layout: mmsghdr[n] | iovec[n] | sockaddr_in6[n] | control[n]. A plain ArrayBuffer: its
    // store never moves, and the GC frees it with this object.
    this.iovOffset = batchSize * MMSGHDR_SIZE;
    this.nameOffset = this.iovOffset + batchSize * IOVEC_SIZE;
    this.controlOffset = this.nameOffset + batchSize * NAME_STRIDE;
    this.scratch = new ArrayBuffer(this.controlOffset + batchSize * CONTROL_BYTES);
    this.scratchView = new DataView(this.scratch);
    this.scratchBytes = new Uint8Array(this.scratch);
    this.scratchAddress = addressOf(this.scratchBytes);
    // The pointers between the scratch structs never change: wire them once.
    for (let i = 0; i < batchSize; i++) {
      const h = i * MMSGHDR_SIZE;
      storePointer(this.scratchView, h + MSGHDR_NAME, this.scratchAddress + this.nameOffset + i * NAME_STRIDE);
      storePointer(this.scratchView, h + MSGHDR_IOV, this.scratchAddress + this.iovOffset + i * IOVEC_SIZE);
      storeSize(this.scratchView, h + MSGHDR_IOVLEN, 1);
    }
  }

  /** Opens the dual-stack socket on [::]:port (0: any free port; see `port()`). */
  static open(port: number, options: UdpSocketOptions = {}): UdpSocket {
    const bufferBytes = options.bufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES;
    return new UdpSocket(openBoundSocket(port, bufferBytes, options.gro ?? groWantedByDefault()), true, options);
  }

  /** Wraps a descriptor opened by another thread (not closed by this object's close()). */
  static attach(fd: number, options: UdpSocketOptions = {}): UdpSocket {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`udp: bad fd ${fd}`);
    return new UdpSocket(fd, false, options);
  }

  /** Whether sendBatch groups datagrams into GSO sends (false once the kernel refused). */
  get gso(): boolean {
    return this.gsoEnabled;
  }

  /** Whether the kernel coalesces received datagrams on this socket (UDP_GRO; asks the kernel). */
  get gro(): boolean {
    try {
      return getIntOption(this.fd, SOL_UDP, UDP_GRO, 'UDP_GRO') !== 0;
    } catch {
      return false;
    }
  }

  /** The port the socket is bound to now (asks the kernel, so it follows rebind from any thread). */
  port(): number {
    return boundPort(this.fd);
  }

  /**
   * Receives up to min(views.length, meta.capacity, batchSize) datagrams, one per view (each view
   * a whole slot), and fills `meta` (layout above). Returns the count; 0 when nothing is waiting.
   * A datagram longer than its view is cut and flagged with MSG_TRUNC in its status word.
   * On a socket with UDP_GRO a message may hold several datagrams: see DatagramMeta.segmentSize.
   */
  recvBatch(views: readonly Uint8Array[], meta: DatagramMeta, max: number = views.length): number {
    const n = Math.min(max, views.length, meta.capacity, this.batchSize);
    const s = this.scratchView;
    const wired = this.receiveViews;
    if (!this.receiveViewsValid) {
      wired.fill(undefined);
      this.receiveViewsValid = true;
    }
    for (let i = 0; i < n; i++) {
      const view = views[i] as Uint8Array;
      const h = i * MMSGHDR_SIZE;
      if (wired[i] === view && i >= this.receivedLast) continue;
      if (wired[i] !== view) {
        wired[i] = view;
        const iov = this.iovOffset + i * IOVEC_SIZE;
        storePointer(s, iov, addressOf(view));
        storeSize(s, iov + 8, view.byteLength);
        // Sending may have pointed this header at other iovecs or names (GSO groups): rewire it.
        storePointer(s, h + MSGHDR_IOV, this.scratchAddress + iov);
        storeSize(s, h + MSGHDR_IOVLEN, 1);
        storePointer(s, h + MSGHDR_NAME, this.scratchAddress + this.nameOffset + i * NAME_STRIDE);
        storePointer(s, h + MSGHDR_CONTROL, this.scratchAddress + this.controlOffset + i * CONTROL_BYTES);
      }
      // The kernel writes these three back for every datagram it receives.
      s.setUint32(h + MSGHDR_NAMELEN, SOCKADDR_IN6_SIZE, true);
      storeSize(s, h + MSGHDR_CONTROLLEN, CONTROL_BYTES);
      s.setUint32(h + MSGHDR_FLAGS, 0, true);
    }
    let received: number;
    do {
      received = libc.recvmmsg(this.fd, this.scratchAddress, n, MSG_DONTWAIT, null);
    } while (received < 0 && errno() === EINTR);
    if (received < 0) {
      this.receivedLast = 0;
      if (errno() === EAGAIN) return 0;
      throwErrno('recvmmsg');
    }
    this.receivedLast = received;
    for (let i = 0; i < received; i++) this.decodeReceived(i, meta);
    return received;
  }

  private decodeReceived(i: number, meta: DatagramMeta): void {
    const s = this.scratchView;
    const b = this.scratchBytes;
    const h = i * MMSGHDR_SIZE;
    const w = i * META_WORDS;
    const out = meta.bytes;
    const words = meta.words;
    words[w + META_LENGTH] = s.getUint32(h + MMSGHDR_LEN, true);
    words[w + META_STATUS] = s.getInt32(h + MSGHDR_FLAGS, true);

    // Source: always a sockaddr_in6 on this AF_INET6 socket; IPv4 peers arrive v4-mapped.
    const name = this.nameOffset + i * NAME_STRIDE;
    const remote = i * META_BYTES + META_REMOTE_ADDRESS_BYTE;
    words[w + META_REMOTE_PORT] = s.getUint16(name + 2, false);
    words[w + META_REMOTE_SCOPE] = s.getInt32(name + 24, true);
    if (isV4Mapped(b, name + 8)) {
      words[w + META_REMOTE_FAMILY] = 4;
      for (let k = 0; k < 4; k++) out[remote + k] = b[name + 20 + k] ?? 0;
      out.fill(0, remote + 4, remote + 16);
    } else {
      words[w + META_REMOTE_FAMILY] = 6;
      for (let k = 0; k < 16; k++) out[remote + k] = b[name + 8 + k] ?? 0;
    }

    // Local address from the control messages. A v4 datagram carries IP_PKTINFO and also an
    // IPV6_PKTINFO with the v4-mapped address; the first one found wins, they agree. A UDP_GRO
    // cmsg may come before or after them.
    words[w + META_LOCAL_FAMILY] = 0;
    words[w + META_LOCAL_IFINDEX] = 0;
    words[w + META_SEGMENT_SIZE] = 0;
    let localFound = false;
    const local = i * META_BYTES + META_LOCAL_ADDRESS_BYTE;
    const control = this.controlOffset + i * CONTROL_BYTES;
    const controlEnd = control + Math.min(s.getUint32(h + MSGHDR_CONTROLLEN, true), CONTROL_BYTES);
    for (let c = control; c + CMSGHDR_SIZE <= controlEnd;) {
      const cmsgLength = s.getUint32(c, true);
      if (cmsgLength < CMSGHDR_SIZE || c + cmsgLength > controlEnd) break;
      const level = s.getInt32(c + 8, true);
      const type = s.getInt32(c + 12, true);
      const data = c + CMSGHDR_SIZE;
      c += (cmsgLength + 7) & ~7;
      if (level === SOL_UDP && type === UDP_GRO && cmsgLength >= CMSGHDR_SIZE + UDP_GRO_DATA_SIZE) {
        // Only present when the kernel coalesced this message (udp_cmsg_recv); a "run" of one is
        // reported as a plain datagram below.
        const segmentSize = s.getInt32(data, true);
        if (segmentSize > 0 && segmentSize < words[w + META_LENGTH]!) words[w + META_SEGMENT_SIZE] = segmentSize;
        continue;
      }
      if (localFound) continue;
      if (level === SOL_IP && type === IP_PKTINFO && cmsgLength >= CMSGHDR_SIZE + IN_PKTINFO_SIZE) {
        // ipi_spec_dst is the local address to answer from (ip(7)), like wireguard-go uses.
        words[w + META_LOCAL_FAMILY] = 4;
        words[w + META_LOCAL_IFINDEX] = s.getInt32(data, true);
        for (let k = 0; k < 4; k++) out[local + k] = b[data + 4 + k] ?? 0;
        out.fill(0, local + 4, local + 16);
        localFound = true;
        continue;
      }
      if (level === SOL_IPV6 && type === IPV6_PKTINFO && cmsgLength >= CMSGHDR_SIZE + IN6_PKTINFO_SIZE) {
        words[w + META_LOCAL_IFINDEX] = s.getInt32(data + 16, true);
        if (isV4Mapped(b, data)) {
          words[w + META_LOCAL_FAMILY] = 4;
          for (let k = 0; k < 4; k++) out[local + k] = b[data + 12 + k] ?? 0;
          out.fill(0, local + 4, local + 16);
        } else {
          words[w + META_LOCAL_FAMILY] = 6;
          for (let k = 0; k < 16; k++) out[local + k] = b[data + k] ?? 0;
        }
        localFound = true;
      }
    }
  }

  /** Points scratch iovec `slot` at the first meta-length bytes of `view` (message i). */
  private encodeIov(slot: number, view: Uint8Array, meta: DatagramMeta, i: number): void {
    const s = this.scratchView;
    const length = meta.words[i * META_WORDS + META_LENGTH] ?? 0;
    if (length < 0 || length > view.byteLength) throw new RangeError(`udp: message ${i} length ${length} exceeds its view (${view.byteLength})`);
    const iov = this.iovOffset + slot * IOVEC_SIZE;
    storePointer(s, iov, addressOf(view));
    storeSize(s, iov + 8, length);
  }

  /**
   * Fills scratch header `h` to send `iovCount` iovecs from `firstIov` to meta entry i's
   * destination (and source). With gsoSize > 0 the kernel cuts the payload into datagrams of that
   * size (the last one may be shorter).
   */
  private encodeHeader(h: number, meta: DatagramMeta, i: number, firstIov: number, iovCount: number, gsoSize: number): void {
    const s = this.scratchView;
    const b = this.scratchBytes;
    const m = h * MMSGHDR_SIZE;
    const w = i * META_WORDS;
    const words = meta.words;
    const bytes = meta.bytes;
    storePointer(s, m + MSGHDR_IOV, this.scratchAddress + this.iovOffset + firstIov * IOVEC_SIZE);
    storeSize(s, m + MSGHDR_IOVLEN, iovCount);

    const name = this.nameOffset + h * NAME_STRIDE;
    const remote = i * META_BYTES + META_REMOTE_ADDRESS_BYTE;
    const remoteFamily = words[w + META_REMOTE_FAMILY];
    s.setUint16(name, AF_INET6, true);
    s.setUint16(name + 2, words[w + META_REMOTE_PORT] ?? 0, false);
    s.setUint32(name + 4, 0, true);
    if (remoteFamily === 4) {
      b.fill(0, name + 8, name + 18);
      b[name + 18] = 0xff;
      b[name + 19] = 0xff;
      for (let k = 0; k < 4; k++) b[name + 20 + k] = bytes[remote + k] ?? 0;
      s.setUint32(name + 24, 0, true);
    } else if (remoteFamily === 6) {
      for (let k = 0; k < 16; k++) b[name + 8 + k] = bytes[remote + k] ?? 0;
      s.setInt32(name + 24, words[w + META_REMOTE_SCOPE] ?? 0, true);
    } else {
      throw new RangeError(`udp: message ${i} has destination family ${remoteFamily}`);
    }
    storePointer(s, m + MSGHDR_NAME, this.scratchAddress + name);
    s.setUint32(m + MSGHDR_NAMELEN, SOCKADDR_IN6_SIZE, true);
    s.setUint32(m + MSGHDR_FLAGS, 0, true);

    // Optional source address: IP_PKTINFO (ipi_spec_dst) for v4, IPV6_PKTINFO for v6.
    const localFamily = words[w + META_LOCAL_FAMILY];
    const control = this.controlOffset + h * CONTROL_BYTES;
    const local = i * META_BYTES + META_LOCAL_ADDRESS_BYTE;
    const ifindex = words[w + META_LOCAL_IFINDEX] ?? 0;
    let controlLength = 0;
    const data = control + CMSGHDR_SIZE;
    if (localFamily === 4) {
      storeSize(s, control, CMSGHDR_SIZE + IN_PKTINFO_SIZE);
      s.setInt32(control + 8, SOL_IP, true);
      s.setInt32(control + 12, IP_PKTINFO, true);
      s.setInt32(data, ifindex, true);
      for (let k = 0; k < 4; k++) b[data + 4 + k] = bytes[local + k] ?? 0;
      s.setUint32(data + 8, 0, true);
      controlLength = cmsgSpace(IN_PKTINFO_SIZE);
    } else if (localFamily === 6) {
      storeSize(s, control, CMSGHDR_SIZE + IN6_PKTINFO_SIZE);
      s.setInt32(control + 8, SOL_IPV6, true);
      s.setInt32(control + 12, IPV6_PKTINFO, true);
      for (let k = 0; k < 16; k++) b[data + k] = bytes[local + k] ?? 0;
      s.setInt32(data + 16, ifindex, true);
      b.fill(0, data + 20, data + 24); // CMSG_SPACE padding
      controlLength = cmsgSpace(IN6_PKTINFO_SIZE);
    } else if (localFamily !== 0) {
      throw new RangeError(`udp: message ${i} has source family ${localFamily}`);
    }
    if (gsoSize > 0) {
      const segment = control + controlLength;
      storeSize(s, segment, CMSGHDR_SIZE + UDP_SEGMENT_DATA_SIZE);
      s.setInt32(segment + 8, SOL_UDP, true);
      s.setInt32(segment + 12, UDP_SEGMENT, true);
      s.setUint16(segment + CMSGHDR_SIZE, gsoSize, true);
      b.fill(0, segment + CMSGHDR_SIZE + UDP_SEGMENT_DATA_SIZE, segment + cmsgSpace(UDP_SEGMENT_DATA_SIZE));
      controlLength += cmsgSpace(UDP_SEGMENT_DATA_SIZE);
    }
    storePointer(s, m + MSGHDR_CONTROL, controlLength === 0 ? 0 : this.scratchAddress + control);
    storeSize(s, m + MSGHDR_CONTROLLEN, controlLength);
  }

  /**
   * Groups messages from..to-1 into scratch headers 0.. and returns how many. With `gso`, a run of
   * consecutive messages to the same destination from the same source whose lengths are all equal
   * (the last may be shorter) becomes one GSO send; otherwise every message is its own header.
   */
  private encodeGroups(meta: DatagramMeta, from: number, to: number, gso: boolean): number {
    const words = meta.words;
    let groups = 0;
    let first = -1;
    let size = 0;
    let segmentSize = 0;
    let total = 0;
    let closed = true;
    for (let i = from; i < to; i++) {
      const length = words[i * META_WORDS + META_LENGTH] ?? 0;
      if (gso && !closed && size < GSO_MAX_SEGMENTS && length <= segmentSize && length > 0
        && total + length <= GSO_MAX_BYTES && sameRoute(words, first, i)) {
        size++;
        total += length;
        closed = length < segmentSize;
        this.groupSize[groups - 1] = size;
        continue;
      }
      first = i;
      size = 1;
      segmentSize = length;
      total = length;
      closed = length === 0;
      this.groupFirst[groups] = i;
      this.groupSize[groups] = 1;
      groups++;
    }
    for (let h = 0; h < groups; h++) {
      const groupFirst = this.groupFirst[h]!;
      const groupSize = this.groupSize[h]!;
      const gsoSize = groupSize > 1 ? words[groupFirst * META_WORDS + META_LENGTH]! : 0;
      this.encodeHeader(h, meta, groupFirst, groupFirst, groupSize, gsoSize);
    }
    return groups;
  }

  /**
   * Sends messages 0..count-1: views[i] (a whole slot) holds the bytes, meta entry i says how many
   * and where (layout above). Returns how many messages were dealt with, in order: each of them
   * either went out (status 0) or failed (status = its errno; when `sourceMayBeStale(status)`
   * the source address is gone: clear it with `meta.clearLocal(i)` and send again, as
   * wireguard-go does). Messages from the returned index on were not tried because the socket
   * buffer is full (EAGAIN): wait or drop them.
   *
   * With GSO on, runs of equal-size datagrams to one destination leave as one message each
   * (wireguard-go's conn/gso_linux.go does the same); an error then applies to the whole run. A
   * run the kernel refuses (EIO: the route cannot checksum-offload; EINVAL: e.g. a segment larger
   * than the path MTU) is sent again as single datagrams, and after EIO GSO stays off.
   */
  sendBatch(views: readonly Uint8Array[], meta: DatagramMeta, count: number): number {
    if (count > this.batchSize || count > meta.capacity || count > views.length) {
      throw new RangeError(`udp: sendBatch of ${count} exceeds batchSize ${this.batchSize}, meta or views`);
    }
    this.receiveViewsValid = false;
    for (let i = 0; i < count; i++) this.encodeIov(i, views[i] as Uint8Array, meta, i);
    const words = meta.words;
    let done = 0;
    let gsoFallbackEnd = -1;
    resend: while (done < count) {
      // Right after a refused GSO run, that run goes out as single datagrams before grouping again.
      const plain = done < gsoFallbackEnd;
      const to = plain ? gsoFallbackEnd : count;
      const groups = this.encodeGroups(meta, done, to, this.gsoEnabled && !plain);
      let h = 0;
      while (h < groups) {
        const sent = libc.sendmmsg(this.fd, this.scratchAddress + h * MMSGHDR_SIZE, groups - h, MSG_DONTWAIT);
        if (sent > 0) {
          for (let g = h; g < h + sent; g++) {
            const size = this.groupSize[g]!;
            for (let k = done; k < done + size; k++) words[k * META_WORDS + META_STATUS] = 0;
            done += size;
          }
          h += sent;
          continue;
        }
        const code = errno();
        if (code === EINTR) continue;
        if (code === EAGAIN) return done;
        const size = this.groupSize[h]!;
        if (size > 1 && (code === EIO || code === EINVAL)) {
          if (code === EIO) this.gsoEnabled = false;
          gsoFallbackEnd = done + size;
          continue resend;
        }
        // sendmmsg reports an error only for the first message of the call: that one (a single
        // datagram, or a GSO run as a whole) failed alone.
        for (let k = done; k < done + size; k++) words[k * META_WORDS + META_STATUS] = code;
        done += size;
        h++;
      }
    }
    return done;
  }

  /**
   * Sends one message with sendmsg(2): meta entry `index` and `view`, same rules as sendBatch.
   * Returns 1 when dealt with (see its status word), 0 when the socket buffer is full.
   */
  sendOne(view: Uint8Array, meta: DatagramMeta, index: number): number {
    if (index >= meta.capacity) throw new RangeError(`udp: meta index ${index}`);
    this.receiveViewsValid = false;
    this.encodeIov(0, view, meta, index);
    this.encodeHeader(0, meta, index, 0, 1, 0);
    for (;;) {
      if (libc.sendmsg(this.fd, this.scratchAddress, MSG_DONTWAIT) >= 0) {
        meta.words[index * META_WORDS + META_STATUS] = 0;
        return 1;
      }
      const code = errno();
      if (code === EINTR) continue;
      if (code === EAGAIN) return 0;
      meta.words[index * META_WORDS + META_STATUS] = code;
      return 1;
    }
  }

  /** Closes the descriptor if this object opened it; an attached wrapper just stops. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.owned) closeFd(this.fd);
  }
}

// ---- one port, several sockets: transport data straight to its worker --------------------------

/** Classic BPF opcodes (linux/bpf_common.h, linux/filter.h) used by the steering program. */
const BPF_LD_W_LEN = 0x80;
const BPF_LD_W_ABS = 0x20;
const BPF_LD_B_ABS = 0x30;
const BPF_JGE_K = 0x35;
const BPF_JEQ_K = 0x15;
const BPF_LSH_K = 0x64;
const BPF_OR_X = 0x4c;
const BPF_MOD_K = 0x94;
const BPF_ADD_K = 0x04;
const BPF_TAX = 0x07;
const BPF_RET_A = 0x16;
const BPF_RET_K = 0x06;

/** A WireGuard transport message starts with the bytes 04 00 00 00 (whitepaper §5.4.6). */
const TRANSPORT_FIRST_WORD_BIG_ENDIAN = 0x0400_0000;
/** Header (16) plus the AEAD tag (16) of an empty (keepalive) transport message. */
const TRANSPORT_MIN_BYTES = 32;

/**
 * The reuseport program (SO_ATTACH_REUSEPORT_CBPF) for a group bound in the order reader, worker
 * 0 … worker n-1: a transport message goes to socket 1 + (receiver index mod n), the worker that
 * owns the index (indexes.ts, shardOfIndex); anything else (handshakes, cookies, STUN, TURN
 * ChannelData, junk) to the reader's socket 0. For UDP the kernel runs the program with the data
 * pulled past the UDP header (net/core/sock_reuseport.c, run_bpf_filter), so offsets are payload
 * offsets and `len` is the payload length. Absolute loads are big-endian; the index is
 * little-endian, so it is put together byte by byte.
 */
export function transportSteeringProgram(workerCount: number): BpfInstruction[] {
  if (!Number.isInteger(workerCount) || workerCount < 1) throw new RangeError(`udp: worker count ${workerCount}`);
  const op = (code: number, k = 0, jt = 0, jf = 0): BpfInstruction => ({ code, jt, jf, k });
  return [
    op(BPF_LD_W_LEN),
    op(BPF_JGE_K, TRANSPORT_MIN_BYTES, 0, 18), // → ret #0
    op(BPF_LD_W_ABS, 0),
    op(BPF_JEQ_K, TRANSPORT_FIRST_WORD_BIG_ENDIAN, 0, 16), // → ret #0
    op(BPF_LD_B_ABS, 7), op(BPF_LSH_K, 8), op(BPF_TAX),
    op(BPF_LD_B_ABS, 6), op(BPF_OR_X), op(BPF_LSH_K, 8), op(BPF_TAX),
    op(BPF_LD_B_ABS, 5), op(BPF_OR_X), op(BPF_LSH_K, 8), op(BPF_TAX),
    op(BPF_LD_B_ABS, 4), op(BPF_OR_X),
    op(BPF_MOD_K, workerCount),
    op(BPF_ADD_K, 1),
    op(BPF_RET_A),
    op(BPF_RET_K, 0),
  ];
}

/**
 * Opens the reader's socket and one per worker on one port with SO_REUSEPORT, steered by
 * transportSteeringProgram. The program is attached to the group right after the reader's socket
 * is bound, before any worker socket joins: until a worker's socket exists its index is past the
 * end of the group, and the kernel falls back to its hash over the sockets there (only the
 * reader's at first), so nothing is lost while the group forms. Group order is bind order
 * (sock_reuseport.c appends each socket). Returns the descriptors, reader's first.
 *
 * SO_REUSEPORT would also let the group join sockets another process (same user) bound to the
 * port with SO_REUSEPORT, e.g. a second daemon given the same listen-port, and the kernel picks a
 * port for `0` among such ports too. So the port is first taken by a plain socket, which fails
 * with EADDRINUSE on any port in use as wireguard-go's bind does, and the group binds that port
 * right after the plain socket is closed; only a process binding the port within that instant can
 * still join.
 */
function openSteeredGroup(port: number, workerCount: number, bufferBytes: number, gro: boolean): number[] {
  const probe = openBoundSocket(port, 0, false);
  const free = boundPort(probe);
  closeFd(probe);
  const fds: number[] = [];
  try {
    const reader = openBoundSocket(free, bufferBytes, gro, true);
    fds.push(reader);
    setFilterOption(reader, SO_ATTACH_REUSEPORT_CBPF, transportSteeringProgram(workerCount), 'SO_ATTACH_REUSEPORT_CBPF');
    // Worker sockets get no GRO (only the reader splits coalesced messages): with ZTGATE_UDP_GRO=1
    // only what reaches the reader is coalesced.
    for (let k = 0; k < workerCount; k++) fds.push(openBoundSocket(free, bufferBytes, false, true));
    return fds;
  } catch (error) {
    for (const fd of fds) libc.close(fd);
    throw error;
  }
}

/**
 * The steered group: `reader` (a UdpSocket the control thread owns) and the worker descriptors.
 * Rebinding moves the whole group at once and keeps every descriptor number, so the fds every
 * thread holds stay valid.
 */
export class SteeredUdpGroup {
  readonly reader: UdpSocket;
  readonly workerFds: readonly number[];
  private readonly bufferBytes: number;
  private readonly groEnabled: boolean;

  private constructor(fds: number[], options: UdpSocketOptions, gro: boolean) {
    this.reader = UdpSocket.attach(fds[0]!, options);
    this.workerFds = fds.slice(1);
    this.bufferBytes = options.bufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES;
    this.groEnabled = gro;
  }

  static open(port: number, workerCount: number, options: UdpSocketOptions = {}): SteeredUdpGroup {
    const gro = options.gro ?? groWantedByDefault();
    return new SteeredUdpGroup(openSteeredGroup(port, workerCount, options.bufferBytes ?? DEFAULT_SOCKET_BUFFER_BYTES, gro), options, gro);
  }

  port(): number {
    return this.reader.port();
  }

  /**
   * Moves every socket of the group to `port` (0: any free one) and returns the bound port. The
   * new group is formed first, so a busy port leaves the old one untouched; then each descriptor
   * number is pointed at its new socket with dup3(2). Should a dup3 fail midway, the descriptors
   * already moved are pointed back at the old sockets (kept open by duplicates until the end), so
   * the group is never split across two ports. Datagrams queued on the old sockets are dropped
   * with them. Threads blocked in poll(2) on a descriptor keep the old socket until they wake:
   * the caller wakes them.
   */
  rebind(port: number): number {
    if (port !== 0 && port === this.port()) return port;
    const targets = [this.reader.fd, ...this.workerFds];
    const replacements = openSteeredGroup(port, this.workerFds.length, this.bufferBytes, this.groEnabled);
    const originals: number[] = [];
    try {
      for (const fd of targets) {
        const original = libc.fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (original < 0) throwErrno('fcntl', 'F_DUPFD_CLOEXEC');
        originals.push(original);
      }
      let moved = 0;
      try {
        for (; moved < targets.length; moved++) if (libc.dup3(replacements[moved]!, targets[moved]!, O_CLOEXEC) < 0) throwErrno('dup3');
      } catch (error) {
        for (let k = 0; k < moved; k++) libc.dup3(originals[k]!, targets[k]!, O_CLOEXEC);
        throw error;
      }
    } finally {
      for (const fd of [...replacements, ...originals]) libc.close(fd);
    }
    return this.port();
  }

  close(): void {
    for (const fd of [this.reader.fd, ...this.workerFds]) closeFd(fd);
  }
}
