// Sliding-window replay filter for transport-message counters (whitepaper §5.4.6), using the
// bitmap ring of RFC 6479: the window is a ring of 32-bit blocks, and sliding forward only zeroes
// the blocks it passes instead of shifting the whole bitmap. Behaviour matches wireguard-go's
// replay.Filter: a counter is acceptable when it is below the limit, and either newer than every
// counter seen so far or no more than REPLAY_WINDOW_SIZE behind the newest and not seen before.

import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE } from './constants.ts';

/**
 * REJECT_AFTER_MESSAGES as a number (rounded to 2**64 - 2**13, which is the same bound for every
 * counter this filter can hold: counters are safe integers, far below it).
 */
export const REJECT_AFTER_MESSAGES_NUMBER = Number(REJECT_AFTER_MESSAGES);

const BLOCK_BITS = 32;
/** 256 blocks = 8192 bits: enough that the oldest block inside the window is never recycled. */
const RING_BLOCKS = 256;
const RING_MASK = RING_BLOCKS - 1;

export class ReplayWindow {
  readonly #limit: number;
  readonly #ring = new Uint32Array(RING_BLOCKS);
  /** The highest counter accepted so far (0 before any). */
  #newest = 0;

  /** `limit`: counters at or above it are never accepted (tests pass small limits). */
  constructor(limit: number = REJECT_AFTER_MESSAGES_NUMBER) {
    if (!(limit >= 0)) throw new RangeError(`replay: limit must be a non-negative number, got ${limit}`);
    this.#limit = limit;
  }

  /** Forgets every counter seen (a new keypair starts from scratch). */
  reset(): void {
    this.#newest = 0;
    this.#ring.fill(0);
  }

  /** Whether `counter` would be accepted now; changes nothing. Call before decrypting. */
  check(counter: number): boolean {
    if (!this.#inRange(counter)) return false;
    if (counter > this.#newest) return true;
    if (this.#newest - counter > REPLAY_WINDOW_SIZE) return false;
    return (this.#ring[Math.floor(counter / BLOCK_BITS) & RING_MASK] & (1 << (counter & (BLOCK_BITS - 1)))) === 0;
  }

  /**
   * Records `counter` once its packet has authenticated; false (and no change) when it is a replay,
   * too old, or out of range, so a packet that raced a duplicate through decryption is still dropped.
   */
  accept(counter: number): boolean {
    if (!this.#inRange(counter)) return false;
    const block = Math.floor(counter / BLOCK_BITS);
    if (counter > this.#newest) {
      // Slide forward: zero the blocks between the newest one and the counter's (at most the whole ring).
      const newestBlock = Math.floor(this.#newest / BLOCK_BITS);
      const blocksToClear = Math.min(block - newestBlock, RING_BLOCKS);
      for (let i = 1; i <= blocksToClear; i++) this.#ring[(newestBlock + i) & RING_MASK] = 0;
      this.#newest = counter;
    } else if (this.#newest - counter > REPLAY_WINDOW_SIZE) {
      return false;
    }
    const slot = block & RING_MASK;
    const bit = 1 << (counter & (BLOCK_BITS - 1));
    const old = this.#ring[slot];
    if ((old & bit) !== 0) return false;
    this.#ring[slot] = old | bit;
    return true;
  }

  #inRange(counter: number): boolean {
    // Bitwise operators above need exact integers; a NaN, fraction or unsafe value is never valid.
    return Number.isSafeInteger(counter) && counter >= 0 && counter < this.#limit;
  }
}
