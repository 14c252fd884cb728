// The UDP reader thread: receives, in batches straight into slots of its slab, what the steered
// socket group (io/udp.ts) gives the reader's socket — everything but the transport data, which
// goes to its worker's socket — and demultiplexes it by its first byte (ARCHITECTURE.md,
// "Demultiplexing one UDP socket"): transport data (type 4, unwrapped from TURN ChannelData, or
// arriving while the group forms) goes to the worker that owns its receiver index, handshake
// messages (types 1–3) to the control thread, anything else is dropped and counted.
import { commandSignalIndex, type UdpReaderCommand } from '../control/messages.ts';
import { attachUdpReader, type OutboundLink } from '../ring/fabric.ts';
import {
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_TRANSPORT,
  MESSAGE_TRANSPORT_MIN_SIZE,
} from '../wireguard/constants.ts';
import { shardOfIndex } from '../wireguard/indexes.ts';
import { transportReceiverIndex } from '../wireguard/transport.ts';
import { CHANNEL_DATA_HEADER_BYTES } from '../ice/turn.ts';
import { STUN_MAGIC_COOKIE } from '../ice/stun.ts';
import { Buffer } from 'node:buffer';
import { waitReadable } from '../io/libc.ts';
import { DatagramMeta, UdpSocket, warmUdpPaths } from '../io/udp.ts';
import { storeReceivedAddresses } from './slot-addresses.ts';
import { CommandInbox, DropReporter, notifyControl, threadInit } from './thread-support.ts';
import { warmUdpReaderPaths } from './warmup.ts';

const BATCH = 64;
/** The kernel coalesces at most 64 datagrams into one UDP GRO message (UDP_GRO_CNT_MAX). */
const MAX_GRO_SEGMENTS = 64;
/** How long to let the workers drain their rings when one is too full to take another batch. */
const BACKPRESSURE_WAIT_MS = 0.05;
/** A poll(2) wakes on commands through the wake eventfd; the timeout is only a safety net. */
const POLL_TIMEOUT_MS = 1_000;

const init = threadInit();
const fabric = attachUdpReader(init.fabric);
const workerCount = init.fabric.workerCount;
const socket = UdpSocket.attach(init.udpFd, { batchSize: BATCH });
const inbox = new CommandInbox<UdpReaderCommand>(init.commandSignals, commandSignalIndex('udpReader', 0, workerCount));
const drops = { notWireGuard: 0, badChannelData: 0, truncated: 0, noFreeSlot: 0, ringFull: 0, badSegments: 0 };
const reporter = new DropReporter('udpReader');
const dropCounts = (): typeof drops => drops;
const slab = fabric.pool.slab;
/**
 * The whole slab memory, so segments are copied between slots without a view per datagram; a
 * Buffer, whose copy is a memmove (TypedArray copyWithin on SharedArrayBuffer memory is V8's
 * relaxed-atomic copy, several times slower).
 */
const slabBytes = Buffer.from(slab.payloadView(0).buffer);
const meta = new DatagramMeta(BATCH);
/**
 * The slots posted to the next recvmmsg, at positions 0 .. armedCount - 1. They stay posted from
 * call to call (a receive that finds nothing costs no slot traffic, and the socket keeps its wired
 * headers); only the positions a receive consumed get fresh slots.
 */
const armedSlots = new Int32Array(BATCH);
const armedViews: Uint8Array[] = [];
let armedCount = 0;
const backpressure = new Int32Array(new SharedArrayBuffer(4));
const touched = new Uint8Array(workerCount + 1);
let running = true;
/**
 * Slots whose ring was full, oldest first, with their targets. The reader asks for no more
 * messages than the rings can take, but a GRO message holds several datagrams: the surplus waits
 * here (in order: once one waits, later slots queue behind it) and the next receive waits for it.
 */
const pendingSlots = new Int32Array(BATCH * MAX_GRO_SEGMENTS);
const pendingTargets = new Int32Array(BATCH * MAX_GRO_SEGMENTS);
let pendingCount = 0;
/**
 * A received batch whose dispatch stopped because the pool ran out of slots while splitting a GRO
 * message: messages resumeAt .. batchEnd - 1 still wait in their armed slots (and their meta
 * entries, which only the next receive overwrites), the first of them from datagram
 * resumeSegment on. Nothing is received until it is done, so no datagram is lost or overtaken.
 */
let batchEnd = 0;
let resumeAt = 0;
let resumeSegment = 0;
/**
 * ICE mode (set by the control thread's `relays` command): STUN goes to the control thread, and
 * ChannelData from these TURN servers that carries WireGuard data is unwrapped here.
 */
let iceMode = false;
let relays: ReadonlyArray<{ family: number; address: Uint8Array; port: number }> = [];

function linkOf(target: number): OutboundLink {
  return target === workerCount ? fabric.toControl : fabric.toWorker[target]!;
}

function route(link: OutboundLink, slot: number, target: number): void {
  if (pendingCount === 0 && link.ring.push(slot)) {
    touched[target] = 1;
    return;
  }
  if (pendingCount === pendingSlots.length) {
    drops.ringFull++;
    fabric.pool.release(slot);
    return;
  }
  pendingSlots[pendingCount] = slot;
  pendingTargets[pendingCount] = target;
  pendingCount++;
}

/** Pushes waiting slots in order until a ring is full; returns true when none wait any more. */
function flushPending(): boolean {
  let done = 0;
  while (done < pendingCount && linkOf(pendingTargets[done]!).ring.push(pendingSlots[done]!)) {
    touched[pendingTargets[done]!] = 1;
    done++;
  }
  if (done > 0) {
    pendingSlots.copyWithin(0, done, pendingCount);
    pendingTargets.copyWithin(0, done, pendingCount);
    pendingCount -= done;
    ringTouched();
  }
  return pendingCount === 0;
}

function ringTouched(): void {
  for (let target = 0; target <= workerCount; target++) {
    if (touched[target] === 0) continue;
    touched[target] = 0;
    linkOf(target).doorbell.ring();
  }
}

function post(at: number, slot: number): void {
  armedSlots[at] = slot;
  armedViews[at] = slab.payloadView(slot);
}

/**
 * After a receive consumed positions 0 .. consumed - 1: posts fresh slots there (the other
 * positions keep theirs), then tops the batch up. When the pool runs short, the still-posted tail
 * moves down so that the posted slots stay contiguous.
 */
function rearm(consumed: number): void {
  let filled = 0;
  for (let slot = 0; filled < consumed && (slot = fabric.pool.allocate()) >= 0; filled++) post(filled, slot);
  if (filled < consumed) {
    for (let from = consumed; from < armedCount; from++) post(filled + from - consumed, armedSlots[from]!);
    armedCount = filled + armedCount - consumed;
  }
  for (let slot = 0; armedCount < BATCH && (slot = fabric.pool.allocate()) >= 0; armedCount++) post(armedCount, slot);
}

/**
 * How many datagrams every worker can take now. The reader receives no more than that, so a slow
 * worker leaves datagrams in the socket's receive buffer (7 MiB) instead of having them dropped
 * here, as wireguard-go's reader blocks on a full queue.
 */
function workerRoom(): number {
  let room = BATCH;
  for (let k = 0; k < workerCount; k++) room = Math.min(room, fabric.toWorker[k]!.ring.freeSpace());
  return room;
}

/** True when the last receive got fewer datagrams than it asked for: the socket is drained. */
let drained = false;

/** Receives and dispatches one batch; returns how many datagrams, or -1 when nothing could be posted. */
function receiveBatch(): number {
  // Waiting slots go first (they are the oldest, and they hold slots the batch may be waiting for).
  const flushed = pendingCount === 0 || flushPending();
  if (batchEnd > 0 && !finishBatch()) return -1;
  if (!flushed || pendingCount > 0) return -1;
  if (armedCount < BATCH) {
    fabric.pool.reclaim();
    rearm(0);
  }
  if (armedCount === 0) {
    drops.noFreeSlot++;
    return -1;
  }
  const asked = Math.min(workerRoom(), armedCount);
  if (asked === 0) return -1;
  const received = socket.recvBatch(armedViews, meta, asked);
  drained = received < asked;
  if (received === 0) return 0;
  batchEnd = received;
  resumeAt = 0;
  resumeSegment = 0;
  // Stalled for slots: come back soon rather than wait for the socket (it may stay quiet).
  return finishBatch() ? received : -1;
}

/** Dispatches the rest of the received batch; false when it had to stop for want of slots. */
function finishBatch(): boolean {
  for (; resumeAt < batchEnd; resumeAt++) {
    if (!dispatch(resumeAt, armedSlots[resumeAt]!)) {
      ringTouched();
      return false;
    }
    resumeSegment = 0;
  }
  ringTouched();
  fabric.pool.reclaim();
  rearm(batchEnd);
  batchEnd = 0;
  return true;
}

/** Dispatches received message i; false when a GRO message could not be split all the way. */
function dispatch(i: number, slot: number): boolean {
  const length = meta.length(i);
  if (meta.status(i) !== 0) {
    drops.truncated++;
    fabric.pool.release(slot);
    return true;
  }
  storeReceivedAddresses(meta, i, slab, slot);
  const segmentSize = meta.segmentSize(i);
  if (segmentSize > 0) return dispatchSegments(slot, i, length, segmentSize);
  dispatchDatagram(slot, length);
  return true;
}

function dispatchDatagram(slot: number, length: number): void {
  slab.setPayloadLength(slot, length);
  const payload = slab.payloadView(slot);
  if (iceMode && !demuxIce(slot, payload, length)) return;
  dispatchWireGuard(slot, payload, slab.payloadLength(slot));
}

/**
 * A UDP GRO message (udp(7)): datagrams of `size` bytes back to back, the last one possibly
 * shorter, all from the same source to the same local address. Each but the last is copied into
 * a slot of its own and demultiplexed as if it had arrived alone, in order; the last one then
 * moves to the start of the message's slot and goes the same way (the slot keeps the bytes not
 * yet copied until then). Returns false, with resumeSegment set, when the pool ran dry.
 */
function dispatchSegments(slot: number, i: number, length: number, size: number): boolean {
  const base = slab.payloadView(slot).byteOffset;
  let segment = resumeSegment;
  for (; (segment + 1) * size < length; segment++) {
    if (segment + 1 >= MAX_GRO_SEGMENTS) {
      // More than the kernel ever coalesces: not trusted, the rest is dropped.
      drops.badSegments += Math.ceil(length / size) - segment - 1;
      break;
    }
    const copy = fabric.pool.allocate();
    if (copy < 0) {
      resumeSegment = segment;
      return false;
    }
    const start = base + segment * size;
    slabBytes.copy(slabBytes, slab.payloadView(copy).byteOffset, start, start + size);
    storeReceivedAddresses(meta, i, slab, copy);
    dispatchDatagram(copy, size);
  }
  const lastStart = segment * size;
  const lastLength = Math.min(size, length - lastStart);
  slabBytes.copy(slabBytes, base, base + lastStart, base + lastStart + lastLength);
  dispatchDatagram(slot, lastLength);
  return true;
}

/**
 * ICE mode's share of the demultiplexing (ARCHITECTURE.md; RFC 7983): ChannelData from a relay
 * carrying a transport message is unwrapped in place and goes on as WireGuard; other ChannelData and
 * STUN go to the control thread (TURN client, ICE agents). Returns true to continue with WireGuard.
 */
function demuxIce(slot: number, payload: Uint8Array, length: number): boolean {
  const first = length >= 4 ? payload[0]! : 0xff;
  if (first >= 0x40 && first <= 0x4f && fromRelay(slot)) {
    const inner = (payload[2]! << 8) | payload[3]!;
    if (CHANNEL_DATA_HEADER_BYTES + inner > length) {
      drops.badChannelData++;
      fabric.pool.release(slot);
      return false;
    }
    if (inner >= MESSAGE_TRANSPORT_MIN_SIZE && payload[CHANNEL_DATA_HEADER_BYTES] === MESSAGE_TRANSPORT) {
      payload.copyWithin(0, CHANNEL_DATA_HEADER_BYTES, CHANNEL_DATA_HEADER_BYTES + inner);
      slab.setPayloadLength(slot, inner);
      return true;
    }
    route(fabric.toControl, slot, workerCount);
    return false;
  }
  if (first < 4 && length >= 20 && readU32BE(payload, 4) === STUN_MAGIC_COOKIE) {
    route(fabric.toControl, slot, workerCount);
    return false;
  }
  return true;
}

function fromRelay(slot: number): boolean {
  const family = slab.remoteFamily(slot);
  const port = slab.remotePort(slot);
  const remote = slab.remoteAddressView(slot);
  for (const relay of relays) {
    if (relay.family !== family || relay.port !== port) continue;
    let same = true;
    for (let k = 0; k < relay.address.length; k++) if (remote[k] !== relay.address[k]) same = false;
    if (same) return true;
  }
  return false;
}

function readU32BE(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

function dispatchWireGuard(slot: number, payload: Uint8Array, length: number): void {
  const type = length >= 4 ? payload[0]! : 0;
  // Reserved bytes must be zero in every WireGuard message (whitepaper §5.4).
  const wellFormed = length >= 4 && payload[1] === 0 && payload[2] === 0 && payload[3] === 0;
  if (wellFormed && type === MESSAGE_TRANSPORT && length >= MESSAGE_TRANSPORT_MIN_SIZE) {
    const shard = shardOfIndex(transportReceiverIndex(payload), workerCount);
    route(fabric.toWorker[shard]!, slot, shard);
  } else if (wellFormed && type >= MESSAGE_INITIATION && type <= MESSAGE_COOKIE_REPLY) {
    route(fabric.toControl, slot, workerCount);
  } else {
    drops.notWireGuard++;
    fabric.pool.release(slot);
  }
}

warmUdpReaderPaths(workerCount);
warmUdpPaths();
notifyControl({ kind: 'ready', thread: 'udpReader' });
while (running) {
  inbox.drain((command) => {
    if (command.kind === 'stop') running = false;
    else {
      iceMode = true;
      relays = command.servers;
    }
  });
  if (!running) break;
  const received = receiveBatch();
  // Reported before a wait rather than after it, so that a wake-up goes straight to the receive.
  reporter.maybeReport(dropCounts, performance.now());
  // A short batch means the socket is drained: poll instead of asking it again.
  if (received < 0) Atomics.wait(backpressure, 0, 0, BACKPRESSURE_WAIT_MS);
  else if (drained) waitReadable(socket.fd, POLL_TIMEOUT_MS, init.wakeFd);
}
reporter.maybeReport(dropCounts, performance.now(), true);
