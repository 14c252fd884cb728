// A packet worker thread: owns the peers of its shard (peer id % worker count) and moves their
// packets — its TUN queue → encrypt in place → sendmmsg, and its UDP socket → decrypt in place →
// TUN write — sleeping in poll(2) on both and its doorbell when nothing is left. A packet it reads
// for another worker's peer goes to that worker through a ring (the kernel spreads flows over the
// TUN queues, and a flow's replies follow the queue its packets were written on, so in the steady
// state a flow stays on its peer's worker). Handshakes and timers live on the control thread,
// which sends keys and commands here; counters go back through the shared peer table.
// With TUN offloads on, consecutive in-order TCP segments or equal-sized UDP datagrams of one flow
// are written to the TUN device as one super-packet (offload.ts), the rest one by one behind an
// empty virtio header.
import { applyWorkerCommand, type CommandEffects } from './commands.ts';
import { Datapath, DROPPED, STAGED, type DatagramSource } from './datapath.ts';
import { commandSignalIndex, type WorkerCommand } from '../control/messages.ts';
import { attachWorker, returnSlot, type InboundLink } from '../ring/fabric.ts';
import { SLOT_PLAINTEXT_OFFSET } from '../ring/layout.ts';
import { DEFAULT_SPIN_MICROS, waitForWork, waitForWorkOrReadable } from '../ring/doorbell.ts';
import { Slab, createSlabBuffer } from '../ring/slab.ts';
import { READABLE_ALSO_FD, READABLE_FD, createEventFd, libc } from '../io/libc.ts';
import { MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_MIN_SIZE } from '../wireguard/constants.ts';
import { aeadBackend } from '../wireguard/aead.ts';
import type { Endpoint } from '../wireguard/endpoint.ts';
import { DatagramMeta, UdpSocket, sourceMayBeStale, warmUdpPaths } from '../io/udp.ts';
import { storeReceivedAddresses } from './slot-addresses.ts';
import { CHANNEL_DATA_HEADER_BYTES, writeChannelDataHeader } from '../ice/turn.ts';
import { TUN_VNET_HDR_SIZE, tunWrite } from '../io/tun.ts';
import { Coalescer } from './offload.ts';
import { MAX_SEGMENTS_PER_READ, TunIntake } from './tun-intake.ts';
import { SyscallError } from '../errors.ts';
import { monotonicNow } from '../clock.ts';
import { CommandInbox, DropReporter, notifyControl, threadInit } from './thread-support.ts';
import { warmTunIntakePaths, warmWorkerPaths } from './warmup.ts';
import { idleWaitMs } from './keep-warm.ts';

const BATCH = 64;
/** After writing a UDP group of at least this many datagrams to the TUN, yield (flushCoalesced). */
const YIELD_AFTER_DATAGRAMS = 16;
const IDLE_WAIT_MS = 1_000;
/** A worker asks for a handshake for the same peer at most this often (the engine rate-limits too). */
const HANDSHAKE_REQUEST_INTERVAL_MS = 250;
/** Where a slot being encrypted comes from: OWN (this worker's slab), else the worker that read it. */
const OWN = -1;
/** How long to let the other workers drain their rings when they are too full to take another read. */
const BACKPRESSURE_WAIT_MS = 0.05;

const init = threadInit();
const end = attachWorker(init.fabric, init.workerIndex);
const workerCount = init.fabric.workerCount;
/**
 * The worker's own socket of the steered group (io/udp.ts, SteeredUdpGroup): the transport data
 * for its receiver indexes arrives here, and it sends here too (same port as the reader's).
 */
const socket = UdpSocket.attach(init.udpFd, { batchSize: BATCH });
/** The worker's own TUN queue: it reads there and writes there (so replies come back on it). */
const tunFd = init.tunFds[init.workerIndex]!;
const inbox = new CommandInbox<WorkerCommand>(init.commandSignals, commandSignalIndex('worker', init.workerIndex, workerCount));
const threadName = `worker${init.workerIndex}`;
const reporter = new DropReporter(threadName);
const ioDrops = { sendFailed: 0, sendBufferFull: 0, tunWriteFailed: 0, noFreeSlot: 0, ringFull: 0, notTransport: 0, truncated: 0 };
const vnetHeader = init.tunVnetHeader;
const coalescer = new Coalescer(init.tunUdpSegmentation);
let coalescedPackets = 0;
const stats = new Float64Array(init.fabric.peerTable);
const lastHandshakeRequest = new Map<number, number>();
let now = monotonicNow();
/**
 * When this worker last sent, delivered or passed on a data packet (keepalives and dropped packets,
 * such as the kernel's own IPv6 multicast with no peer to go to, do not count): see keep-warm.ts.
 */
let lastDataAt = Number.NEGATIVE_INFINITY;
let running = true;

const datapath = new Datapath(aeadBackend(), stats, init.mtu, {
  requestHandshake(peer) {
    const last = lastHandshakeRequest.get(peer) ?? Number.NEGATIVE_INFINITY;
    if (now - last < HANDSHAKE_REQUEST_INTERVAL_MS) return;
    lastHandshakeRequest.set(peer, now);
    notifyControl({ kind: 'requestHandshake', peer });
  },
  endpointChanged(peer, endpoint) {
    notifyControl({ kind: 'endpoint', peer, endpoint });
  },
  releaseStaged(handle) {
    stagedPackets.delete(handle);
  },
  sessionConfirmed(peer) {
    notifyControl({ kind: 'sessionConfirmed', peer });
    flushStaged(peer, false);
  },
});

// With ICE choosing the path (it may run through a relay), a packet's source must not move it.
datapath.roaming = init.roaming;

const effects: CommandEffects = {
  sendKeepalive(peer) {
    const slot = end.pool.allocate();
    if (slot < 0) {
      ioDrops.noFreeSlot++;
      return;
    }
    encryptSlot(peer, OWN, slot, 0);
  },
  sessionReady(peer, isInitiator) {
    flushStaged(peer, isInitiator);
  },
  stop() {
    running = false;
  },
};

// ---- sending ------------------------------------------------------------------------------------

const sendMeta = new DatagramMeta(BATCH);
const sendViews: Uint8Array[] = [];
const sendSources = new Int8Array(BATCH);
const sendSlots = new Int32Array(BATCH);
const sendPeers = new Int32Array(BATCH);
let sendCount = 0;

/**
 * Packets waiting for a session, copied out of their slots so that a peer stuck in handshakes
 * cannot pin a worker's slab (the datapath bounds how many each peer may keep).
 */
const stagedPackets = new Map<number, Uint8Array>();
let nextStagedHandle = 1;

function releaseSlot(source: number, slot: number): void {
  if (source === OWN) end.pool.release(slot);
  else returnSlot(end.fromWorkers[source]!, slot);
}

/** Encrypts the IP packet in `slot` for `peer` and queues the datagram, or stages/drops it. */
function encryptSlot(peer: number, source: number, slot: number, ipLength: number): void {
  const payload = (source === OWN ? end.pool.slab : end.fromWorkers[source]!.slab).payloadView(slot);
  const handle = nextStagedHandle;
  const length = datapath.encrypt(peer, handle, payload, ipLength, now);
  if (length === STAGED) {
    nextStagedHandle++;
    stagedPackets.set(handle, payload.slice(SLOT_PLAINTEXT_OFFSET, SLOT_PLAINTEXT_OFFSET + ipLength));
    releaseSlot(source, slot);
    return;
  }
  if (length === DROPPED) {
    releaseSlot(source, slot);
    return;
  }
  if (ipLength > 0) lastDataAt = now;
  const endpoint = datapath.endpointOf(peer)!;
  const datagramLength = endpoint.relayChannel ? wrapChannelData(payload, length, endpoint.relayChannel) : length;
  const i = sendCount++;
  sendViews[i] = payload;
  sendSources[i] = source;
  sendSlots[i] = slot;
  sendPeers[i] = peer;
  sendMeta.setLength(i, datagramLength);
  sendMeta.setRemote(i, endpoint.family, endpoint.address, endpoint.port);
  if (endpoint.localAddress === null) sendMeta.clearLocal(i);
  else sendMeta.setLocal(i, endpoint.family, endpoint.localAddress, endpoint.localIfindex);
  if (sendCount === BATCH) flushSends();
}

/**
 * Through our TURN allocation: moves the datagram up by four bytes and puts a ChannelData header in
 * front (RFC 8656 §12.4); the slot has room to spare past the largest datagram.
 */
function wrapChannelData(payload: Uint8Array, length: number, channel: number): number {
  payload.copyWithin(CHANNEL_DATA_HEADER_BYTES, 0, length);
  writeChannelDataHeader(payload, 0, channel, length);
  return CHANNEL_DATA_HEADER_BYTES + length;
}

function flushSends(): void {
  if (sendCount === 0) return;
  const count = sendCount;
  const done = socket.sendBatch(sendViews, sendMeta, count);
  for (let i = 0; i < done; i++) {
    const status = sendMeta.status(i);
    if (status !== 0 && sendMeta.localFamily(i) !== 0 && sourceMayBeStale(status)) {
      // The address the peer's packets arrived on is gone: forget it and let the kernel choose
      // (wireguard-go clears the sticky source the same way), then send this one again.
      forgetSource(sendPeers[i]!);
      sendMeta.clearLocal(i);
      socket.sendOne(sendViews[i]!, sendMeta, i);
    }
    if (sendMeta.status(i) !== 0) ioDrops.sendFailed++;
    releaseSlot(sendSources[i]!, sendSlots[i]!);
  }
  for (let i = done; i < count; i++) {
    ioDrops.sendBufferFull++;
    releaseSlot(sendSources[i]!, sendSlots[i]!);
  }
  sendCount = 0;
}

function forgetSource(peer: number): void {
  const endpoint = datapath.endpointOf(peer);
  if (endpoint === null || endpoint.localAddress === null) return;
  const cleared: Endpoint = { ...endpoint, localAddress: null, localIfindex: 0 };
  datapath.setEndpoint(peer, cleared);
  notifyControl({ kind: 'endpoint', peer, endpoint: cleared });
}

function flushStaged(peer: number, keepaliveIfNone: boolean): void {
  const handles = datapath.takeStaged(peer, now);
  if (handles.length === 0) {
    if (keepaliveIfNone) effects.sendKeepalive(peer);
    return;
  }
  for (const handle of handles) {
    const packet = stagedPackets.get(handle);
    stagedPackets.delete(handle);
    if (packet === undefined) continue;
    const slot = end.pool.allocate();
    if (slot < 0) {
      ioDrops.noFreeSlot++;
      continue;
    }
    end.pool.slab.payloadView(slot).set(packet, SLOT_PLAINTEXT_OFFSET);
    encryptSlot(peer, OWN, slot, packet.length);
  }
}

// ---- reading the TUN queue ----------------------------------------------------------------------

/** Workers this turn's reads pushed packets to: each one's doorbell rings once per turn. */
const touched = new Uint8Array(workerCount);

const intake = new TunIntake(tunFd, end.pool, datapath.routes, vnetHeader);

/** Encrypts the packets of the last read for this worker's peers and passes the others on. */
function dispatchRead(count: number): void {
  for (let k = 0; k < count; k++) {
    const slot = intake.slots[k]!;
    const peer = intake.peers[k]!;
    // Peer ids are assigned so that id % workerCount is the owning worker (see the control thread).
    const owner = peer % workerCount;
    if (owner === end.index) encryptSlot(peer, OWN, slot, intake.lengths[k]!);
    else if (end.toWorker[owner]!.ring.push(slot)) {
      touched[owner] = 1;
      lastDataAt = now;
    } else {
      ioDrops.ringFull++;
      end.pool.release(slot);
    }
  }
}

/** Whether the slab and every other worker's ring can take the packets of one more read. */
function roomForRead(): boolean {
  if (end.pool.available <= MAX_SEGMENTS_PER_READ && end.pool.reclaim() === 0) return false;
  if (end.pool.available <= MAX_SEGMENTS_PER_READ) return false;
  for (let k = 0; k < workerCount; k++) {
    const link = end.toWorker[k];
    if (link !== null && link.ring.freeSpace() < MAX_SEGMENTS_PER_READ) return false;
  }
  return true;
}

/** How the last readTun ended: the queue was empty, or there was no room for another read. */
let tunDrained = false;
let tunBlocked = false;
/**
 * The last readTun stopped at its batch limit: the queue is busy. When it is not, the first packet
 * of a turn leaves at once rather than after the read that finds the queue empty: at light traffic
 * (a ping, a request) someone waits on that one packet, and under load batches stay whole.
 */
let tunBusy = false;

/**
 * Reads from the TUN queue until about BATCH packets came (a super-packet brings up to 64 at once),
 * so that a turn also gets to the socket soon; returns how many reads brought something.
 */
function readTun(): number {
  tunDrained = false;
  tunBlocked = false;
  let reads = 0;
  let packets = 0;
  while (reads < BATCH && packets < BATCH) {
    if (!roomForRead()) {
      tunBlocked = true;
      break;
    }
    const delivered = intake.readOnce();
    if (delivered < 0) {
      tunDrained = true;
      break;
    }
    dispatchRead(delivered);
    if (reads === 0 && !tunBusy) flushSends();
    reads++;
    packets += delivered;
  }
  tunBusy = !tunDrained && !tunBlocked;
  for (let k = 0; k < workerCount; k++) {
    if (touched[k] === 0) continue;
    touched[k] = 0;
    end.toWorker[k]!.doorbell.ring();
  }
  return reads;
}

// ---- receiving ----------------------------------------------------------------------------------

/**
 * The datagram in the slot being decrypted, seen as a DatagramSource: one reusable object per slab
 * (the UDP reader's, and the worker's own for direct receives). Its slab never changes: a field
 * that took a second value would make V8 drop the optimized code that relied on it, on the first
 * real packet.
 */
class SlotSource implements DatagramSource {
  readonly slab: Slab;
  slot = 0;

  constructor(slab: Slab) {
    this.slab = slab;
  }

  matches(endpoint: Endpoint | null): boolean {
    if (endpoint === null) return false;
    const slab = this.slab;
    const slot = this.slot;
    if (slab.remoteFamily(slot) !== endpoint.family || slab.remotePort(slot) !== endpoint.port) return false;
    const remote = slab.remoteAddressView(slot);
    const address = endpoint.address;
    for (let k = 0; k < address.length; k++) if (remote[k] !== address[k]) return false;
    const local = slab.localAddressView(slot);
    const known = endpoint.localAddress;
    if (known === null) return isZero(local);
    for (let k = 0; k < known.length; k++) if (local[k] !== known[k]) return false;
    return true;
  }

  toEndpoint(): Endpoint {
    const slab = this.slab;
    const slot = this.slot;
    const family = slab.remoteFamily(slot) === 4 ? 4 : 6;
    const size = family === 4 ? 4 : 16;
    const local = slab.localAddressView(slot);
    return {
      family,
      address: slab.remoteAddressView(slot).slice(0, size),
      port: slab.remotePort(slot),
      localAddress: isZero(local) ? null : local.slice(0, size),
      localIfindex: slab.localIfindex(slot),
    };
  }
}

function isZero(bytes: Uint8Array): boolean {
  for (let k = 0; k < bytes.length; k++) if (bytes[k] !== 0) return false;
  return true;
}

/**
 * Private slots for direct receives: each batch is decrypted and written before the next receive,
 * so the same BATCH slots are posted again every time (the coalescer copies what it keeps).
 */
const directSlab = new Slab(createSlabBuffer(BATCH));
const relayedSource = new SlotSource(end.fromUdp.slab);
const directSource = new SlotSource(directSlab);
const peerOut = new Int32Array(1);

function decryptSlot(link: InboundLink, slot: number): void {
  decryptInto(relayedSource, slot);
  returnSlot(link, slot);
}

/** Decrypts the transport message in `slot` of `source`'s slab and writes (or coalesces) it to the TUN. */
function decryptInto(source: SlotSource, slot: number): void {
  const slab = source.slab;
  const payload = slab.payloadView(slot);
  source.slot = slot;
  const length = datapath.decrypt(payload, slab.payloadLength(slot), source, now, peerOut);
  if (length > 0) {
    lastDataAt = now;
    if (!vnetHeader) writeToTun(payload, SLOT_PLAINTEXT_OFFSET, length, 1);
    else if (coalescer.add(payload, SLOT_PLAINTEXT_OFFSET, length)) coalescedPackets++;
    else {
      flushCoalesced();
      if (coalescer.add(payload, SLOT_PLAINTEXT_OFFSET, length)) coalescedPackets++;
      else {
        // Not TCP or UDP that can be coalesced: written alone, after an all-zero virtio header (no
        // offload, checksum complete) laid over the spent transport header.
        const at = SLOT_PLAINTEXT_OFFSET - TUN_VNET_HDR_SIZE;
        payload.fill(0, at, SLOT_PLAINTEXT_OFFSET);
        writeToTun(payload, at, length + TUN_VNET_HDR_SIZE, 1);
      }
    }
  }
}

// ---- receiving on the worker's own socket ------------------------------------------------------

const directViews: Uint8Array[] = Array.from({ length: BATCH }, (_, k) => directSlab.payloadView(k));
const directMeta = new DatagramMeta(BATCH);
const eventFd = createEventFd();
end.doorbell.useEventFd(eventFd);

/** Receives one batch on the worker's socket and decrypts it; returns how many datagrams. */
function receiveDirect(): number {
  const received = socket.recvBatch(directViews, directMeta, BATCH);
  for (let i = 0; i < received; i++) {
    const length = directMeta.length(i);
    if (directMeta.status(i) !== 0) {
      ioDrops.truncated++;
      continue;
    }
    const payload = directViews[i]!;
    // The steering program sends only transport messages here, but while a group forms the kernel
    // may hash anything to any socket: check as the reader would (whitepaper §5.4.6).
    if (length < MESSAGE_TRANSPORT_MIN_SIZE || payload[0] !== MESSAGE_TRANSPORT || payload[1] !== 0 || payload[2] !== 0 || payload[3] !== 0) {
      ioDrops.notTransport++;
      continue;
    }
    directSlab.setPayloadLength(i, length);
    storeReceivedAddresses(directMeta, i, directSlab, i);
    decryptInto(directSource, i);
  }
  return received;
}

/** Writes the open group of TCP segments or UDP datagrams, if any, as one super-packet. */
function flushCoalesced(): void {
  if (!coalescer.pending) return;
  const datagrams = coalescer.datagrams;
  const length = coalescer.finish();
  writeToTun(coalescer.buffer, 0, length, coalescedPackets);
  coalescedPackets = 0;
  // The kernel cuts the group into datagrams and queues them on the receiving socket inside this
  // write, and wakes the receiver on this CPU expecting us to sleep soon. Under load we do not:
  // the next group lands before the receiver ran, and a default 208 KiB receive buffer holds about
  // one full group. Giving up the CPU here lets it read first (UDP only: TCP's flow control keeps
  // a slow reader from losing anything, and there the yield measured slightly slower).
  if (datagrams >= YIELD_AFTER_DATAGRAMS) libc.sched_yield();
}

function writeToTun(view: Uint8Array, offset: number, length: number, packets: number): void {
  try {
    if (tunWrite(tunFd, view, offset, length) === 0) ioDrops.tunWriteFailed += packets;
  } catch {
    // EIO while the link is down, EINVAL for a packet the kernel refuses: count and go on.
    ioDrops.tunWriteFailed += packets;
  }
}

// ---- the loop -----------------------------------------------------------------------------------

const poppedSlots = new Uint32Array(BATCH);
const allDrops = (): Record<string, number> => ({ ...datapath.drops, ...intake.drops, ...ioDrops });
const hasWork = (): boolean => end.hasWork() || inbox.pending();

function applyCommand(command: WorkerCommand): void {
  applyWorkerCommand(datapath, command, effects);
}

warmWorkerPaths(aeadBackend(), init.mtu, directSource, monotonicNow());
warmTunIntakePaths();
warmUdpPaths();
notifyControl({ kind: 'ready', thread: threadName });
/** The last turn that found work found some of it on a ring (see the wait below). */
let ringsBusy = false;
/**
 * What the last sleep in poll(2) found ready, and whether this turn follows such a sleep. A turn
 * after a sleep (light traffic: the worker sleeps between packets) reads only the descriptors that
 * are ready, and once it has drained what it read it goes back to poll(2), which returns at once if
 * more came, instead of turning twice more through reads that find nothing. Busy turns, which do
 * not follow a sleep, read everything until empty. Measured with iperf3 UDP through a ztgate pair
 * (perf stat, two runs): 13–28 % fewer syscalls at 100 Mbit/s and 8–40 % fewer at 300 Mbit/s; CPU
 * per GB and ping RTT unchanged within the noise.
 */
let afterSleep = false;
let tunReady = true;
let socketReady = true;
/**
 * One turn of the loop: commands, the TUN queue, the rings, the socket, then a sleep if nothing
 * came. A function rather than the body of a loop at the top level of this module, so that V8
 * compiles it as it does any hot function instead of running it as baseline code until on-stack
 * replacement.
 */
function turn(): void {
  now = monotonicNow();
  inbox.drain(applyCommand);
  end.pool.reclaim();
  let outbound = 0;
  if (tunReady) outbound = readTun();
  else {
    tunDrained = true;
    tunBlocked = false;
  }
  let ringEntries = 0;
  let ringsDrained = true;
  for (let j = 0; j < workerCount; j++) {
    const link = end.fromWorkers[j];
    if (link === null) continue;
    const popped = link.ring.popBatch(poppedSlots);
    for (let i = 0; i < popped; i++) {
      const slot = poppedSlots[i]!;
      encryptSlot(link.slab.peerId(slot), j, slot, link.slab.payloadLength(slot));
    }
    outbound += popped;
    ringEntries += popped;
    if (popped === BATCH) ringsDrained = false;
  }
  flushSends();
  let inbound = end.fromUdp.ring.popBatch(poppedSlots);
  for (let i = 0; i < inbound; i++) decryptSlot(end.fromUdp, poppedSlots[i]!);
  ringEntries += inbound;
  if (inbound === BATCH) ringsDrained = false;
  const received = socketReady ? receiveDirect() : 0;
  inbound += received;
  const light = afterSleep && tunDrained && ringsDrained && received < BATCH;
  // An open TCP group stays open while datagrams keep coming (the rest of a sender's GSO run may
  // be one receive behind); it is written once a turn finds nothing more, before any sleep.
  if (inbound === 0 || light) flushCoalesced();
  flushSends();
  reporter.maybeReport(allDrops, now);
  if (light && inbound !== 0) {
    // What this turn wrote to the TUN may have been answered already (the kernel runs a local
    // service's reply, a ping's for one, inside the write): read the queue before sleeping.
    tunReady = true;
    socketReady = false;
    return;
  }
  if ((outbound !== 0 || inbound !== 0) && !light) {
    ringsBusy = ringEntries !== 0;
    afterSleep = false;
    tunReady = true;
    socketReady = true;
    return;
  }
  if (light) ringsBusy = ringEntries !== 0;
  // Nothing came (or, after a sleep, all that came is done): sleep until a datagram, a TUN packet,
  // a ring entry or a command arrives; while the other workers' rings are too full to take another
  // read, only briefly, on the rings. Spinning first pays only when rings bring work (it saves the
  // producer a wake-up call); datagrams and TUN packets are seen by poll(2) alone, so otherwise the
  // spin only burns CPU that the other threads on the machine could use.
  if (tunBlocked) {
    waitForWork(end.doorbell, BACKPRESSURE_WAIT_MS, hasWork);
    afterSleep = false;
    tunReady = true;
    socketReady = true;
  } else {
    const timeoutMs = idleWaitMs(now, lastDataAt, init.keepWarmMs, IDLE_WAIT_MS);
    const ready = waitForWorkOrReadable(end.doorbell, eventFd, socket.fd, tunFd, timeoutMs, hasWork, ringsBusy ? DEFAULT_SPIN_MICROS : 0);
    afterSleep = true;
    // A keep-warm tick that ended with nothing ready still turns through both reads.
    const warmTick = ready === 0 && timeoutMs < IDLE_WAIT_MS;
    socketReady = warmTick || (ready & READABLE_FD) !== 0;
    tunReady = warmTick || (ready & READABLE_ALSO_FD) !== 0;
  }
}

try {
  while (running) turn();
} catch (error) {
  // EBADFD: the interface was deleted under us; the control thread sees it too and shuts down.
  // Anything else is a bug: the thread fails and the control thread logs it with its stack.
  if (!(error instanceof SyscallError)) throw error;
  notifyControl({ kind: 'fatal', thread: threadName, message: error.message });
}
flushCoalesced();
flushSends();
reporter.maybeReport(allDrops, monotonicNow(), true);
