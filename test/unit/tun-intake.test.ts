// A worker's TUN intake against a datagram socket pair standing in for its TUN queue (a read keeps
// packet boundaries there as on a TUN queue): packets are listed with the peer their destination
// routes to, in their slots at the plaintext offset; packets for no peer, non-IP bytes, truncated
// headers and bad virtio headers are dropped, counted, and their slots given back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AF_UNIX, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, closeFd, libc } from '../../src/io/libc.ts';
import { TUN_VNET_HDR_SIZE } from '../../src/io/tun.ts';
import { SLOT_PLAINTEXT_OFFSET } from '../../src/ring/layout.ts';
import { Slab, SlotPool } from '../../src/ring/slab.ts';
import { AllowedIps } from '../../src/wireguard/allowedips.ts';
import { MAX_SEGMENTS_PER_READ, TunIntake } from '../../src/workers/tun-intake.ts';

const SLOTS = 8;

function ipv4(destination: readonly number[], length = 60): Uint8Array {
  const packet = new Uint8Array(length);
  packet[0] = 0x45;
  packet[2] = length >> 8;
  packet[3] = length & 0xff;
  packet[9] = 17;
  packet.set([192, 0, 2, 1], 12);
  packet.set(destination, 16);
  for (let k = 20; k < length; k++) packet[k] = k & 0xff;
  return packet;
}

function ipv6(lastByte: number, length = 80): Uint8Array {
  const packet = new Uint8Array(length);
  packet[0] = 0x60;
  packet[5] = length - 40;
  packet[6] = 59;
  packet.set([0x20, 0x01, 0x0d, 0xb8], 24);
  packet[39] = lastByte;
  return packet;
}

/** Runs `body` with an intake (offloads on or off) reading a fresh socket pair, then closes it. */
function withIntake(vnetHeader: boolean, body: (intake: TunIntake, write: (packet: Uint8Array) => void, pool: SlotPool) => void,
  slots = SLOTS): void {
  const pair = new Int32Array(2);
  assert.equal(libc.socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair), 0);
  const routes = new AllowedIps();
  routes.insert(Uint8Array.of(10, 0, 0, 0), 8, 3);
  routes.insert(Uint8Array.of(10, 9, 0, 0), 16, 5);
  routes.insert(Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7), 128, 4);
  const pool = new SlotPool(Slab.create(slots), []);
  const intake = new TunIntake(pair[0]!, pool, routes, vnetHeader);
  try {
    body(intake, (packet) => assert.equal(libc.write(pair[1]!, packet, packet.length), packet.length), pool);
  } finally {
    closeFd(pair[0]!);
    closeFd(pair[1]!);
  }
}

function listed(intake: TunIntake, pool: SlotPool, k: number): { peer: number; bytes: Uint8Array } {
  const slot = intake.slots[k]!;
  assert.equal(pool.slab.payloadLength(slot), intake.lengths[k]);
  assert.equal(pool.slab.peerId(slot), intake.peers[k]);
  const bytes = pool.slab.payloadView(slot).slice(SLOT_PLAINTEXT_OFFSET, SLOT_PLAINTEXT_OFFSET + intake.lengths[k]!);
  return { peer: intake.peers[k]!, bytes };
}

test('packets are listed in their slots with the peer their destination routes to, longest prefix first', () => {
  withIntake(false, (intake, write, pool) => {
    const cases: Array<[Uint8Array, number]> = [[ipv4([10, 1, 2, 3]), 3], [ipv4([10, 9, 8, 7], 1420), 5], [ipv6(7), 4]];
    for (const [packet, peer] of cases) {
      write(packet);
      assert.equal(intake.readOnce(), 1);
      assert.deepEqual(listed(intake, pool, 0), { peer, bytes: packet });
      pool.release(intake.slots[0]!);
    }
    assert.equal(intake.readOnce(), -1, 'an empty queue');
    assert.equal(pool.available, SLOTS, 'no slot kept');
    assert.deepEqual(intake.drops, { noRoute: 0, notIp: 0, noFreeSlot: 0, badOffload: 0, tooManySegments: 0 });
  });
});

test('packets for no peer, non-IP bytes and truncated headers are dropped, counted, and their slots given back', () => {
  withIntake(false, (intake, write, pool) => {
    write(ipv4([192, 168, 1, 1]));
    write(ipv6(8));
    write(Uint8Array.of(0x00, 1, 2, 3));
    write(ipv4([10, 0, 0, 1]).subarray(0, 19));
    write(ipv6(7).subarray(0, 39));
    for (let k = 0; k < 5; k++) assert.equal(intake.readOnce(), 0);
    assert.equal(intake.readOnce(), -1);
    assert.deepEqual(intake.drops, { noRoute: 2, notIp: 3, noFreeSlot: 0, badOffload: 0, tooManySegments: 0 });
    assert.equal(pool.available, SLOTS);
  });
});

test('with offloads on, a plain packet behind its virtio header is listed; a header that lies is dropped and counted', () => {
  withIntake(true, (intake, write, pool) => {
    const packet = ipv4([10, 2, 2, 2]);
    const framed = new Uint8Array(TUN_VNET_HDR_SIZE + packet.length);
    framed.set(packet, TUN_VNET_HDR_SIZE);
    write(framed);
    assert.equal(intake.readOnce(), 1);
    assert.deepEqual(listed(intake, pool, 0), { peer: 3, bytes: packet });
    pool.release(intake.slots[0]!);

    const unknownGso = framed.slice();
    unknownGso[1] = 0x7f; // gso_type: none of TCPv4, TCPv6, UDP_L4
    write(unknownGso);
    write(framed.subarray(0, TUN_VNET_HDR_SIZE - 1));
    assert.equal(intake.readOnce(), 0);
    assert.equal(intake.readOnce(), 0);
    assert.deepEqual(intake.drops, { noRoute: 0, notIp: 0, noFreeSlot: 0, badOffload: 2, tooManySegments: 0 });
    assert.equal(pool.available, SLOTS);
  });
});

test('a UDP super-packet is cut into its datagrams; past MAX_SEGMENTS_PER_READ of them the rest are dropped and counted', () => {
  withIntake(true, (intake, write, pool) => {
    const cases: Array<[number, number]> = [[10, 100], [8, MAX_SEGMENTS_PER_READ * 8 + 40]];
    for (const [segmentSize, payloadLength] of cases) {
      const packet = ipv4([10, 3, 3, 3], 28 + payloadLength);
      packet[24] = (8 + payloadLength) >> 8; // UDP length
      packet[25] = (8 + payloadLength) & 0xff;
      const framed = new Uint8Array(TUN_VNET_HDR_SIZE + packet.length);
      // flags NEEDS_CSUM, gso_type UDP_L4, header length 28, gso_size, csum_start 20, csum_offset 6
      framed.set([1, 5, 28, 0, segmentSize, 0, 20, 0, 6, 0]);
      framed.set(packet, TUN_VNET_HDR_SIZE);
      write(framed);
      const count = intake.readOnce();
      const total = Math.ceil(payloadLength / segmentSize);
      assert.equal(count, Math.min(total, MAX_SEGMENTS_PER_READ));
      for (let k = 0; k < count; k++) {
        const { peer, bytes } = listed(intake, pool, k);
        assert.equal(peer, 3);
        const size = Math.min(segmentSize, payloadLength - k * segmentSize);
        assert.equal(bytes.length, 28 + size);
        assert.deepEqual(bytes.subarray(28), packet.subarray(28 + k * segmentSize, 28 + k * segmentSize + size), `datagram ${k}'s payload`);
        pool.release(intake.slots[k]!);
      }
      assert.equal(pool.available, MAX_SEGMENTS_PER_READ + 2, 'every slot back, the read slot included');
    }
    assert.equal(intake.drops.tooManySegments, Math.ceil((MAX_SEGMENTS_PER_READ * 8 + 40) / 8) - MAX_SEGMENTS_PER_READ);
  }, MAX_SEGMENTS_PER_READ + 2);
});
