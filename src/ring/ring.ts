// A single-producer single-consumer ring of uint32 entries in a SharedArrayBuffer (layout.ts,
// "Ring"). Exactly one thread pushes and exactly one thread pops; that is what lets it work without
// locks or read-modify-write instructions.
//
// Memory ordering (ECMAScript memory model, §29 "Memory Model"): the producer writes an entry with a
// plain store, then publishes it with Atomics.store of the write count; the consumer reads the
// write count with Atomics.load and only then reads the entry. Atomics are sequentially
// consistent, so the entry store happens-before the consumer's read of it. Popping mirrors this:
// the consumer reads the entry before Atomics.store of the read count, so the producer never
// overwrites an entry that is still being read.
//
// Each side keeps the last value it saw of the *other* side's count and only reloads it when the
// ring looks full (producer) or empty (consumer): the other side's cache line is touched once per
// batch, not once per entry. A stale copy is always conservative, since both counts only grow.

import {
  RING_ENTRIES,
  RING_ENTRY_SIZE,
  RING_MAX_CAPACITY,
  RING_READ_COUNT_WORD,
  RING_WRITE_COUNT_WORD,
} from './layout.ts';

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** The smallest power of two ≥ n (n ≥ 1), for sizing a ring that must hold n entries. */
export function ringCapacityFor(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > RING_MAX_CAPACITY) {
    throw new RangeError(`ring: cannot size a ring for ${n} entries (1..${RING_MAX_CAPACITY})`);
  }
  return 2 ** Math.ceil(Math.log2(n));
}

/** A zeroed buffer for a ring of `capacity` entries (a power of two). */
export function createRingBuffer(capacity: number): SharedArrayBuffer {
  if (!isPowerOfTwo(capacity) || capacity > RING_MAX_CAPACITY) {
    throw new RangeError(`ring: capacity must be a power of two in 1..${RING_MAX_CAPACITY}, got ${capacity}`);
  }
  return new SharedArrayBuffer(RING_ENTRIES + capacity * RING_ENTRY_SIZE);
}

export class Ring {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  readonly #mask: number;
  readonly #counts: Int32Array;
  readonly #entries: Uint32Array;
  /** The producer's last view of the read count (a lower bound of the real one). */
  #seenReadCount: number;
  /** The consumer's last view of the write count (a lower bound of the real one). */
  #seenWriteCount: number;

  /** Views over an existing ring buffer (as created by `createRingBuffer`, possibly in another thread). */
  constructor(buffer: SharedArrayBuffer) {
    const capacity = (buffer.byteLength - RING_ENTRIES) / RING_ENTRY_SIZE;
    if (!isPowerOfTwo(capacity) || capacity > RING_MAX_CAPACITY) {
      throw new RangeError(`ring: a buffer of ${buffer.byteLength} bytes is not a ring buffer`);
    }
    this.buffer = buffer;
    this.capacity = capacity;
    this.#mask = capacity - 1;
    this.#counts = new Int32Array(buffer, 0, RING_ENTRIES / 4);
    this.#entries = new Uint32Array(buffer, RING_ENTRIES, capacity);
    this.#seenReadCount = Atomics.load(this.#counts, RING_READ_COUNT_WORD);
    this.#seenWriteCount = Atomics.load(this.#counts, RING_WRITE_COUNT_WORD);
  }

  static create(capacity: number): Ring {
    return new Ring(createRingBuffer(capacity));
  }

  /** Producer: append `value` (a uint32). False when the ring is full (nothing is written). */
  push(value: number): boolean {
    const write = Atomics.load(this.#counts, RING_WRITE_COUNT_WORD);
    if (((write - this.#seenReadCount) | 0) >= this.capacity) {
      this.#seenReadCount = Atomics.load(this.#counts, RING_READ_COUNT_WORD);
      if (((write - this.#seenReadCount) | 0) >= this.capacity) return false;
    }
    this.#entries[write & this.#mask] = value;
    Atomics.store(this.#counts, RING_WRITE_COUNT_WORD, (write + 1) | 0);
    return true;
  }

  /**
   * Producer: append `values[0..count)` in order, as many as fit, with one publication.
   * Returns how many were appended (a prefix of `values`).
   */
  pushBatch(values: Uint32Array, count: number = values.length): number {
    if (count > values.length) throw new RangeError(`ring: cannot push ${count} of ${values.length} values`);
    const write = Atomics.load(this.#counts, RING_WRITE_COUNT_WORD);
    let free = this.capacity - ((write - this.#seenReadCount) | 0);
    if (free < count) {
      this.#seenReadCount = Atomics.load(this.#counts, RING_READ_COUNT_WORD);
      free = this.capacity - ((write - this.#seenReadCount) | 0);
    }
    const n = Math.min(free, count);
    if (n <= 0) return 0;
    const mask = this.#mask;
    const entries = this.#entries;
    for (let i = 0; i < n; i++) entries[(write + i) & mask] = values[i]!;
    Atomics.store(this.#counts, RING_WRITE_COUNT_WORD, (write + n) | 0);
    return n;
  }

  /** Producer: how many entries a push could append now (reloads the read count). */
  freeSpace(): number {
    this.#seenReadCount = Atomics.load(this.#counts, RING_READ_COUNT_WORD);
    return this.capacity - ((Atomics.load(this.#counts, RING_WRITE_COUNT_WORD) - this.#seenReadCount) | 0);
  }

  /** Consumer: remove and return the oldest entry, or -1 when the ring is empty. */
  pop(): number {
    const read = Atomics.load(this.#counts, RING_READ_COUNT_WORD);
    if (read === this.#seenWriteCount) {
      this.#seenWriteCount = Atomics.load(this.#counts, RING_WRITE_COUNT_WORD);
      if (read === this.#seenWriteCount) return -1;
    }
    const value = this.#entries[read & this.#mask]!;
    Atomics.store(this.#counts, RING_READ_COUNT_WORD, (read + 1) | 0);
    return value;
  }

  /** Consumer: move up to `max` of the oldest entries into `out[0..)`, with one publication. Returns the count. */
  popBatch(out: Uint32Array, max: number = out.length): number {
    const read = Atomics.load(this.#counts, RING_READ_COUNT_WORD);
    let available = (this.#seenWriteCount - read) | 0;
    if (available < max) {
      this.#seenWriteCount = Atomics.load(this.#counts, RING_WRITE_COUNT_WORD);
      available = (this.#seenWriteCount - read) | 0;
    }
    const n = Math.min(available, max, out.length);
    if (n <= 0) return 0;
    const mask = this.#mask;
    const entries = this.#entries;
    for (let i = 0; i < n; i++) out[i] = entries[(read + i) & mask]!;
    Atomics.store(this.#counts, RING_READ_COUNT_WORD, (read + n) | 0);
    return n;
  }

  /** Entries published and not yet popped. Exact when neither side is running, a snapshot otherwise. */
  get size(): number {
    const read = Atomics.load(this.#counts, RING_READ_COUNT_WORD);
    return (Atomics.load(this.#counts, RING_WRITE_COUNT_WORD) - read) | 0;
  }

  /** Consumer-side check: true when nothing is waiting to be popped (reloads the write count). */
  isEmpty(): boolean {
    this.#seenWriteCount = Atomics.load(this.#counts, RING_WRITE_COUNT_WORD);
    return this.#seenWriteCount === Atomics.load(this.#counts, RING_READ_COUNT_WORD);
  }
}
