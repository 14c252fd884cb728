// Watches our TUN interface through rtnetlink (NETLINK_ROUTE, group RTMGRP_LINK; rtnetlink(7))
// and reports MTU changes and deletion. The socket is non-blocking: wait for it with
// `waitReadable(watcher.fd, ms)` or any poll loop, then call `read()`.
//
// Moving an interface to another network namespace sends RTM_DELLINK in the old namespace too.
// A real deletion detaches the TUN queue descriptors (TUNGETIFF then fails with EBADFD) before
// the kernel sends the message, while a move leaves them attached: that check tells the two
// apart. After a move this namespace's messages no longer concern our interface (and its index
// may be reused here), so the watcher stops matching; deletion is then seen by the queue reads
// failing with EBADFD, as wireguard-go sees it.
import {
  AF_NETLINK, EAGAIN, EINTR, ENOBUFS, MSG_DONTWAIT, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_RAW, closeFd,
  errno, libc, throwErrno,
} from './libc.ts';
import { attachedInterfaceName } from './tun.ts';

const NETLINK_ROUTE = 0;
const RTMGRP_LINK = 1;
const NLMSG_HEADER_SIZE = 16; // { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
const IFINFOMSG_SIZE = 16; // { u8 family; u8 pad; u16 type; i32 index; u32 flags; u32 change; }
const RTATTR_HEADER_SIZE = 4; // { u16 len; u16 type; }
const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const IFLA_MTU = 4;
const RECEIVE_BUFFER_BYTES = 1 << 16;

export type LinkEvent =
  | { readonly kind: 'mtu'; readonly mtu: number }
  | { readonly kind: 'deleted' }
  /** Moved to another namespace: still usable through its queue descriptors, no longer watched. */
  | { readonly kind: 'moved' }
  /** The kernel dropped notifications (socket buffer full): re-read the MTU. */
  | { readonly kind: 'overrun' };

const align4 = (n: number): number => (n + 3) & ~3;

export class LinkWatcher {
  readonly fd: number;
  private readonly ifindex: number;
  private readonly tunFd: number;
  private readonly buffer = new Uint8Array(RECEIVE_BUFFER_BYTES);
  private readonly view = new DataView(this.buffer.buffer);
  private lastMtu: number;
  private watching = true;
  private closed = false;

  private constructor(fd: number, ifindex: number, tunFd: number, mtu: number) {
    this.fd = fd;
    this.ifindex = ifindex;
    this.tunFd = tunFd;
    this.lastMtu = mtu;
  }

  /**
   * Subscribes to link notifications of the calling thread's namespace for interface `ifindex`,
   * whose TUN queue descriptor `tunFd` decides deletion versus move. `mtu` is the current MTU;
   * only changes from it are reported.
   */
  static open(ifindex: number, tunFd: number, mtu: number): LinkWatcher {
    const fd = libc.socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) throwErrno('socket', 'AF_NETLINK');
    // struct sockaddr_nl { u16 family; u16 pad; u32 pid (0: kernel assigns); u32 groups; }
    const address = new DataView(new ArrayBuffer(12));
    address.setUint16(0, AF_NETLINK, true);
    address.setUint32(8, RTMGRP_LINK, true);
    if (libc.bind(fd, address.buffer, 12) < 0) {
      libc.close(fd);
      throwErrno('bind', 'netlink RTMGRP_LINK');
    }
    return new LinkWatcher(fd, ifindex, tunFd, mtu);
  }

  /** Drains waiting notifications; returns what concerns our interface (often nothing). */
  read(): LinkEvent[] {
    const events: LinkEvent[] = [];
    for (;;) {
      const n = libc.recv(this.fd, this.buffer, this.buffer.byteLength, MSG_DONTWAIT);
      if (n < 0) {
        const code = errno();
        if (code === EINTR) continue;
        if (code === EAGAIN) return events;
        if (code === ENOBUFS) {
          if (this.watching) this.noteDelLink(events, true);
          continue;
        }
        throwErrno('recv', 'netlink');
      }
      if (n === 0) return events;
      this.parse(n, events);
    }
  }

  private parse(length: number, events: LinkEvent[]): void {
    const v = this.view;
    for (let at = 0; at + NLMSG_HEADER_SIZE <= length;) {
      const messageLength = v.getUint32(at, true);
      if (messageLength < NLMSG_HEADER_SIZE || at + messageLength > length) return;
      const type = v.getUint16(at + 4, true);
      const body = at + NLMSG_HEADER_SIZE;
      if (this.watching && (type === RTM_NEWLINK || type === RTM_DELLINK)
        && messageLength >= NLMSG_HEADER_SIZE + IFINFOMSG_SIZE && v.getInt32(body + 4, true) === this.ifindex) {
        if (type === RTM_DELLINK) this.noteDelLink(events, false);
        else this.noteNewLink(body + IFINFOMSG_SIZE, at + messageLength, events);
      }
      at += align4(messageLength);
    }
  }

  private noteNewLink(attributes: number, end: number, events: LinkEvent[]): void {
    const v = this.view;
    for (let at = attributes; at + RTATTR_HEADER_SIZE <= end;) {
      const attributeLength = v.getUint16(at, true);
      if (attributeLength < RTATTR_HEADER_SIZE || at + attributeLength > end) return;
      if (v.getUint16(at + 2, true) === IFLA_MTU && attributeLength >= RTATTR_HEADER_SIZE + 4) {
        const mtu = v.getUint32(at + RTATTR_HEADER_SIZE, true);
        if (mtu !== this.lastMtu) {
          this.lastMtu = mtu;
          events.push({ kind: 'mtu', mtu });
        }
        return;
      }
      at += align4(attributeLength);
    }
  }

  private noteDelLink(events: LinkEvent[], overrun: boolean): void {
    if (attachedInterfaceName(this.tunFd) === null) {
      this.watching = false;
      events.push({ kind: 'deleted' });
    } else if (overrun) {
      events.push({ kind: 'overrun' });
    } else {
      this.watching = false;
      events.push({ kind: 'moved' });
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
  }
}
