import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IndexTable, shardOfIndex } from '../../src/wireguard/indexes.ts';
import { ZtgateError } from '../../src/errors.ts';

/** Deterministic 32-bit source (xorshift32) so failures reproduce. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
}

test('allocated indexes are unique, unsigned 32-bit, and route to their shard', () => {
  for (const shardCount of [1, 2, 3, 7, 8, 1000]) {
    const table = new IndexTable<{ shard: number; n: number }>();
    const random = seededRandom(shardCount * 7919);
    const seen = new Set<number>();
    for (let n = 0; n < 5000; n++) {
      const shard = n % shardCount;
      const index = table.allocate(shard, shardCount, { shard, n }, random);
      assert.ok(Number.isInteger(index) && index >= 0 && index <= 0xffff_ffff, `index ${index}`);
      assert.equal(shardOfIndex(index, shardCount), shard);
      assert.equal(index % shardCount, shard);
      assert.ok(!seen.has(index), `duplicate ${index}`);
      seen.add(index);
    }
    assert.equal(table.size, 5000);
    for (const index of seen) {
      const value = table.get(index);
      assert.ok(value !== undefined);
      assert.equal(shardOfIndex(index, shardCount), value.shard);
    }
  }
});

test('indexes spread over the whole 32-bit range (they do not reveal a count)', () => {
  const table = new IndexTable<number>();
  const random = seededRandom(42);
  let high = 0;
  let max = 0;
  for (let n = 0; n < 2000; n++) {
    const index = table.allocate(n % 4, 4, n, random);
    if (index >= 2 ** 31) high++;
    max = Math.max(max, index);
  }
  assert.ok(high > 800 && high < 1200, `${high} of 2000 in the upper half`);
  assert.ok(max > 2 ** 32 - 2 ** 26, `largest ${max}`);
});

test('a colliding draw is skipped: the next draw is used', () => {
  const draws = [40, 40, 40, 44];
  const random = (): number => {
    const next = draws.shift();
    assert.ok(next !== undefined, 'ran out of draws');
    return next;
  };
  const table = new IndexTable<string>();
  assert.equal(table.allocate(0, 4, 'a', random), 40);
  assert.equal(table.allocate(0, 4, 'b', random), 44, 'two draws of 40 collided and were skipped');
  assert.equal(table.get(40), 'a');
  assert.equal(table.get(44), 'b');
});

test('draws map into the shard without ever exceeding 2**32 - 1', () => {
  // 2**32 % 3 === 1: the draw 2**32 - 1 lies in an incomplete run and must be redrawn.
  const draws = [2 ** 32 - 1, 2 ** 32 - 2];
  const random = (): number => draws.shift() ?? 0;
  const table = new IndexTable<number>();
  const index = table.allocate(2, 3, 0, random);
  assert.equal(index, 2 ** 32 - 2);
  assert.equal(index % 3, 2);
  assert.equal(draws.length, 0, 'the out-of-range draw was rejected');
});

test('delete frees an index for reuse, and get misses after delete', () => {
  const table = new IndexTable<string>();
  const random = (): number => 1234;
  const index = table.allocate(0, 1, 'x', random);
  assert.equal(index, 1234);
  table.delete(index);
  assert.equal(table.get(index), undefined);
  assert.equal(table.size, 0);
  assert.equal(table.allocate(0, 1, 'y', random), 1234);
  assert.equal(table.get(1234), 'y');
  table.delete(99); // deleting an unknown index is harmless
  assert.equal(table.size, 1);
});

test('a stuck random source ends in a typed error, not a hang', () => {
  const table = new IndexTable<number>();
  table.allocate(0, 1, 1, () => 7);
  assert.throws(
    () => table.allocate(0, 1, 2, () => 7),
    (error: unknown) => error instanceof ZtgateError && error.code === 'ZTGATE_ERR_INDEX_EXHAUSTED',
  );
});

test('bad arguments are RangeErrors', () => {
  const table = new IndexTable<number>();
  const random = seededRandom(1);
  assert.throws(() => table.allocate(0, 0, 1, random), RangeError);
  assert.throws(() => table.allocate(3, 3, 1, random), RangeError);
  assert.throws(() => table.allocate(-1, 3, 1, random), RangeError);
  assert.throws(() => table.allocate(0, 1.5, 1, random), RangeError);
  assert.throws(() => table.allocate(0, 2, 1, () => 0.25), RangeError, 'a Math.random-style float');
  assert.throws(() => table.allocate(0, 2, 1, () => 2 ** 32), RangeError);
  assert.equal(table.size, 0);
});

test('shardOfIndex treats a signed 32-bit index as unsigned', () => {
  const index = 0xfedc_ba98;
  assert.equal(shardOfIndex(index | 0, 5), index % 5);
  assert.equal(shardOfIndex(index, 5), index % 5);
  assert.equal(shardOfIndex(0, 5), 0);
});
