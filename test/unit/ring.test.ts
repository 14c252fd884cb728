// Single-thread semantics of the SPSC ring: FIFO order, full, empty, batches, counter wraparound,
// and a time-limited random comparison against a plain array queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Ring, createRingBuffer, ringCapacityFor } from '../../src/ring/ring.ts';
import { RING_ENTRIES, RING_READ_COUNT_WORD, RING_WRITE_COUNT_WORD } from '../../src/ring/layout.ts';

test('capacity must be a power of two; buffers of other sizes are refused', () => {
  for (const bad of [0, 3, 6, 1.5, -4, 2 ** 25]) assert.throws(() => createRingBuffer(bad), RangeError);
  assert.throws(() => new Ring(new SharedArrayBuffer(RING_ENTRIES + 12)), RangeError);
  assert.equal(Ring.create(1).capacity, 1);
  assert.equal(Ring.create(1024).capacity, 1024);
  assert.deepEqual([1, 2, 3, 5, 512, 513].map(ringCapacityFor), [1, 2, 4, 8, 512, 1024]);
  assert.throws(() => ringCapacityFor(0), RangeError);
});

test('empty ring pops -1; full ring refuses a push; FIFO order', () => {
  const ring = Ring.create(8);
  assert.equal(ring.pop(), -1);
  assert.equal(ring.size, 0);
  assert.equal(ring.isEmpty(), true);
  for (let i = 0; i < 8; i++) assert.equal(ring.push(100 + i), true);
  assert.equal(ring.size, 8);
  assert.equal(ring.push(999), false);
  assert.equal(ring.size, 8);
  for (let i = 0; i < 8; i++) assert.equal(ring.pop(), 100 + i);
  assert.equal(ring.pop(), -1);
  assert.equal(ring.isEmpty(), true);
});

test('entries are full uint32 values, distinct from the -1 of an empty ring', () => {
  const ring = Ring.create(4);
  for (const v of [0, 1, 0x7fffffff, 0x80000000, 0xffffffff]) {
    assert.equal(ring.push(v), true);
    assert.equal(ring.pop(), v);
  }
});

test('wraps around the entry array many times', () => {
  const ring = Ring.create(4);
  let next = 0;
  let expected = 0;
  for (let round = 0; round < 1000; round++) {
    const pushes = (round * 7) % 5;
    for (let i = 0; i < pushes; i++) if (ring.push(next)) next++;
    const pops = (round * 3) % 4;
    for (let i = 0; i < pops; i++) {
      const v = ring.pop();
      if (v === -1) break;
      assert.equal(v, expected++);
    }
  }
  assert.ok(next > 1000);
  for (let v = ring.pop(); v !== -1; v = ring.pop()) assert.equal(v, expected++);
  assert.equal(expected, next);
});

test('counts that wrap past 2^31 and 2^32 keep size and order right', () => {
  for (const start of [0x7ffffffd, -3]) {
    const buffer = createRingBuffer(4);
    const counts = new Int32Array(buffer, 0, RING_ENTRIES / 4);
    counts[RING_WRITE_COUNT_WORD] = start;
    counts[RING_READ_COUNT_WORD] = start;
    const ring = new Ring(buffer);
    for (let i = 0; i < 20; i++) {
      assert.equal(ring.push(i), true);
      assert.equal(ring.push(i + 1000), true);
      assert.equal(ring.size, 2);
      assert.equal(ring.pop(), i);
      assert.equal(ring.pop(), i + 1000);
      assert.equal(ring.pop(), -1);
    }
    for (let i = 0; i < 4; i++) ring.push(i);
    assert.equal(ring.push(4), false, `full across the wrap from ${start}`);
    assert.equal(ring.size, 4);
  }
});

test('pushBatch pushes the prefix that fits; popBatch takes up to max', () => {
  const ring = Ring.create(8);
  const values = Uint32Array.from({ length: 6 }, (_, i) => i + 1);
  assert.equal(ring.pushBatch(values), 6);
  assert.equal(ring.pushBatch(values), 2, 'only two more fit');
  assert.equal(ring.pushBatch(values), 0);
  assert.equal(ring.pushBatch(values, 0), 0);
  assert.throws(() => ring.pushBatch(values, 7), RangeError);
  const out = new Uint32Array(5);
  assert.equal(ring.popBatch(out, 3), 3);
  assert.deepEqual([...out.subarray(0, 3)], [1, 2, 3]);
  assert.equal(ring.popBatch(out), 5);
  assert.deepEqual([...out], [4, 5, 6, 1, 2]);
  assert.equal(ring.popBatch(out), 0);
  assert.equal(ring.size, 0);
  assert.equal(ring.popBatch(out, 10), 0, 'max beyond out.length is clamped');
});

test('matches an array queue under random operations (fast-check)', () => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant('push' as const), value: fc.nat({ max: 0xffffffff }) }),
    fc.record({ kind: fc.constant('pushBatch' as const), values: fc.array(fc.nat({ max: 0xffffffff }), { maxLength: 20 }) }),
    fc.record({ kind: fc.constant('pop' as const) }),
    fc.record({ kind: fc.constant('popBatch' as const), max: fc.nat({ max: 20 }) }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 5 }), fc.array(op, { maxLength: 200 }), (log2, ops) => {
      const capacity = 2 ** log2;
      const ring = Ring.create(capacity);
      const model: number[] = [];
      const out = new Uint32Array(20);
      for (const o of ops) {
        if (o.kind === 'push') {
          assert.equal(ring.push(o.value), model.length < capacity);
          if (model.length < capacity) model.push(o.value);
        } else if (o.kind === 'pushBatch') {
          const fits = Math.min(o.values.length, capacity - model.length);
          assert.equal(ring.pushBatch(Uint32Array.from(o.values)), fits);
          model.push(...o.values.slice(0, fits));
        } else if (o.kind === 'pop') {
          assert.equal(ring.pop(), model.length > 0 ? model.shift() : -1);
        } else {
          const n = ring.popBatch(out, o.max);
          assert.equal(n, Math.min(o.max, model.length));
          assert.deepEqual([...out.subarray(0, n)], model.splice(0, n));
        }
        assert.equal(ring.size, model.length);
      }
    }),
    { interruptAfterTimeLimit: 3000, numRuns: 2000 },
  );
});

test('a second Ring over the same buffer sees the same entries (attach in another thread)', () => {
  const producer = Ring.create(16);
  producer.push(7);
  producer.push(8);
  const consumer = new Ring(producer.buffer);
  assert.equal(consumer.size, 2);
  assert.equal(consumer.pop(), 7);
  producer.push(9);
  assert.equal(consumer.pop(), 8);
  assert.equal(consumer.pop(), 9);
  assert.equal(producer.size, 0);
});
