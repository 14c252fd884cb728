// Slot layout and the producer's pool, in one thread: header fields written through the hot
// accessors read back through the independent DataView reader (and the reverse), payload views
// that never overlap a header, and the pool's allocate/release/reclaim bookkeeping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NO_PEER,
  SLOT_HEADER_SIZE,
  SLOT_PAYLOAD_SIZE,
  SLOT_PLAINTEXT_OFFSET,
  SLOT_SIZE,
} from '../../src/ring/layout.ts';
import { MAX_SEGMENT_SIZE, MESSAGE_TRANSPORT_HEADER_SIZE, AEAD_TAG_SIZE, PADDING_MULTIPLE } from '../../src/wireguard/constants.ts';
import { Ring } from '../../src/ring/ring.ts';
import { Slab, SlotOwnershipError, SlotPool, readSlotHeader, writeSlotHeader, type SlotHeader } from '../../src/ring/slab.ts';

test('a slot holds the largest transport message: header, 65535-byte packet, padding, tag', () => {
  const paddedMax = Math.ceil(MAX_SEGMENT_SIZE / PADDING_MULTIPLE) * PADDING_MULTIPLE;
  assert.ok(MESSAGE_TRANSPORT_HEADER_SIZE + paddedMax + AEAD_TAG_SIZE <= SLOT_PAYLOAD_SIZE);
  assert.equal(SLOT_PLAINTEXT_OFFSET, MESSAGE_TRANSPORT_HEADER_SIZE);
  assert.equal(SLOT_SIZE % 64, 0, 'slots start on cache lines');
});

test('slab buffers are validated', () => {
  for (const bad of [0, -1, 1.5, 2 ** 16 + 1]) assert.throws(() => Slab.create(bad), RangeError);
  assert.throws(() => new Slab(new SharedArrayBuffer(SLOT_SIZE + 1)), RangeError);
  assert.equal(Slab.create(3).slotCount, 3);
});

test('payload views are cached per slot and sit right after that slot header', () => {
  const slab = Slab.create(4);
  for (let slot = 0; slot < 4; slot++) {
    const view = slab.payloadView(slot);
    assert.equal(view, slab.payloadView(slot), 'same object every call');
    assert.equal(view.byteOffset, slot * SLOT_SIZE + SLOT_HEADER_SIZE);
    assert.equal(view.length, SLOT_PAYLOAD_SIZE);
    assert.equal(slab.remoteAddressView(slot), slab.remoteAddressView(slot));
  }
  // Filling a whole payload touches no header field of its own or the next slot.
  slab.payloadView(1).fill(0xff);
  for (const slot of [0, 1, 2]) {
    const h = readSlotHeader(slab, slot);
    assert.equal(h.payloadLength, 0);
    assert.equal(h.flags, 0);
    assert.deepEqual([...h.localAddress], new Array(16).fill(0));
  }
});

const headerArbitrary: fc.Arbitrary<SlotHeader> = fc.record({
  payloadLength: fc.integer({ min: 0, max: SLOT_PAYLOAD_SIZE }),
  peerId: fc.integer({ min: -1, max: 2 ** 31 - 1 }),
  flags: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  remoteFamily: fc.constantFrom(0, 4, 6),
  remotePort: fc.integer({ min: 0, max: 65535 }),
  remoteScopeId: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
  remoteAddress: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  localAddress: fc.uint8Array({ minLength: 16, maxLength: 16 }),
  localIfindex: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  spare: fc.double({ noNaN: true }),
});

test('header round trip: hot setters → DataView reader, and DataView writer → hot getters', () => {
  const slab = Slab.create(3);
  fc.assert(
    fc.property(headerArbitrary, fc.integer({ min: 0, max: 2 }), (h, slot) => {
      slab.setPayloadLength(slot, h.payloadLength);
      slab.setPeerId(slot, h.peerId);
      slab.setFlags(slot, h.flags);
      slab.setRemote(slot, h.remoteFamily, h.remotePort, h.remoteScopeId);
      slab.remoteAddressView(slot).set(h.remoteAddress);
      slab.localAddressView(slot).set(h.localAddress);
      slab.setLocalIfindex(slot, h.localIfindex);
      slab.setSpare(slot, h.spare);
      assert.deepEqual(readSlotHeader(slab, slot), { ...h });

      const other = (slot + 1) % 3;
      writeSlotHeader(slab, other, h);
      assert.equal(slab.payloadLength(other), h.payloadLength);
      assert.equal(slab.peerId(other), h.peerId);
      assert.equal(slab.flags(other), h.flags);
      assert.equal(slab.remoteFamily(other), h.remoteFamily);
      assert.equal(slab.remotePort(other), h.remotePort);
      assert.equal(slab.remoteScopeId(other), h.remoteScopeId);
      assert.deepEqual(slab.remoteAddressView(other), h.remoteAddress);
      assert.deepEqual(slab.localAddressView(other), h.localAddress);
      assert.equal(slab.localIfindex(other), h.localIfindex);
      assert.equal(Object.is(slab.spare(other), h.spare), true);
    }),
    { interruptAfterTimeLimit: 2000, numRuns: 1000 },
  );
});

test('writeSlotHeader zero-fills short (IPv4) addresses and refuses long ones', () => {
  const slab = Slab.create(1);
  slab.remoteAddressView(0).fill(0xaa);
  const base: SlotHeader = readSlotHeader(slab, 0);
  writeSlotHeader(slab, 0, { ...base, remoteFamily: 4, remoteAddress: Uint8Array.of(192, 0, 2, 1) });
  assert.deepEqual([...slab.remoteAddressView(0)], [192, 0, 2, 1, ...new Array(12).fill(0)]);
  assert.throws(() => writeSlotHeader(slab, 0, { ...base, localAddress: new Uint8Array(17) }), RangeError);
  assert.throws(() => readSlotHeader(slab, 1), RangeError);
  assert.throws(() => readSlotHeader(slab, -1), RangeError);
});

test('pool: hands out every slot once, -1 when exhausted, reset headers, release and reclaim', () => {
  const slab = Slab.create(4);
  const back = Ring.create(4);
  const pool = new SlotPool(slab, [back]);
  slab.setPeerId(2, 55);
  slab.setPayloadLength(2, 99);
  const slots = [pool.allocate(), pool.allocate(), pool.allocate(), pool.allocate()];
  assert.deepEqual(slots, [0, 1, 2, 3]);
  assert.equal(slab.peerId(2), NO_PEER, 'allocate resets the header');
  assert.equal(slab.payloadLength(2), 0);
  assert.equal(pool.allocate(), -1);
  assert.equal(pool.available, 0);

  pool.release(2);
  assert.equal(pool.allocate(), 2, 'a released slot is reused first');

  back.push(3);
  back.push(0);
  assert.equal(pool.allocate(), 0, 'allocate reclaims by itself when the free list is empty');
  assert.equal(pool.available, 1);
  assert.equal(pool.allocate(), 3);
  assert.equal(pool.allocate(), -1);

  back.push(1);
  assert.equal(pool.reclaim(), 1);
  assert.equal(pool.reclaim(), 0);
  assert.equal(pool.available, 1);
});

test('pool: a slot given back twice, or not from this slab, is an ownership error', () => {
  const slab = Slab.create(2);
  const back = Ring.create(4);
  const pool = new SlotPool(slab, [back]);
  assert.throws(() => pool.release(0), SlotOwnershipError, 'never handed out');
  const slot = pool.allocate();
  pool.release(slot);
  assert.throws(() => pool.release(slot), (e: unknown) => e instanceof SlotOwnershipError && e.code === 'ZTGATE_ERR_SLOT_OWNERSHIP');
  back.push(7);
  assert.throws(() => pool.reclaim(), SlotOwnershipError);
  assert.throws(() => pool.release(0.5), SlotOwnershipError);
});

test('pool: reclaims from several return rings (one per consumer)', () => {
  const slab = Slab.create(6);
  const rings = [Ring.create(8), Ring.create(8), Ring.create(8)];
  const pool = new SlotPool(slab, rings);
  const slots = Array.from({ length: 6 }, () => pool.allocate());
  slots.forEach((slot, i) => rings[i % 3]!.push(slot));
  assert.equal(pool.reclaim(), 6);
  assert.equal(pool.available, 6);
  const again = new Set(Array.from({ length: 6 }, () => pool.allocate()));
  assert.equal(again.size, 6);
  assert.equal(pool.allocate(), -1);
});
