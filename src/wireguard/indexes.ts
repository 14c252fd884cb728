// Receiver indexes (whitepaper §5.4.2: the "sender index" a peer picks for itself, which the other
// side echoes as "receiver index"). They are random 32-bit values so that they reveal nothing about
// how many peers or sessions exist (as wireguard-go's indextable and Firezone's randomised
// generator do), unique among the live ones, and chosen so that `index % shardCount` is the worker
// shard owning the session: the UDP reader routes a transport message to its worker from the
// index alone, with no shared lookup table.

import { ZtgateError } from '../errors.ts';

const INDEX_SPACE = 2 ** 32;
/** Draws before giving up; reaching it means a broken random source, not a full table. */
const MAX_DRAWS = 1000;

/** The worker shard that owns `index` (an unsigned 32-bit receiver index). */
export function shardOfIndex(index: number, shardCount: number): number {
  // `>>> 0` keeps the routing right even if a caller built the index with signed bit operations.
  return (index >>> 0) % shardCount;
}

export class IndexTable<T> {
  readonly #values = new Map<number, T>();

  get size(): number {
    return this.#values.size;
  }

  /**
   * Picks a fresh index owned by `shard` and maps it to `value`. `random` must return uniformly
   * random integers in 0..2**32-1 (cryptographically random in production).
   */
  allocate(shard: number, shardCount: number, value: T, random: () => number): number {
    if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > INDEX_SPACE) {
      throw new RangeError(`indexes: shard count must be an integer in 1..2**32, got ${shardCount}`);
    }
    if (!Number.isInteger(shard) || shard < 0 || shard >= shardCount) {
      throw new RangeError(`indexes: shard must be an integer in 0..${shardCount - 1}, got ${shard}`);
    }
    // Draws at or above this fall in an incomplete run of shardCount values: rejecting them keeps
    // every candidate index below 2**32 and all candidates equally likely.
    const usableDraws = INDEX_SPACE - (INDEX_SPACE % shardCount);
    for (let draw = 0; draw < MAX_DRAWS; draw++) {
      const r = random();
      if (!Number.isInteger(r) || r < 0 || r >= INDEX_SPACE) {
        throw new RangeError(`indexes: random source must return integers in 0..2**32-1, got ${r}`);
      }
      if (r >= usableDraws) continue;
      const index = r - (r % shardCount) + shard;
      if (this.#values.has(index)) continue;
      this.#values.set(index, value);
      return index;
    }
    throw new ZtgateError('ZTGATE_ERR_INDEX_EXHAUSTED', `indexes: no free index for shard ${shard} after ${MAX_DRAWS} random draws`);
  }

  get(index: number): T | undefined {
    return this.#values.get(index);
  }

  delete(index: number): void {
    this.#values.delete(index);
  }
}
