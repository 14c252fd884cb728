// The TUN reader thread: reads IP packets from its TUN queue straight into slots of its slab (at
// the plaintext offset, leaving room for the transport header), finds the peer by destination
// address in the cryptokey routing table (whitepaper §2), and hands the slot to the worker that
// owns that peer. Packets for no peer are dropped and counted, as wireguard-go does.
//
// With TUN offloads on, each read starts with a virtio-net header and may be a TCP or UDP
// super-packet of up to 64 KiB: it is read into a slot with its header just before the plaintext
// offset, then cut into IP packets, each in its own slot (offload.ts). A read can thus fill up to
// MAX_SEGMENTS_PER_READ slots, so the reader only reads while the pool and every worker's ring
// have room for that many: otherwise it leaves packets in the TUN queue, whose filling pushes
// back on the sender instead of dropping.
import { commandSignalIndex, type ReaderCommand } from '../control/messages.ts';
import { attachTunReader } from '../ring/fabric.ts';
import { SLOT_PAYLOAD, SLOT_PLAINTEXT_OFFSET, SLOT_SIZE } from '../ring/layout.ts';
import { MAX_SEGMENT_SIZE } from '../wireguard/constants.ts';
import { AllowedIps } from '../wireguard/allowedips.ts';
import { waitReadable } from '../io/libc.ts';
import { TUN_VNET_HDR_SIZE, tunRead } from '../io/tun.ts';
import { SyscallError } from '../errors.ts';
import { applyRouteChanges } from './commands.ts';
import { Segmenter, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VirtioHeader, completeChecksum } from './offload.ts';
import { CommandInbox, DropReporter, notifyControl, threadInit } from './thread-support.ts';
import { warmTunReaderPaths } from './warmup.ts';

const BATCH = 64;
/**
 * The most segments one read may need: a 64 KiB super-packet cut at the smallest segment size a
 * 1280-byte IPv6 MTU allows (the kernel picks the segment size from the MTU). More are dropped.
 */
const MAX_SEGMENTS_PER_READ = 64;
/** How long to let the workers drain their rings when they are too full to take another read. */
const BACKPRESSURE_WAIT_MS = 0.05;
/** A poll(2) wakes on commands through the wake eventfd; the timeout is only a safety net. */
const POLL_TIMEOUT_MS = 1_000;

const init = threadInit();
const fabric = attachTunReader(init.fabric);
const workerCount = init.fabric.workerCount;
const fd = init.tunFds[0]!;
const inbox = new CommandInbox<ReaderCommand>(init.commandSignals, commandSignalIndex('tunReader', 0, workerCount));
const routes = new AllowedIps();
const drops = { noRoute: 0, notIp: 0, noFreeSlot: 0, ringFull: 0, badOffload: 0 };
const reporter = new DropReporter('tunReader');
const dropCounts = (): typeof drops => drops;
const slab = fabric.pool.slab;
const vnetHeader = init.tunVnetHeader;
/** Where a read lands in a slot's payload: the packet at the plaintext offset, its virtio header before it. */
const readOffset = vnetHeader ? SLOT_PLAINTEXT_OFFSET - TUN_VNET_HDR_SIZE : SLOT_PLAINTEXT_OFFSET;
/** Per slot, the part of its payload a read goes into. */
const readViews = Array.from({ length: slab.slotCount }, (_, slot) =>
  slab.payloadView(slot).subarray(readOffset, SLOT_PLAINTEXT_OFFSET + MAX_SEGMENT_SIZE),
);
const bytes = slab.bytes;
const header = new VirtioHeader();
const segmenter = new Segmenter();
const backpressure = new Int32Array(new SharedArrayBuffer(4));
const touched = new Uint8Array(workerCount);
let running = true;
/** True when the last batch ended on an empty queue: poll next instead of reading again. */
let drained = false;

/** Where slot `slot`'s plaintext starts in `bytes` (the whole slab). */
function plaintextAt(slot: number): number {
  return slot * SLOT_SIZE + SLOT_PAYLOAD + SLOT_PLAINTEXT_OFFSET;
}

/** Whether the pool and every worker ring can take the packets of one more read. */
function roomForRead(): boolean {
  if (fabric.pool.available <= MAX_SEGMENTS_PER_READ && fabric.pool.reclaim() === 0) return false;
  if (fabric.pool.available <= MAX_SEGMENTS_PER_READ) return false;
  for (let k = 0; k < workerCount; k++) if (fabric.toWorker[k]!.ring.freeSpace() < MAX_SEGMENTS_PER_READ) return false;
  return true;
}

/** Reads and dispatches packets; returns how many, or -1 when the workers have no room for more. */
function readBatch(): number {
  fabric.pool.reclaim();
  let count = 0;
  let full = false;
  drained = false;
  while (count < BATCH) {
    if (vnetHeader && !roomForRead()) {
      full = true;
      break;
    }
    const slot = fabric.pool.allocate();
    if (slot < 0) {
      drops.noFreeSlot++;
      full = true;
      break;
    }
    const length = tunRead(fd, readViews[slot]!);
    if (length === 0) {
      fabric.pool.release(slot);
      drained = true;
      break;
    }
    count += vnetHeader ? dispatchOffloaded(slot, length - TUN_VNET_HDR_SIZE) : dispatch(slot, length);
  }
  for (let k = 0; k < workerCount; k++) {
    if (touched[k] === 0) continue;
    touched[k] = 0;
    fabric.toWorker[k]!.doorbell.ring();
  }
  return count === 0 && full ? -1 : count;
}

/** A read with a virtio header: a plain packet (maybe with a checksum to finish) or a super-packet to cut. */
function dispatchOffloaded(slot: number, length: number): number {
  const at = plaintextAt(slot);
  if (length < 0) return dropOffloaded(slot);
  header.read(bytes, at - TUN_VNET_HDR_SIZE);
  if (header.gsoType === VIRTIO_NET_HDR_GSO_NONE) {
    if ((header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !completeChecksum(bytes, at, length, header.csumStart, header.csumOffset)) {
      return dropOffloaded(slot);
    }
    return dispatch(slot, length);
  }
  const segments = segmenter.begin(bytes, at, length, header);
  if (segments < 0) return dropOffloaded(slot);
  let count = 0;
  for (let k = 0; k < segments; k++) {
    const segment = fabric.pool.allocate();
    if (segment < 0) {
      drops.noFreeSlot += segments - k;
      break;
    }
    count += dispatch(segment, segmenter.write(k, plaintextAt(segment)));
  }
  fabric.pool.release(slot);
  return count;
}

function dropOffloaded(slot: number): number {
  drops.badOffload++;
  fabric.pool.release(slot);
  return 0;
}

/** Hands the IP packet in `slot` to its peer's worker; returns 1, or 0 when it was dropped. */
function dispatch(slot: number, length: number): number {
  const payload = slab.payloadView(slot);
  const version = payload[SLOT_PLAINTEXT_OFFSET]! >> 4;
  let peer = -1;
  if (version === 4 && length >= 20) peer = routes.lookupV4(payload, SLOT_PLAINTEXT_OFFSET + 16);
  else if (version === 6 && length >= 40) peer = routes.lookupV6(payload, SLOT_PLAINTEXT_OFFSET + 24);
  else {
    drops.notIp++;
    fabric.pool.release(slot);
    return 0;
  }
  if (peer < 0) {
    drops.noRoute++;
    fabric.pool.release(slot);
    return 0;
  }
  slab.setPayloadLength(slot, length);
  slab.setPeerId(slot, peer);
  // Peer ids are assigned so that id % workerCount is the owning worker (see the control thread).
  const shard = peer % workerCount;
  if (fabric.toWorker[shard]!.ring.push(slot)) {
    touched[shard] = 1;
    return 1;
  }
  drops.ringFull++;
  fabric.pool.release(slot);
  return 0;
}

warmTunReaderPaths();
notifyControl({ kind: 'ready', thread: 'tunReader' });
try {
  while (running) {
    inbox.drain((command) => {
      if (command.kind === 'stop') running = false;
      else applyRouteChanges(routes, command.changes);
    });
    if (!running) break;
    const read = readBatch();
    // Reported before a wait rather than after it, so that a wake-up goes straight to the read.
    reporter.maybeReport(dropCounts, performance.now());
    if (read === 0 || drained) waitReadable(fd, POLL_TIMEOUT_MS, init.wakeFd);
    else if (read < 0) Atomics.wait(backpressure, 0, 0, BACKPRESSURE_WAIT_MS);
  }
} catch (error) {
  // EBADFD: the interface was deleted under us; the control thread sees it too and shuts down.
  const message = error instanceof SyscallError ? error.message : String(error);
  notifyControl({ kind: 'fatal', thread: 'tunReader', message });
}
reporter.maybeReport(dropCounts, performance.now(), true);
