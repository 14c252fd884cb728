// Warm-up of each packet thread's hot paths before it reports ready. A fresh thread runs its
// per-packet functions in V8's interpreter until they have run often enough to be compiled, so the
// first seconds of traffic (a ping, a handshake's first data) paid hundreds of µs per wake-up. Here
// the same functions and classes run a few thousand times on throwaway objects — a Datapath with a
// peer of its own and a random keypair, its own AllowedIps, Slab, DatagramMeta and Coalescer,
// its own slot pool, rings and doorbell —
// so nothing touches a real peer, counter, ring, slot or socket; the only syscalls are on a
// scratch socket pair standing in for the TUN queue (warmTunIntakePaths).
//
// The scratch objects must have the shapes (V8 maps) and field representations the real ones will
// have, or the optimized code deoptimizes on the first real packets ("wrong map", "not a Smi",
// "insufficient type feedback"), just when a ping is waiting on it: keypair material arrives by
// postMessage and its indexes are random u32s (half of them doubles to V8), a worker's pool has
// return rings from the other workers or none (one worker), and producers do find their consumer
// asleep.
import type { AeadBackend } from '../wireguard/aead.ts';
import { AllowedIps } from '../wireguard/allowedips.ts';
import { shardOfIndex } from '../wireguard/indexes.ts';
import { transportReceiverIndex } from '../wireguard/transport.ts';
import { DatagramMeta } from '../io/udp.ts';
import { storeReceivedAddresses } from './slot-addresses.ts';
import { PEER_RECORD_F64S, SLOT_PLAINTEXT_OFFSET } from '../ring/layout.ts';
import { STAGED_QUEUE_SIZE } from '../wireguard/constants.ts';
import { DEFAULT_SPIN_MICROS, Doorbell, waitForWork } from '../ring/doorbell.ts';
import { Ring } from '../ring/ring.ts';
import { Slab, SlotPool } from '../ring/slab.ts';
import { Datapath, type DatagramSource } from './datapath.ts';
import { Coalescer } from './offload.ts';
import { TunIntake } from './tun-intake.ts';
import { AF_UNIX, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, libc, throwErrno } from '../io/libc.ts';
import { TUN_VNET_HDR_SIZE } from '../io/tun.ts';

/** Enough calls for V8 to tier the per-packet functions up to optimized code (Maglev/Turbofan). */
export const WARMUP_ROUNDS = 3_000;

/** Addresses from the documentation ranges (RFC 5737, RFC 3849): they exist only in the scratch objects. */
const V4_SOURCE = Uint8Array.of(192, 0, 2, 1);
const V4_DESTINATION = Uint8Array.of(192, 0, 2, 2);
const V6_SOURCE = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
const V6_DESTINATION = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2);
/** A ping's IP packet and a full-size one, so both small and large AEAD calls get compiled. */
const PACKET_SIZES = [84, 1420] as const;
/** A few rounds of staging are enough for the rarely-taken path before a peer's first handshake. */
const STAGING_ROUNDS = 64;
const SCRATCH_PEER = 0;
/** At or above 2^31, like half of the random indexes a handshake picks: a double to V8, not a Smi. */
const SCRATCH_INDEX = 0xc0de5eed;
const SCRATCH_PORT = 51820;

const noEffects = {
  requestHandshake(): void {},
  endpointChanged(): void {},
  releaseStaged(): void {},
  sessionConfirmed(): void {},
};

/** Writes a minimal IPv4 or IPv6 packet of `length` bytes (ICMP / no next header) at `at`. */
function writeIpPacket(bytes: Uint8Array, at: number, length: number, version: 4 | 6): void {
  bytes.fill(0, at, at + length);
  if (version === 4) {
    bytes[at] = 0x45;
    bytes[at + 2] = length >> 8;
    bytes[at + 3] = length & 0xff;
    bytes[at + 8] = 64;
    bytes[at + 9] = 1;
    bytes.set(V4_SOURCE, at + 12);
    bytes.set(V4_DESTINATION, at + 16);
  } else {
    bytes[at] = 0x60;
    bytes[at + 4] = (length - 40) >> 8;
    bytes[at + 5] = (length - 40) & 0xff;
    bytes[at + 6] = 59;
    bytes[at + 7] = 64;
    bytes.set(V6_SOURCE, at + 8);
    bytes.set(V6_DESTINATION, at + 24);
  }
}

/**
 * A packet worker's paths: slot traffic (warmRingPaths), encrypt an IP packet, fill the sendmmsg metadata, decrypt the datagram
 * back (index, replay, open, inner length, source check), and offer it to a coalescer. The
 * keypair's receiver index is its own sender index, so each datagram decrypts on the same
 * Datapath. `source` is the worker's own DatagramSource (only read, so its call sites stay
 * monomorphic). Returns how many round trips gave the packet back intact (all of them, or a bug).
 */
export function warmWorkerPaths(aead: AeadBackend, mtu: number, source: DatagramSource, now: number,
  rounds: number = WARMUP_ROUNDS): number {
  warmRingPaths(rounds);
  const stats = new Float64Array(new SharedArrayBuffer(PEER_RECORD_F64S * Float64Array.BYTES_PER_ELEMENT));
  const datapath = new Datapath(aead, stats, mtu, noEffects);
  const key = crypto.getRandomValues(new Uint8Array(32));
  datapath.addPeer(SCRATCH_PEER);
  datapath.setEndpoint(SCRATCH_PEER, source.toEndpoint());
  const slab = Slab.create(1);
  const payload = slab.payloadView(0);
  // A peer's first packets wait for its handshake: the staging path runs for real once per peer.
  for (let round = 0; round < STAGING_ROUNDS; round++) {
    writeIpPacket(payload, SLOT_PLAINTEXT_OFFSET, PACKET_SIZES[0], 4);
    datapath.encrypt(SCRATCH_PEER, round, payload, PACKET_SIZES[0], now);
    if (round % STAGED_QUEUE_SIZE === STAGED_QUEUE_SIZE - 1) datapath.clearStaged(SCRATCH_PEER);
  }
  datapath.clearStaged(SCRATCH_PEER);
  // The field order of the engine's installKeypair event, through the same structured clone as postMessage.
  datapath.installKeypair(SCRATCH_PEER, structuredClone({
    localIndex: SCRATCH_INDEX, remoteIndex: SCRATCH_INDEX, sendKey: key, receiveKey: key, isInitiator: true, createdAt: now,
  }));
  datapath.routes.insert(V4_SOURCE, 32, SCRATCH_PEER);
  datapath.routes.insert(V6_SOURCE, 128, SCRATCH_PEER);
  const meta = new DatagramMeta(1);
  const received = Slab.create(1);
  const coalescer = new Coalescer(true);
  const peerOut = new Int32Array(1);
  let intact = 0;
  for (let round = 0; round < rounds; round++) {
    const ipLength = PACKET_SIZES[round % PACKET_SIZES.length]!;
    const version = (round >> 1) % 2 === 0 ? 4 : 6;
    writeIpPacket(payload, SLOT_PLAINTEXT_OFFSET, ipLength, version);
    const datagramLength = datapath.encrypt(SCRATCH_PEER, 0, payload, ipLength, now);
    if (datagramLength <= 0) continue;
    const endpoint = datapath.endpointOf(SCRATCH_PEER)!;
    meta.setLength(0, datagramLength);
    meta.setRemote(0, endpoint.family, endpoint.address, endpoint.port);
    // Datagrams arrive with a local address (pktinfo) or, rarely, without: both branches run.
    if ((round & 1) === 0) meta.clearLocal(0);
    else meta.setLocal(0, 4, V4_DESTINATION, 1);
    storeReceivedAddresses(meta, 0, received, 0);
    const length = datapath.decrypt(payload, datagramLength, source, now, peerOut);
    if (length === ipLength && payload[SLOT_PLAINTEXT_OFFSET] === (version === 4 ? 0x45 : 0x60)) intact++;
    if (length > 0 && !coalescer.add(payload, SLOT_PLAINTEXT_OFFSET, length) && coalescer.pending) coalescer.finish();
  }
  warmWaitPaths(rounds);
  return intact;
}

/**
 * A worker's idle wait on a scratch doorbell, ending each way it can: work found while spinning,
 * work found after announcing sleep, or a wait that times out at once (a zero timeout: no sleep).
 * Returns how many ended as planned.
 */
export function warmWaitPaths(rounds: number = WARMUP_ROUNDS): number {
  const doorbell = Doorbell.create();
  let looksUntilWork = 0;
  const hasWork = (): boolean => looksUntilWork-- === 0;
  let planned = 0;
  for (let round = 0; round < rounds; round++) {
    const ending = round % 3;
    // 0: found on the fourth look of a spin; 1: no spin, found on the look after announcing sleep; 2: never found.
    looksUntilWork = ending === 0 ? 3 : ending === 1 ? 0 : -1;
    const reason = waitForWork(doorbell, 0, hasWork, ending === 0 ? DEFAULT_SPIN_MICROS : 0);
    if (reason === (ending === 2 ? 'timed-out' : 'work')) planned++;
  }
  return planned;
}

/**
 * A worker's TUN intake (tun-intake.ts), after warmWorkerPaths (which warms the slot traffic): IPv4
 * and IPv6 packets read with the real TunIntake from a scratch datagram socket pair standing in for the TUN queue
 * (its reads keep packet boundaries as a TUN queue's do), plain and behind an all-zero virtio
 * header, routed by destination to the scratch peer, listed and given back. Returns how many
 * were listed for the scratch peer (all of them, or a bug).
 */
export function warmTunIntakePaths(rounds: number = WARMUP_ROUNDS): number {
  const routes = new AllowedIps();
  routes.insert(V4_DESTINATION, 32, SCRATCH_PEER);
  routes.insert(V6_DESTINATION, 128, SCRATCH_PEER);
  const pair = new Int32Array(2);
  if (libc.socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) < 0) throwErrno('socketpair', 'warm-up');
  const [queue, writer] = [pair[0]!, pair[1]!];
  try {
    const pool = new SlotPool(Slab.create(2), []);
    let found = 0;
    const plain = new TunIntake(queue, pool, routes, false);
    const offloaded = new TunIntake(queue, pool, routes, true);
    const packet = new Uint8Array(TUN_VNET_HDR_SIZE + PACKET_SIZES[1]);
    for (let round = 0; round < rounds; round++) {
      const version = round % 2 === 0 ? 4 : 6;
      const withHeader = (round >> 1) % 2 === 1;
      const length = PACKET_SIZES[(round >> 2) % PACKET_SIZES.length]!;
      const at = withHeader ? TUN_VNET_HDR_SIZE : 0;
      packet.fill(0, 0, at);
      writeIpPacket(packet, at, length, version);
      if (libc.write(writer, packet, at + length) !== at + length) continue;
      const intake = withHeader ? offloaded : plain;
      const count = intake.readOnce();
      for (let k = 0; k < count; k++) {
        if (intake.peers[k] === SCRATCH_PEER) found++;
        pool.release(intake.slots[k]!);
      }
    }
    return found;
  } finally {
    libc.close(queue);
    libc.close(writer);
  }
}

/**
 * The UDP reader's paths: slot traffic (warmRingPaths), reading recvmmsg metadata into a slot and routing by receiver index.
 * Returns how many scratch datagrams went to the shard their index names (all of them, or a bug).
 */
export function warmUdpReaderPaths(shardCount: number, rounds: number = WARMUP_ROUNDS): number {
  warmRingPaths(rounds);
  const slab = Slab.create(1);
  const meta = new DatagramMeta(1);
  meta.setLength(0, 32);
  meta.setRemote(0, 4, V4_SOURCE, SCRATCH_PORT);
  const payload = slab.payloadView(0);
  payload[0] = 4;
  let routed = 0;
  for (let round = 0; round < rounds; round++) {
    slab.setPayloadLength(0, meta.length(0));
    if ((round & 1) === 0) meta.clearLocal(0);
    else meta.setLocal(0, 4, V4_DESTINATION, 1);
    storeReceivedAddresses(meta, 0, slab, 0);
    // The receiver index is little-endian at bytes 4..7 (whitepaper §5.4.6); every other one is at
    // or above 2^31, a double to V8, as half of the real ones are.
    payload[4] = round & 0xff;
    payload[5] = (round >> 8) & 0xff;
    payload[7] = (round & 1) << 7;
    const index = (round & 1) * 2 ** 31 + (round & 0xffff);
    if (shardOfIndex(transportReceiverIndex(payload), shardCount) === index % shardCount) routed++;
  }
  return routed;
}

/**
 * Every thread's slot traffic: allocate from a pool, publish into a ring and ring its doorbell
 * (nobody sleeps on it, so no notify), pop a batch, hand the slot back through the return ring and
 * reclaim it. Returns how many slots made the whole trip.
 */
export function warmRingPaths(rounds: number = WARMUP_ROUNDS): number {
  // Return rings in an array built as fabric.ts builds a pool's (by map), and none at all, as a
  // lone worker's pool has: the two array shapes the real pools have.
  const returnRings = [Ring.create(4)].map((ring) => ring);
  const returnRing = returnRings[0]!;
  const pool = new SlotPool(Slab.create(2), returnRings);
  const ownPool = new SlotPool(Slab.create(1), []);
  const ring = Ring.create(4);
  const doorbell = Doorbell.create();
  const popped = new Uint32Array(4);
  let trips = 0;
  for (let round = 0; round < rounds; round++) {
    pool.reclaim();
    ownPool.reclaim();
    ownPool.release(ownPool.allocate());
    const slot = pool.allocate();
    if (slot < 0 || !ring.push(slot)) continue;
    // Every other round the consumer is "asleep", so ring() notifies (nobody waits: no syscall).
    if ((round & 1) === 1) doorbell.announceSleep();
    doorbell.ring();
    doorbell.wake();
    if (ring.freeSpace() > 0 && ring.popBatch(popped) === 1 && returnRing.push(popped[0]!)) trips++;
  }
  return trips;
}
