// The steered socket group (src/io/udp.ts, SteeredUdpGroup): on one port, a WireGuard transport
// message reaches the socket of the worker that owns its receiver index (index mod workers, as
// shardOfIndex), over IPv4 and IPv6; everything else (handshake types, short or malformed
// transport headers, STUN, ChannelData) reaches the reader's socket. After a rebind the whole group
// answers on the new port with the same steering, on the same descriptors; a busy port, or one held
// by another process's SO_REUSEPORT socket (which the group would otherwise join), is refused and
// leaves the group where it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AF_INET6, EADDRINUSE, SOCKADDR_IN6_SIZE, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOL_SOCKET, SO_REUSEPORT, closeFd, libc, setIntOption, waitReadable,
} from '../../src/io/libc.ts';
import { SyscallError } from '../../src/errors.ts';
import { DatagramMeta, SteeredUdpGroup, UdpSocket, boundPort, parseAddress } from '../../src/io/udp.ts';
import { shardOfIndex } from '../../src/wireguard/indexes.ts';
import { withNetns } from './io-helpers.ts';

const WORKERS = 3;

function transport(index: number, length = 48): Uint8Array {
  const bytes = new Uint8Array(length);
  bytes[0] = 4;
  new DataView(bytes.buffer).setUint32(4, index, true);
  return bytes;
}

/** Which socket of the group (0 reader, k + 1 worker k) got `bytes`, or -1 after 1 s. */
function arrivalOf(fds: readonly number[], sockets: readonly UdpSocket[], bytes: Uint8Array): number {
  const views = [new Uint8Array(2048)];
  const meta = new DatagramMeta(1);
  const deadline = Date.now() + 1000;
  while (Date.now() < deadline) {
    for (let k = 0; k < fds.length; k++) {
      if (!waitReadable(fds[k]!, 0)) continue;
      if (sockets[k]!.recvBatch(views, meta, 1) !== 1) continue;
      assert.deepEqual(views[0]!.slice(0, meta.length(0)), bytes, 'the datagram arrives whole');
      return k;
    }
  }
  return -1;
}

function send(from: UdpSocket, to: string, port: number, bytes: Uint8Array): void {
  const address = parseAddress(to);
  const meta = new DatagramMeta(1);
  meta.setLength(0, bytes.length);
  meta.setRemote(0, address.family, address.bytes, port);
  meta.clearLocal(0);
  const view = new Uint8Array(2048);
  view.set(bytes);
  assert.equal(from.sendOne(view, meta, 0), 1);
  assert.equal(meta.status(0), 0);
}

function checkSteering(group: SteeredUdpGroup, sender: UdpSocket): void {
  const fds = [group.reader.fd, ...group.workerFds];
  const sockets = fds.map((fd) => UdpSocket.attach(fd));
  const junk = (first: number, length: number): Uint8Array => Uint8Array.from({ length }, (_, k) => (k === 0 ? first : k));
  const stun = new Uint8Array(20);
  new DataView(stun.buffer).setUint32(4, 0x2112a442, false);
  for (const to of ['127.0.0.1', '::1']) {
    for (const index of [0, 1, 2, 5, 0x7fff_ffff, 0xffff_fffe, 0xffff_ffff]) {
      const bytes = transport(index);
      send(sender, to, group.port(), bytes);
      assert.equal(arrivalOf(fds, sockets, bytes), 1 + shardOfIndex(index, WORKERS), `index ${index} to ${to}`);
    }
    const others: Array<[string, Uint8Array]> = [
      ['initiation', junk(1, 148)], ['response', junk(2, 92)], ['cookie reply', junk(3, 64)],
      ['transport of 31 bytes', transport(1, 31)], ['transport with a reserved byte set', (() => { const t = transport(1); t[2] = 1; return t; })()],
      ['STUN', stun], ['ChannelData', junk(0x40, 52)], ['one byte', new Uint8Array([4])], ['empty', new Uint8Array(0)],
    ];
    for (const [what, bytes] of others) {
      send(sender, to, group.port(), bytes);
      assert.equal(arrivalOf(fds, sockets, bytes), 0, `${what} to ${to} goes to the reader`);
    }
  }
}

/** A dual-stack UDP socket with SO_REUSEPORT bound to a free port, as another daemon might hold it. */
function reusePortSocket(): { fd: number; port: number } {
  const fd = libc.socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  assert.ok(fd >= 0, 'socket');
  setIntOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, 'SO_REUSEPORT');
  const address = new Uint8Array(SOCKADDR_IN6_SIZE);
  new DataView(address.buffer).setUint16(0, AF_INET6, true);
  assert.equal(libc.bind(fd, address, SOCKADDR_IN6_SIZE), 0, 'bind');
  return { fd, port: boundPort(fd) };
}

const addressInUse = (e: unknown): boolean => e instanceof SyscallError && e.errno === EADDRINUSE;

test('a steered group sends transport data to its worker and the rest to the reader, before and after a rebind', async () => {
  await withNetns(() => {
    const group = SteeredUdpGroup.open(0, WORKERS, { gro: false });
    const sender = UdpSocket.open(0);
    const blocker = UdpSocket.open(0, { gro: false });
    const foreign = reusePortSocket();
    try {
      checkSteering(group, sender);
      const fds = [group.reader.fd, ...group.workerFds];
      const before = group.port();
      const after = group.rebind(0);
      assert.notEqual(after, before);
      assert.deepEqual([group.reader.fd, ...group.workerFds], fds, 'the same descriptors');
      assert.equal(group.rebind(after), after);
      checkSteering(group, sender);
      send(sender, '127.0.0.1', before, transport(0));
      assert.equal(fds.some((fd) => waitReadable(fd, 100)), false, 'nothing sent to the old port arrives');

      assert.throws(() => group.rebind(blocker.port()), addressInUse, 'a port held by a plain socket');
      assert.equal(group.port(), after);
      assert.throws(() => SteeredUdpGroup.open(after, 1), addressInUse, 'a second group on the same port');

      assert.throws(() => group.rebind(foreign.port), addressInUse, 'a port held by another SO_REUSEPORT socket');
      assert.equal(group.port(), after);
      checkSteering(group, sender);
    } finally {
      closeFd(foreign.fd);
      sender.close();
      blocker.close();
      group.close();
    }
  });
});
