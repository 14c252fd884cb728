// Packet slots in shared memory (layout.ts, "Slot") and the producer-side pool that hands them out.
//
// Ownership instead of locks: a slab belongs to one producer thread. The producer takes a free slot
// from its SlotPool, fills it, and pushes the slot index on an SPSC ring to one consumer; the
// consumer processes the slot in place and pushes the index back on that pair's return ring; the
// producer reclaims returned indexes into its free list. At any moment a slot is owned by exactly one
// thread (free list, in a ring, or being processed), so no slot is ever touched by two threads at
// once and every ring has one producer and one consumer.

import { ZtgateError } from '../errors.ts';
import {
  MAX_SLOT_COUNT,
  NO_PEER,
  SLOT_ADDRESS_SIZE,
  SLOT_F64S,
  SLOT_FLAGS,
  SLOT_FLAGS_WORD,
  SLOT_LOCAL_ADDRESS,
  SLOT_LOCAL_IFINDEX,
  SLOT_LOCAL_IFINDEX_WORD,
  SLOT_PAYLOAD,
  SLOT_PAYLOAD_LENGTH,
  SLOT_PAYLOAD_LENGTH_WORD,
  SLOT_PAYLOAD_SIZE,
  SLOT_PEER_ID,
  SLOT_PEER_ID_WORD,
  SLOT_REMOTE_ADDRESS,
  SLOT_HALFWORDS,
  SLOT_REMOTE_FAMILY,
  SLOT_REMOTE_FAMILY_HALFWORD,
  SLOT_REMOTE_PORT,
  SLOT_REMOTE_PORT_HALFWORD,
  SLOT_REMOTE_SCOPE_ID,
  SLOT_REMOTE_SCOPE_ID_WORD,
  SLOT_SIZE,
  SLOT_SPARE,
  SLOT_SPARE_F64,
  SLOT_WORDS,
} from './layout.ts';
import type { Ring } from './ring.ts';

/** A slot index was returned that the pool did not hand out: a bug in a producer or consumer. */
export class SlotOwnershipError extends ZtgateError {
  readonly slot: number;
  constructor(slot: number, detail: string) {
    super('ZTGATE_ERR_SLOT_OWNERSHIP', `slab: slot ${slot} ${detail}`);
    this.slot = slot;
  }
}

/** A zeroed buffer of `slotCount` slots. */
export function createSlabBuffer(slotCount: number): SharedArrayBuffer {
  if (!Number.isInteger(slotCount) || slotCount < 1 || slotCount > MAX_SLOT_COUNT) {
    throw new RangeError(`slab: slot count must be an integer in 1..${MAX_SLOT_COUNT}, got ${slotCount}`);
  }
  return new SharedArrayBuffer(slotCount * SLOT_SIZE);
}

/** Every header field, as a plain object: for cold paths, logs and tests. */
export interface SlotHeader {
  readonly payloadLength: number;
  readonly peerId: number;
  readonly flags: number;
  readonly remoteFamily: number;
  readonly remotePort: number;
  readonly remoteScopeId: number;
  readonly remoteAddress: Uint8Array;
  readonly localAddress: Uint8Array;
  readonly localIfindex: number;
  readonly spare: number;
}

/**
 * Views over one slab. Hot-path accessors index whole-slab Int32Array/Float64Array views at computed
 * offsets and return views that were built once per slot, so nothing is allocated per packet. They
 * do not check `slot`: slot indexes come from this slab's own pool and rings.
 */
export class Slab {
  readonly buffer: SharedArrayBuffer;
  readonly slotCount: number;
  /** The whole slab as bytes (slot i at i * SLOT_SIZE), e.g. for one I/O vector over many slots. */
  readonly bytes: Uint8Array;
  readonly #halfwords: Uint16Array;
  readonly #words: Int32Array;
  readonly #f64s: Float64Array;
  readonly #payloads: readonly Uint8Array[];
  readonly #remoteAddresses: readonly Uint8Array[];
  readonly #localAddresses: readonly Uint8Array[];

  /** Views over an existing slab buffer (possibly created in another thread). */
  constructor(buffer: SharedArrayBuffer) {
    const slotCount = buffer.byteLength / SLOT_SIZE;
    if (!Number.isInteger(slotCount) || slotCount < 1 || slotCount > MAX_SLOT_COUNT) {
      throw new RangeError(`slab: a buffer of ${buffer.byteLength} bytes is not a slab`);
    }
    this.buffer = buffer;
    this.slotCount = slotCount;
    this.bytes = new Uint8Array(buffer);
    this.#halfwords = new Uint16Array(buffer);
    this.#words = new Int32Array(buffer);
    this.#f64s = new Float64Array(buffer);
    const payloads: Uint8Array[] = [];
    const remoteAddresses: Uint8Array[] = [];
    const localAddresses: Uint8Array[] = [];
    for (let slot = 0; slot < slotCount; slot++) {
      const base = slot * SLOT_SIZE;
      payloads.push(new Uint8Array(buffer, base + SLOT_PAYLOAD, SLOT_PAYLOAD_SIZE));
      remoteAddresses.push(new Uint8Array(buffer, base + SLOT_REMOTE_ADDRESS, SLOT_ADDRESS_SIZE));
      localAddresses.push(new Uint8Array(buffer, base + SLOT_LOCAL_ADDRESS, SLOT_ADDRESS_SIZE));
    }
    this.#payloads = payloads;
    this.#remoteAddresses = remoteAddresses;
    this.#localAddresses = localAddresses;
  }

  static create(slotCount: number): Slab {
    return new Slab(createSlabBuffer(slotCount));
  }

  /** The slot's payload (SLOT_PAYLOAD_SIZE bytes); the same view every call. */
  payloadView(slot: number): Uint8Array {
    return this.#payloads[slot]!;
  }

  /** The slot's 16-byte remote address field; the same view every call. */
  remoteAddressView(slot: number): Uint8Array {
    return this.#remoteAddresses[slot]!;
  }

  /** The slot's 16-byte local (pktinfo) address field; the same view every call. */
  localAddressView(slot: number): Uint8Array {
    return this.#localAddresses[slot]!;
  }

  payloadLength(slot: number): number {
    return this.#words[slot * SLOT_WORDS + SLOT_PAYLOAD_LENGTH_WORD]!;
  }

  setPayloadLength(slot: number, length: number): void {
    this.#words[slot * SLOT_WORDS + SLOT_PAYLOAD_LENGTH_WORD] = length;
  }

  /** The peer the slot is attributed to, or NO_PEER (-1). */
  peerId(slot: number): number {
    return this.#words[slot * SLOT_WORDS + SLOT_PEER_ID_WORD]!;
  }

  setPeerId(slot: number, peerId: number): void {
    this.#words[slot * SLOT_WORDS + SLOT_PEER_ID_WORD] = peerId;
  }

  flags(slot: number): number {
    return this.#words[slot * SLOT_WORDS + SLOT_FLAGS_WORD]!;
  }

  setFlags(slot: number, flags: number): void {
    this.#words[slot * SLOT_WORDS + SLOT_FLAGS_WORD] = flags;
  }

  /** 4 or 6, or 0 when the slot has no remote endpoint. */
  remoteFamily(slot: number): number {
    return this.#halfwords[slot * SLOT_HALFWORDS + SLOT_REMOTE_FAMILY_HALFWORD]!;
  }

  remotePort(slot: number): number {
    return this.#halfwords[slot * SLOT_HALFWORDS + SLOT_REMOTE_PORT_HALFWORD]!;
  }

  /** The IPv6 scope id of a link-local remote, else 0. */
  remoteScopeId(slot: number): number {
    return this.#words[slot * SLOT_WORDS + SLOT_REMOTE_SCOPE_ID_WORD]! >>> 0;
  }

  /** Sets family, port and scope id; the address bytes go through `remoteAddressView(slot)`. */
  setRemote(slot: number, family: number, port: number, scopeId = 0): void {
    const half = slot * SLOT_HALFWORDS;
    this.#halfwords[half + SLOT_REMOTE_FAMILY_HALFWORD] = family;
    this.#halfwords[half + SLOT_REMOTE_PORT_HALFWORD] = port;
    this.#words[slot * SLOT_WORDS + SLOT_REMOTE_SCOPE_ID_WORD] = scopeId;
  }

  localIfindex(slot: number): number {
    return this.#words[slot * SLOT_WORDS + SLOT_LOCAL_IFINDEX_WORD]!;
  }

  setLocalIfindex(slot: number, ifindex: number): void {
    this.#words[slot * SLOT_WORDS + SLOT_LOCAL_IFINDEX_WORD] = ifindex;
  }

  /** The 8-byte spare field as a float64 (any number, e.g. a timestamp or an integer below 2^53). */
  spare(slot: number): number {
    return this.#f64s[slot * SLOT_F64S + SLOT_SPARE_F64]!;
  }

  setSpare(slot: number, value: number): void {
    this.#f64s[slot * SLOT_F64S + SLOT_SPARE_F64] = value;
  }

  /** Clears the fields a new owner must not inherit: length 0, no peer, no flags, no endpoint. */
  resetHeader(slot: number): void {
    const base = slot * SLOT_WORDS;
    this.#words[base + SLOT_PAYLOAD_LENGTH_WORD] = 0;
    this.#words[base + SLOT_PEER_ID_WORD] = NO_PEER;
    this.#words[base + SLOT_FLAGS_WORD] = 0;
    this.#halfwords[slot * SLOT_HALFWORDS + SLOT_REMOTE_FAMILY_HALFWORD] = 0;
  }
}

function checkSlot(slab: Slab, slot: number): void {
  if (!Number.isInteger(slot) || slot < 0 || slot >= slab.slotCount) {
    throw new RangeError(`slab: slot ${slot} is outside 0..${slab.slotCount - 1}`);
  }
}

/** Cold path: every header field of `slot`, read through a DataView (copies the addresses). */
export function readSlotHeader(slab: Slab, slot: number): SlotHeader {
  checkSlot(slab, slot);
  const base = slot * SLOT_SIZE;
  const view = new DataView(slab.buffer, base, SLOT_PAYLOAD);
  return {
    payloadLength: view.getInt32(SLOT_PAYLOAD_LENGTH, true),
    peerId: view.getInt32(SLOT_PEER_ID, true),
    flags: view.getInt32(SLOT_FLAGS, true),
    remoteFamily: view.getUint16(SLOT_REMOTE_FAMILY, true),
    remotePort: view.getUint16(SLOT_REMOTE_PORT, true),
    remoteScopeId: view.getUint32(SLOT_REMOTE_SCOPE_ID, true),
    remoteAddress: slab.bytes.slice(base + SLOT_REMOTE_ADDRESS, base + SLOT_REMOTE_ADDRESS + SLOT_ADDRESS_SIZE),
    localAddress: slab.bytes.slice(base + SLOT_LOCAL_ADDRESS, base + SLOT_LOCAL_ADDRESS + SLOT_ADDRESS_SIZE),
    localIfindex: view.getInt32(SLOT_LOCAL_IFINDEX, true),
    spare: view.getFloat64(SLOT_SPARE, true),
  };
}

/** Cold path: write every header field of `slot` through a DataView. Addresses shorter than 16 bytes are zero-filled. */
export function writeSlotHeader(slab: Slab, slot: number, header: SlotHeader): void {
  checkSlot(slab, slot);
  if (header.remoteAddress.length > SLOT_ADDRESS_SIZE || header.localAddress.length > SLOT_ADDRESS_SIZE) {
    throw new RangeError(`slab: an address has at most ${SLOT_ADDRESS_SIZE} bytes`);
  }
  const base = slot * SLOT_SIZE;
  const view = new DataView(slab.buffer, base, SLOT_PAYLOAD);
  view.setInt32(SLOT_PAYLOAD_LENGTH, header.payloadLength, true);
  view.setInt32(SLOT_PEER_ID, header.peerId, true);
  view.setInt32(SLOT_FLAGS, header.flags, true);
  view.setUint16(SLOT_REMOTE_FAMILY, header.remoteFamily, true);
  view.setUint16(SLOT_REMOTE_PORT, header.remotePort, true);
  view.setUint32(SLOT_REMOTE_SCOPE_ID, header.remoteScopeId, true);
  view.setInt32(SLOT_LOCAL_IFINDEX, header.localIfindex, true);
  view.setFloat64(SLOT_SPARE, header.spare, true);
  slab.bytes.fill(0, base + SLOT_REMOTE_ADDRESS, base + SLOT_LOCAL_ADDRESS + SLOT_ADDRESS_SIZE);
  slab.bytes.set(header.remoteAddress, base + SLOT_REMOTE_ADDRESS);
  slab.bytes.set(header.localAddress, base + SLOT_LOCAL_ADDRESS);
}

/**
 * The producer's free list over its own slab. Consumers give slots back through `returnRings`
 * (one per consumer, each sized to hold every slot, so giving back never fails).
 *
 * Call `reclaim()` once per batch before allocating: freshly returned slots are reused first (the
 * free list is a stack), which keeps the working set small and cache-warm. `allocate()` also
 * reclaims by itself when the free list runs dry.
 */
export class SlotPool {
  readonly slab: Slab;
  readonly #returnRings: readonly Ring[];
  /** Free slot indexes; [0, #freeCount) are valid, the top of the stack is the last. */
  readonly #free: Int32Array;
  #freeCount: number;
  /** 1 while the slot is in the free list: catches a slot returned twice or never handed out. */
  readonly #isFree: Uint8Array;
  readonly #scratch: Uint32Array;

  constructor(slab: Slab, returnRings: readonly Ring[]) {
    this.slab = slab;
    this.#returnRings = returnRings;
    this.#free = new Int32Array(slab.slotCount);
    this.#isFree = new Uint8Array(slab.slotCount).fill(1);
    // Stack top is slot 0, so a fresh pool hands out 0, 1, 2, ...
    for (let i = 0; i < slab.slotCount; i++) this.#free[i] = slab.slotCount - 1 - i;
    this.#freeCount = slab.slotCount;
    this.#scratch = new Uint32Array(slab.slotCount);
  }

  /** Slots in the free list now (not counting ones waiting in return rings). */
  get available(): number {
    return this.#freeCount;
  }

  /**
   * A free slot with its header reset (no peer, length 0, no endpoint), or -1 when every slot is in
   * use: the caller counts a drop.
   */
  allocate(): number {
    if (this.#freeCount === 0 && this.reclaim() === 0) return -1;
    const slot = this.#free[--this.#freeCount]!;
    this.#isFree[slot] = 0;
    this.slab.resetHeader(slot);
    return slot;
  }

  /** Give back a slot this producer allocated but did not push (e.g. a read that returned nothing). */
  release(slot: number): void {
    this.#putFree(slot);
  }

  /** Move every slot waiting in the return rings into the free list; returns how many moved. */
  reclaim(): number {
    let moved = 0;
    for (const ring of this.#returnRings) {
      const n = ring.popBatch(this.#scratch);
      for (let i = 0; i < n; i++) this.#putFree(this.#scratch[i]!);
      moved += n;
    }
    return moved;
  }

  #putFree(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slab.slotCount) throw new SlotOwnershipError(slot, 'is not in this slab');
    if (this.#isFree[slot] === 1) throw new SlotOwnershipError(slot, 'was given back while already free');
    this.#isFree[slot] = 1;
    this.#free[this.#freeCount++] = slot;
  }
}
