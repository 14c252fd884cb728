// The whole set of shared buffers that carry packets between threads (layout.ts, "Fabric"), created
// once by the main thread and posted to every thread; each thread attaches the part it plays.
//
// Producers and consumers (ARCHITECTURE.md, "Threads and the packet path"):
//   tun reader → worker k   outbound plaintext: IP packet at SLOT_PLAINTEXT_OFFSET, length = IP length
//   udp reader → worker k   inbound transport:  datagram at payload offset 0, length = datagram length
//   udp reader → control    handshake and cookie messages (later STUN): datagram at 0, as above
//   worker k's own slab     packets the worker originates (keepalives); they never leave worker k
// Control messages to workers go by postMessage; only packet bytes use rings. Every pair has a return
// ring sized for the producer's whole slab, so giving a slot back never fails.

import { Doorbell } from './doorbell.ts';
import { PeerTable } from './peer-table.ts';
import { Ring, createRingBuffer, ringCapacityFor } from './ring.ts';
import { Slab, SlotOwnershipError, SlotPool, createSlabBuffer } from './slab.ts';

export interface FabricOptions {
  readonly workerCount: number;
  /** Slots in each reader's slab (tun, udp). */
  readonly readerSlots?: number;
  /** Slots in each worker's own slab. */
  readonly workerSlots?: number;
  /** Entries in each reader → consumer ring (a power of two): how far one consumer may fall behind. */
  readonly ringCapacity?: number;
  /** Peer ids are 0 .. peerCapacity - 1. */
  readonly peerCapacity?: number;
}

export const DEFAULT_READER_SLOTS = 512;
export const DEFAULT_WORKER_SLOTS = 64;
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
  readonly tunSlab: SharedArrayBuffer;
  readonly udpSlab: SharedArrayBuffer;
  readonly workerSlabs: readonly SharedArrayBuffer[];
  readonly tunToWorker: readonly LinkBuffers[];
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
  const tunSlab = createSlabBuffer(readerSlots);
  const udpSlab = createSlabBuffer(readerSlots);
  const returnCapacity = ringCapacityFor(readerSlots);
  const link = (): LinkBuffers => ({
    ring: createRingBuffer(ringCapacity),
    returnRing: createRingBuffer(returnCapacity),
  });
  const each = <T>(make: () => T): T[] => Array.from({ length: workerCount }, make);
  return {
    workerCount,
    tunSlab,
    udpSlab,
    workerSlabs: each(() => createSlabBuffer(workerSlots)),
    tunToWorker: each(link),
    udpToWorker: each(link),
    udpToControl: link(),
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

export interface TunReaderEnd {
  readonly pool: SlotPool;
  /** Indexed by worker. */
  readonly toWorker: readonly OutboundLink[];
}

export interface UdpReaderEnd {
  readonly pool: SlotPool;
  readonly toWorker: readonly OutboundLink[];
  readonly toControl: OutboundLink;
}

export interface WorkerEnd {
  readonly index: number;
  readonly fromTun: InboundLink;
  readonly fromUdp: InboundLink;
  readonly doorbell: Doorbell;
  /** Slots for packets this worker originates; nobody else returns into it. */
  readonly ownPool: SlotPool;
  readonly peerTable: PeerTable;
  /** True when either inbound ring holds an entry (for `waitForWork`). */
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

export function attachTunReader(fabric: FabricDescription): TunReaderEnd {
  return {
    pool: new SlotPool(new Slab(fabric.tunSlab), fabric.tunToWorker.map((b) => new Ring(b.returnRing))),
    toWorker: fabric.tunToWorker.map((b, k) => ({
      ring: new Ring(b.ring),
      doorbell: new Doorbell(fabric.workerDoorbells[k]!),
    })),
  };
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
  if (!Number.isInteger(index) || index < 0 || index >= fabric.workerCount) {
    throw new RangeError(`fabric: worker index ${index} is outside 0..${fabric.workerCount - 1}`);
  }
  const fromTun = inbound(new Slab(fabric.tunSlab), fabric.tunToWorker[index]!);
  const fromUdp = inbound(new Slab(fabric.udpSlab), fabric.udpToWorker[index]!);
  return {
    index,
    fromTun,
    fromUdp,
    doorbell: new Doorbell(fabric.workerDoorbells[index]!),
    ownPool: new SlotPool(new Slab(fabric.workerSlabs[index]!), []),
    peerTable: new PeerTable(fabric.peerTable),
    hasWork: () => !fromTun.ring.isEmpty() || !fromUdp.ring.isEmpty(),
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
