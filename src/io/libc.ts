// The few libc calls ztgate's I/O needs, bound through koffi, plus the Linux constants and struct
// offsets they use. Loadable in any worker thread (koffi is per isolate; descriptors are
// process-wide), so a socket or TUN queue opened in one thread is used from every other.
//
// Pointers: koffi passes a typed array (also one over a SharedArrayBuffer) to a `void *`
// parameter as a pointer to its own memory, without copying, and accepts a plain number as an
// address. `addressOf()` turns a view into that number once per backing buffer, so the iovecs
// inside prebuilt mmsghdr arrays can point straight into packet slots.
import koffi from 'koffi';
import { SyscallError } from '../errors.ts';

// The struct offsets below are those of the LP64 Linux ABI (x86-64 and arm64 agree on all of them,
// and on the generic ioctl numbering used for TUN).
if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) {
  throw new Error(`io: unsupported platform ${process.platform}/${process.arch} (Linux x64 or arm64 only)`);
}

const lib = koffi.load('libc.so.6');

// `void *` parameters take a typed array, an ArrayBuffer, a number (an address) or null.
// ioctl/fcntl/open are variadic in C; on the LP64 Linux ABIs an int or pointer third argument is
// passed the same way as to a fixed-argument function, and the fixed form is faster through koffi.
export const libc = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  socketpair: lib.func('int socketpair(int domain, int type, int protocol, void *sv)'),
  bind: lib.func('int bind(int fd, void *addr, uint32_t addrlen)'),
  setsockopt: lib.func('int setsockopt(int fd, int level, int name, void *value, uint32_t len)'),
  getsockopt: lib.func('int getsockopt(int fd, int level, int name, void *value, void *len)'),
  getsockname: lib.func('int getsockname(int fd, void *addr, void *addrlen)'),
  recvmmsg: lib.func('int recvmmsg(int fd, void *msgvec, unsigned int vlen, int flags, void *timeout)'),
  sendmmsg: lib.func('int sendmmsg(int fd, void *msgvec, unsigned int vlen, int flags)'),
  sendmsg: lib.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recv: lib.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
  poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  close: lib.func('int close(int fd)'),
  read: lib.func('intptr_t read(int fd, void *buf, size_t count)'),
  write: lib.func('intptr_t write(int fd, void *buf, size_t count)'),
  open: lib.func('int open(const char *path, int flags, int mode)'),
  ioctl: lib.func('int ioctl(int fd, unsigned long request, void *arg)'),
  fcntl: lib.func('int fcntl(int fd, int cmd, int arg)'),
  dup3: lib.func('int dup3(int oldfd, int newfd, int flags)'),
  eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
  setns: lib.func('int setns(int fd, int nstype)'),
  getuid: lib.func('uint32_t geteuid(void)'),
  sched_yield: lib.func('int sched_yield(void)'),
} as const;

/** The calling thread's errno right after a failed call (koffi keeps it per thread). */
export function errno(): number {
  return koffi.errno();
}

/** Throws the SyscallError for the errno just left by `syscall`. */
export function throwErrno(syscall: string, detail = ''): never {
  throw new SyscallError(syscall, koffi.errno(), detail);
}

// Linux errno values that callers branch on.
export const EINTR = 4;
export const EIO = 5;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENODEV = 19;
export const EINVAL = 22;
export const EBADFD = 77;
export const EADDRINUSE = 98;
export const EADDRNOTAVAIL = 99;
export const ENETUNREACH = 101;
export const ENOBUFS = 105;

// Address and socket families, types and flags (linux/socket.h, linux/net.h).
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;

// open(2) and fcntl(2).
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const O_RDWR = 2;
export const O_RDONLY = 0;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
/** fcntl(2): duplicate onto the lowest free descriptor ≥ arg, close-on-exec. */
export const F_DUPFD_CLOEXEC = 1030;

// Socket option levels and names.
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
/** socket(7): several sockets may bind one port; the kernel picks one per datagram. */
export const SO_REUSEPORT = 15;
/** socket(7): a classic BPF program picks the socket (its index in the group) for each datagram. */
export const SO_ATTACH_REUSEPORT_CBPF = 51;
export const SOL_IP = 0;
export const IP_PKTINFO = 8;
export const SOL_IPV6 = 41;
export const IPV6_V6ONLY = 26;
export const IPV6_RECVPKTINFO = 49;
export const IPV6_PKTINFO = 50;
export const SOL_UDP = 17;
/** udp(7): the segment size of a GSO send (cmsg or option), and GRO on receive. */
export const UDP_SEGMENT = 103;
export const UDP_GRO = 104;

// poll(2).
export const POLLIN = 0x001;
export const POLLNVAL = 0x020;

export const CLONE_NEWNET = 0x40000000;

/** sizeof and field offsets of the structs built by hand in packet-path scratch memory. */
export const IOVEC_SIZE = 16; // { void *iov_base; size_t iov_len; }
export const MSGHDR_NAME = 0;
export const MSGHDR_NAMELEN = 8;
export const MSGHDR_IOV = 16;
export const MSGHDR_IOVLEN = 24;
export const MSGHDR_CONTROL = 32;
export const MSGHDR_CONTROLLEN = 40;
export const MSGHDR_FLAGS = 48;
export const MSGHDR_SIZE = 56;
export const MMSGHDR_LEN = 56; // unsigned int msg_len, after the embedded msghdr
export const MMSGHDR_SIZE = 64;
export const SOCKADDR_IN6_SIZE = 28; // family u16, port u16 (BE), flowinfo u32, addr[16], scope_id u32
export const CMSGHDR_SIZE = 16; // { size_t cmsg_len; int cmsg_level; int cmsg_type; } then data
/** CMSG_SPACE(n): a header plus n data bytes, rounded up to the 8-byte alignment of size_t. */
export function cmsgSpace(dataLength: number): number {
  return CMSGHDR_SIZE + ((dataLength + 7) & ~7);
}
export const IN_PKTINFO_SIZE = 12; // { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
export const IN6_PKTINFO_SIZE = 20; // { in6_addr ipi6_addr; int ipi6_ifindex; }

// Addresses of backing stores: SharedArrayBuffers never move, and neither does an ArrayBuffer's
// out-of-heap store once `.buffer` has been asked for (V8 moves only on-heap typed-array bytes,
// and `.buffer` takes them off the heap), so one lookup per buffer is enough. The one-entry cache
// covers the common case of every view coming from the same slab.
const baseAddresses = new WeakMap<ArrayBufferLike, number>();
let lastBuffer: ArrayBufferLike | null = null;
let lastBase = 0;

function baseAddressOf(buffer: ArrayBufferLike): number {
  if (buffer === lastBuffer) return lastBase;
  let base = baseAddresses.get(buffer);
  if (base === undefined) {
    // Addresses in user space fit in 47 bits (48 with arm64's larger VA), so a double holds them
    // exactly and pointer arithmetic on the hot path needs no BigInt.
    base = Number(koffi.address(buffer));
    baseAddresses.set(buffer, base);
  }
  lastBuffer = buffer;
  lastBase = base;
  return base;
}

/**
 * The native address of `view[0]`. Valid while the view's buffer is alive and not detached
 * (transferring or resizing an ArrayBuffer away invalidates it; SharedArrayBuffers cannot be).
 */
export function addressOf(view: ArrayBufferView): number {
  return baseAddressOf(view.buffer) + view.byteOffset;
}

/**
 * Stores a native address into little-endian scratch memory as two 32-bit halves (LP64 pointers
 * are 8 bytes; both supported ABIs are little-endian), avoiding a BigInt per store.
 */
export function storePointer(scratch: DataView, offset: number, address: number): void {
  scratch.setUint32(offset, address >>> 0, true);
  scratch.setUint32(offset + 4, Math.floor(address / 0x1_0000_0000), true);
}

/** Stores a size_t (< 2^32 in every use here) as a little-endian 64-bit value. */
export function storeSize(scratch: DataView, offset: number, size: number): void {
  scratch.setUint32(offset, size, true);
  scratch.setUint32(offset + 4, 0, true);
}

/** Sets an int socket option; throws SyscallError on failure. */
export function setIntOption(fd: number, level: number, name: number, value: number, what: string): void {
  const box = new Int32Array([value]);
  if (libc.setsockopt(fd, level, name, box, 4) < 0) throwErrno('setsockopt', what);
}

/** Reads an int socket option; throws SyscallError on failure. */
export function getIntOption(fd: number, level: number, name: number, what: string): number {
  const box = new Int32Array(1);
  const length = new Uint32Array([4]);
  if (libc.getsockopt(fd, level, name, box, length) < 0) throwErrno('getsockopt', what);
  return box[0] ?? 0;
}

/** One classic BPF instruction (linux/filter.h, struct sock_filter): 8 bytes. */
export interface BpfInstruction {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  readonly k: number;
}

/**
 * Sets a socket option whose value is a struct sock_fprog (linux/filter.h: u16 length, then a
 * pointer to the instructions), e.g. SO_ATTACH_REUSEPORT_CBPF. The kernel copies the program.
 */
export function setFilterOption(fd: number, name: number, program: readonly BpfInstruction[], what: string): void {
  const instructions = new DataView(new ArrayBuffer(program.length * 8));
  program.forEach((instruction, i) => {
    instructions.setUint16(i * 8, instruction.code, true);
    instructions.setUint8(i * 8 + 2, instruction.jt);
    instructions.setUint8(i * 8 + 3, instruction.jf);
    instructions.setUint32(i * 8 + 4, instruction.k >>> 0, true);
  });
  const fprog = new DataView(new ArrayBuffer(16));
  fprog.setUint16(0, program.length, true);
  storePointer(fprog, 8, addressOf(new Uint8Array(instructions.buffer)));
  if (libc.setsockopt(fd, SOL_SOCKET, name, new Uint8Array(fprog.buffer), 16) < 0) throwErrno('setsockopt', what);
}

/** Closes a descriptor; EINTR still closes it on Linux, so it is not retried. */
export function closeFd(fd: number): void {
  if (libc.close(fd) < 0 && koffi.errno() !== EINTR) throwErrno('close');
}

// Three pollfds per thread for pollReadable: module state is per isolate, so threads never share it.
const pollFds = new Int32Array(6); // 3 × { int fd; short events; short revents; }
const pollShorts = new Int16Array(pollFds.buffer);
const eventCounter = new BigUint64Array(1);

/** pollReadable's result bits: `fd` is ready, `alsoFd` is ready (0: neither). */
export const READABLE_FD = 1;
export const READABLE_ALSO_FD = 2;

/**
 * Waits until `fd` or `alsoFd` (-1 for none) is readable (or has an error or hang-up to report,
 * which the next read returns), `wakeFd` (an eventfd, -1 for none) is signalled, or `timeoutMs`
 * passes (-1: forever). Returns which of `fd` and `alsoFd` are ready (READABLE_FD and
 * READABLE_ALSO_FD bits), so that a caller with two descriptors reads only the ready one: a read
 * that finds nothing still costs a syscall, and after a sleep a cold one. A signal on `wakeFd` is
 * consumed here. A thread uses the wake descriptor to learn of commands or ring entries at once
 * instead of at its next timeout. Throws SyscallError for a closed fd.
 */
export function pollReadable(fd: number, timeoutMs: number, wakeFd = -1, alsoFd = -1): number {
  // pollfd k: fd at int32 2k, events and revents at int16 4k + 2 and 4k + 3. A negative fd is
  // ignored by poll(2), so the array always holds all three.
  pollFds[0] = fd;
  pollFds[2] = wakeFd;
  pollFds[4] = alsoFd;
  for (let k = 0; k < 3; k++) {
    pollShorts[4 * k + 2] = POLLIN;
    pollShorts[4 * k + 3] = 0;
  }
  const ready = libc.poll(pollFds, 3, timeoutMs);
  if (ready < 0) {
    if (koffi.errno() === EINTR) return 0;
    throwErrno('poll');
  }
  if (ready === 0) return 0;
  if (wakeFd >= 0 && (pollShorts[7] ?? 0) !== 0) libc.read(wakeFd, eventCounter, 8);
  const revents = pollShorts[3] ?? 0;
  const alsoRevents = pollShorts[11] ?? 0;
  if ((revents & POLLNVAL) !== 0) throw new SyscallError('poll', EBADF, `fd ${fd} is not open`);
  if ((alsoRevents & POLLNVAL) !== 0) throw new SyscallError('poll', EBADF, `fd ${alsoFd} is not open`);
  return (revents !== 0 ? READABLE_FD : 0) | (alsoRevents !== 0 ? READABLE_ALSO_FD : 0);
}

/** pollReadable for a caller that only needs to know whether `fd` or `alsoFd` is ready. */
export function waitReadable(fd: number, timeoutMs: number, wakeFd = -1, alsoFd = -1): boolean {
  return pollReadable(fd, timeoutMs, wakeFd, alsoFd) !== 0;
}

/** A non-blocking eventfd(2): what a thread can poll(2) on to be woken by another thread. */
export function createEventFd(): number {
  const fd = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throwErrno('eventfd');
  return fd;
}

const one = new BigUint64Array([1n]);

/** Wakes whoever polls `fd` (an eventfd); cheap, never blocks. */
export function signalEventFd(fd: number): void {
  libc.write(fd, one, 8);
}

/** Whether this process may use the *FORCE socket options and create TUN devices. */
export function isRoot(): boolean {
  return libc.getuid() === 0;
}
