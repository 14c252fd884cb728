// The whole set of shared buffers that carry packets between threads (layout.ts, "Fabric"), created
// once by the main thread and posted to every thread; each thread attaches the part it plays.
//
// Producers and consumers (ARCHITECTURE.md, "Threads and the packet path"):
//   worker k's slab         what worker k reads from its own TUN queue, and packets it originates
//                           (keepalives, staged packets): IP packet at SLOT_PLAINTEXT_OFFSET,
//                           length = IP length; its own peers' packets never leave worker k
//   worker j → worker k     outbound plaintext j read for one of k's peers (slots of j's slab)
//   udp reader → worker k   inbound transport the reader got (ChannelData it unwrapped, anything
//                           the kernel gave the reader's socket): datagram at payload offset 0
//   udp reader → control    handshake and cookie messages, STUN: datagram at 0, as above
// Control messages to workers go by postMessage; only packet bytes use rings. Every pair has a return
// ring sized for the producer's whole slab, so giving a slot back never fails.

import { Doorbell } from './doorbell.ts';
import { PeerTable } from './peer-table.ts';
import { Ring, createRingBuffer, ringCapacityFor } from './ring.ts';
import { Slab, SlotOwnershipError, SlotPool, createSlabBuffer } from './slab.ts';

export interface FabricOptions {
  readonly workerCount: number;
  /** Slots in the UDP reader's slab. */
  readonly readerSlots?: number;
  /** Slots in each worker's own slab (its TUN reads and the packets it originates). */
  readonly workerSlots?: number;
  /** Entries in each producer → consumer ring (a power of two): how far one consumer may fall behind. */
  readonly ringCapacity?: number;
  /** Peer ids are 0 .. peerCapacity - 1. */
  readonly peerCapacity?: number;
}

export const DEFAULT_READER_SLOTS = 512;
export const DEFAULT_WORKER_SLOTS = 512;
export const DEFAULT_RING_CAPACITY = 256;
export const DEFAULT_PEER_CAPACITY = 65_536;
export const MAX_WORKERS = 64;

/** The buffers of one producer → consumer pair. */
export interface LinkBuffers {
  readonly ring: SharedArrayBuffer;
  readonly returnRing: SharedArrayBuffer;
}

/** Plain data (numbers and SharedArrayBuffers): survives postMessage, which shares the buffers. */
export interface FabricDescription {
  readonly workerCount: number;
  readonly udpSlab: SharedArrayBuffer;
  readonly workerSlabs: readonly SharedArrayBuffer[];
  /** Worker j → worker k at j * workerCount + k; null where j = k. */
  readonly workerToWorker: readonly (LinkBuffers | null)[];
  readonly udpToWorker: readonly LinkBuffers[];
  readonly udpToControl: LinkBuffers;
  readonly workerDoorbells: readonly SharedArrayBuffer[];
  readonly controlDoorbell: SharedArrayBuffer;
  readonly peerTable: SharedArrayBuffer;
}

export function createFabric(options: FabricOptions): FabricDescription {
  const { workerCount } = options;
  if (!Number.isInteger(workerCount) || workerCount < 1 || workerCount > MAX_WORKERS) {
    throw new RangeError(`fabric: worker count must be an integer in 1..${MAX_WORKERS}, got ${workerCount}`);
  }
  const readerSlots = options.readerSlots ?? DEFAULT_READER_SLOTS;
  const workerSlots = options.workerSlots ?? DEFAULT_WORKER_SLOTS;
  const ringCapacity = options.ringCapacity ?? DEFAULT_RING_CAPACITY;
  const udpSlab = createSlabBuffer(readerSlots);
  const link = (producerSlots: number): LinkBuffers => ({
    ring: createRingBuffer(ringCapacity),
    returnRing: createRingBuffer(ringCapacityFor(producerSlots)),
  });
  const each = <T>(make: () => T): T[] => Array.from({ length: workerCount }, make);
  return {
    workerCount,
    udpSlab,
    workerSlabs: each(() => createSlabBuffer(workerSlots)),
    workerToWorker: Array.from({ length: workerCount * workerCount }, (_, at) =>
      Math.floor(at / workerCount) === at % workerCount ? null : link(workerSlots)),
    udpToWorker: each(() => link(readerSlots)),
    udpToControl: link(readerSlots),
    workerDoorbells: each(() => Doorbell.create().buffer),
    controlDoorbell: Doorbell.create().buffer,
    peerTable: PeerTable.create(options.peerCapacity ?? DEFAULT_PEER_CAPACITY).buffer,
  };
}

/** A producer's end of a pair: push slot indexes, then ring the consumer's doorbell once per batch. */
export interface OutboundLink {
  readonly ring: Ring;
  readonly doorbell: Doorbell;
}

/** A consumer's end of a pair: pop slot indexes of `slab`, process them, `returnSlot` each. */
export interface InboundLink {
  readonly slab: Slab;
  readonly ring: Ring;
  readonly returnRing: Ring;
}

/** Consumer: hand a processed slot back to its producer. */
export function returnSlot(link: InboundLink, slot: number): void {
  // The return ring holds the producer's whole slab, so it is full only if a slot was returned twice.
  if (!link.returnRing.push(slot)) throw new SlotOwnershipError(slot, 'returned to a full return ring');
}

export interface UdpReaderEnd {
  readonly pool: SlotPool;
  readonly toWorker: readonly OutboundLink[];
  readonly toControl: OutboundLink;
}

export interface WorkerEnd {
  readonly index: number;
  /** The worker's own slab: its TUN reads and the packets it originates; other workers return into it. */
  readonly pool: SlotPool;
  /** Indexed by worker: where packets for that worker's peers go (null for this worker). */
  readonly toWorker: readonly (OutboundLink | null)[];
  /** Indexed by worker: packets that worker read for this worker's peers (null for this worker). */
  readonly fromWorkers: readonly (InboundLink | null)[];
  readonly fromUdp: InboundLink;
  readonly doorbell: Doorbell;
  readonly peerTable: PeerTable;
  /** True when an inbound ring holds an entry (for `waitForWork`). */
  readonly hasWork: () => boolean;
}

export interface ControlEnd {
  readonly fromUdp: InboundLink;
  readonly doorbell: Doorbell;
  readonly peerTable: PeerTable;
  readonly hasWork: () => boolean;
}

function inbound(slab: Slab, buffers: LinkBuffers): InboundLink {
  return { slab, ring: new Ring(buffers.ring), returnRing: new Ring(buffers.returnRing) };
}

export function attachUdpReader(fabric: FabricDescription): UdpReaderEnd {
  const returnRings = [...fabric.udpToWorker, fabric.udpToControl].map((b) => new Ring(b.returnRing));
  return {
    pool: new SlotPool(new Slab(fabric.udpSlab), returnRings),
    toWorker: fabric.udpToWorker.map((b, k) => ({
      ring: new Ring(b.ring),
      doorbell: new Doorbell(fabric.workerDoorbells[k]!),
    })),
    toControl: { ring: new Ring(fabric.udpToControl.ring), doorbell: new Doorbell(fabric.controlDoorbell) },
  };
}

export function attachWorker(fabric: FabricDescription, index: number): WorkerEnd {
  const n = fabric.workerCount;
  if (!Number.isInteger(index) || index < 0 || index >= n) {
    throw new RangeError(`fabric: worker index ${index} is outside 0..${n - 1}`);
  }
  const workers = Array.from({ length: n }, (_, k) => k);
  const outgoing = workers.map((k) => fabric.workerToWorker[index * n + k] ?? null);
  const incoming = workers.map((j) => fabric.workerToWorker[j * n + index] ?? null);
  const fromWorkers = incoming.map((buffers, j) => (buffers === null ? null : inbound(new Slab(fabric.workerSlabs[j]!), buffers)));
  const rings = fromWorkers.filter((link): link is InboundLink => link !== null).map((link) => link.ring);
  const fromUdp = inbound(new Slab(fabric.udpSlab), fabric.udpToWorker[index]!);
  return {
    index,
    pool: new SlotPool(
      new Slab(fabric.workerSlabs[index]!),
      outgoing.filter((b): b is LinkBuffers => b !== null).map((b) => new Ring(b.returnRing)),
    ),
    toWorker: outgoing.map((buffers, k) => (buffers === null ? null : { ring: new Ring(buffers.ring), doorbell: new Doorbell(fabric.workerDoorbells[k]!) })),
    fromWorkers,
    fromUdp,
    doorbell: new Doorbell(fabric.workerDoorbells[index]!),
    peerTable: new PeerTable(fabric.peerTable),
    hasWork: () => {
      if (!fromUdp.ring.isEmpty()) return true;
      for (let k = 0; k < rings.length; k++) if (!rings[k]!.isEmpty()) return true;
      return false;
    },
  };
}

export function attachControl(fabric: FabricDescription): ControlEnd {
  const fromUdp = inbound(new Slab(fabric.udpSlab), fabric.udpToControl);
  return {
    fromUdp,
    doorbell: new Doorbell(fabric.controlDoorbell),
    peerTable: new PeerTable(fabric.peerTable),
    hasWork: () => !fromUdp.ring.isEmpty(),
  };
}
