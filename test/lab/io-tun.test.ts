// TUN queues through koffi: create in a fresh namespace, MTU, ICMP echo through the kernel,
// several queues, and the descriptor surviving a move of the interface to another namespace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EBADF, EBADFD, ENODEV, waitReadable } from '../../src/io/libc.ts';
import { Tun, attachedInterfaceName, interfaceMtu, tunRead, tunWrite } from '../../src/io/tun.ts';
import { SyscallError } from '../../src/errors.ts';
import { createNetns, deleteNetns, insideNetns, ip, withNetns, writeIcmpEcho } from './io-helpers.ts';

const PEER = [10, 77, 0, 2];
const LOCAL = [10, 77, 0, 1];

/** Writes an echo request from PEER to LOCAL and waits for the kernel's echo reply on `fd`. */
function pingThroughTun(fd: number, slot: Uint8Array, id: number): Uint8Array {
  const payload = new TextEncoder().encode(`ztgate tun test ${id}`);
  const length = writeIcmpEcho(slot, PEER, LOCAL, id, 1, payload);
  assert.equal(tunWrite(fd, slot, 0, length), length);
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    if (!waitReadable(fd, 200)) continue;
    const n = tunRead(fd, slot);
    // Skip what else the kernel sends on a fresh link (IPv6 router solicitations, MLD).
    if (n < 28 || slot[0] !== 0x45 || slot[9] !== 1 || slot[20] !== 0) continue;
    if (((slot[24] ?? 0) << 8 | (slot[25] ?? 0)) !== id) continue;
    return slot.slice(0, n);
  }
  assert.fail('no ICMP echo reply read from the TUN queue');
}

test('TUN in a fresh namespace: MTU set/get, ifindex, echo request in, kernel reply out', async () => {
  await withNetns(async (ns) => {
    const tun = Tun.open('zt%d', { mtu: 1380 });
    try {
      const name = tun.name();
      assert.match(name, /^zt\d+$/);
      assert.equal(tun.mtu(), 1380);
      assert.equal(interfaceMtu(name), 1380);
      tun.setMtu(1420);
      assert.equal(tun.mtu(), 1420);
      assert.match(ip('-n', ns, '-o', 'link', 'show', name), /mtu 1420/);
      assert.equal(tun.ifindex, Number(ip('-n', ns, '-o', 'link', 'show', name).split(':')[0]));
      ip('-n', ns, 'addr', 'add', `${LOCAL.join('.')}/24`, 'dev', name);

      const sab = new SharedArrayBuffer(4 * 2048);
      const slot = new Uint8Array(sab, 2048, 2048);
      const [fd] = tun.fds as [number];
      assert.equal(tunRead(fd, slot) >= 0, true);
      const reply = pingThroughTun(fd, slot, 0x1234);
      assert.deepEqual([...reply.subarray(12, 16)], LOCAL);
      assert.deepEqual([...reply.subarray(16, 20)], PEER);
      assert.equal(new TextDecoder().decode(reply.subarray(28)), 'ztgate tun test 4660');
    } finally {
      tun.close();
    }
  });
});

test('TUN with several queues: every queue descriptor carries packets', async () => {
  await withNetns(async (ns) => {
    const tun = Tun.open('ztmq0', { queues: 3 });
    try {
      assert.equal(tun.fds.length, 3);
      assert.equal(new Set(tun.fds).size, 3);
      ip('-n', ns, 'addr', 'add', `${LOCAL.join('.')}/24`, 'dev', 'ztmq0');
      const slot = new Uint8Array(new SharedArrayBuffer(2048));
      // Writes go in on any queue; the kernel picks the queue for the reply by flow hash, so
      // read from all queues.
      for (const [q, fd] of tun.fds.entries()) {
        const length = writeIcmpEcho(slot, PEER, LOCAL, 0x4000 + q, 1, new Uint8Array(8));
        assert.equal(tunWrite(fd, slot, 0, length), length);
      }
      const seen = new Set<number>();
      const deadline = Date.now() + 3000;
      while (seen.size < 3 && Date.now() < deadline) {
        for (const fd of tun.fds) {
          const n = tunRead(fd, slot);
          if (n >= 28 && slot[0] === 0x45 && slot[9] === 1 && slot[20] === 0) seen.add((slot[24] ?? 0) << 8 | (slot[25] ?? 0));
        }
        if (seen.size < 3) waitReadable(tun.fds[0] as number, 20);
      }
      assert.deepEqual([...seen].sort(), [0x4000, 0x4001, 0x4002]);
    } finally {
      tun.close();
    }
  });
});

test('tunWrite rejects a range outside its view; read on a closed descriptor throws', async () => {
  await withNetns(() => {
    const tun = Tun.open('ztbad0');
    const fd = tun.fds[0] as number;
    assert.throws(() => tunWrite(fd, new Uint8Array(10), 5, 6), RangeError);
    tun.close();
    assert.throws(() => tunRead(fd, new Uint8Array(100)), (e: unknown) => e instanceof SyscallError && e.errno === EBADF);
  });
});

test('a TUN queue keeps working after its interface moves to another namespace', async () => {
  const other = createNetns();
  try {
    await withNetns(async (ns) => {
      const tun = Tun.open('ztmv0');
      try {
        const fd = tun.fds[0] as number;
        ip('-n', ns, 'link', 'set', 'ztmv0', 'netns', other);
        assert.doesNotMatch(ip('-n', ns, '-o', 'link'), /ztmv0/);
        // Still attached, and by name only reachable from the new namespace.
        assert.equal(attachedInterfaceName(fd), 'ztmv0');
        assert.equal(tun.isAttached(), true);
        assert.throws(() => tun.mtu(), (e: unknown) => e instanceof SyscallError && e.errno === ENODEV);
        ip('-n', other, 'addr', 'add', `${LOCAL.join('.')}/24`, 'dev', 'ztmv0');
        ip('-n', other, 'link', 'set', 'ztmv0', 'up');
        const reply = pingThroughTun(fd, new Uint8Array(new SharedArrayBuffer(2048)), 0x2222);
        assert.deepEqual([...reply.subarray(12, 16)], LOCAL);
        assert.equal(await insideNetns(other, () => tun.mtu()), 1500);

        // Deleting it in its new namespace detaches the descriptor: reads fail with EBADFD.
        ip('-n', other, 'link', 'del', 'ztmv0');
        assert.equal(tun.isAttached(), false);
        assert.throws(() => tunRead(fd, new Uint8Array(2048)), (e: unknown) => e instanceof SyscallError && e.errno === EBADFD);
      } finally {
        tun.close();
      }
    });
  } finally {
    deleteNetns(other);
  }
});
