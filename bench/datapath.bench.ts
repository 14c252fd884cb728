// The per-packet work of the data path without its syscalls, as the threads do it:
//
//   encrypt: a fresh IP packet in a TUN slot → routing lookup by destination (the worker's
//            AllowedIPs, 10,000 peers) → Datapath.encrypt in place → the send metadata the
//            worker fills for sendmmsg (endpoint address and port).
//   decrypt: a datagram lands in a UDP slot (the copy recvmmsg would make) → Datapath.decrypt in
//            place: index lookup, replay check, AEAD open, inner-packet length and source checks.
//
// Packets rotate over ACTIVE_PEERS peers with live sessions. Before timing, every peer's packet
// is encrypted by one Datapath and decrypted by another back to the exact original bytes. The same
// module measures heap bytes allocated per packet (goal: zero) and, run as a worker thread, the
// encrypt path on 1 vs 2 threads side by side (each thread with its own peers, as shards are).
// Run alone: node bench/datapath.bench.ts (or as part of npm run bench); for instruction counts of a
// fixed number of packets: node bench/datapath.bench.ts --count encrypt|decrypt SIZE PACKETS.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { GCProfiler, getHeapStatistics } from 'node:v8';
import type { BenchCase, Row } from './harness.ts';
import { runStandalone } from './harness.ts';
import { gatewayTable, prefixesOf, PEERS } from './allowedips.bench.ts';
import { Datapath, type DatagramSource, type DatapathEffects } from '../src/workers/datapath.ts';
import { SLOT_PLAINTEXT_OFFSET, PEER_RECORD_F64S } from '../src/ring/layout.ts';
import { Slab } from '../src/ring/slab.ts';
import { aeadBackend } from '../src/wireguard/aead.ts';
import type { AllowedIps } from '../src/wireguard/allowedips.ts';
import { randomBytes } from '../src/wireguard/crypto.ts';
import type { Endpoint } from '../src/wireguard/endpoint.ts';
import type { KeypairMaterial } from '../src/wireguard/session.ts';
import { DatagramMeta } from '../src/io/udp.ts';

export const ACTIVE_PEERS = 64;
/** Packets per timed call, and datagrams per prepared decrypt batch. */
const BATCH = 4096;
/** As many slots as a worker's batch: the working set stays the size the real one is. */
const SLOTS = 64;
/** A fixed clock: sessions are one second old, far from any rekey or expiry limit. */
const CREATED_AT = 1_000_000;
const NOW = CREATED_AT + 1_000;
const MTU = 1420;

const REMOTE: Endpoint = { family: 4, address: Uint8Array.of(198, 18, 0, 2), port: 51821, localAddress: null, localIfindex: 0 };

/** Effects the benchmark never expects: counted so the check can insist there were none. */
function countingEffects(): { effects: DatapathEffects; count: () => number } {
  let calls = 0;
  const bump = (): void => void calls++;
  return {
    effects: { requestHandshake: bump, endpointChanged: bump, releaseStaged: bump, sessionConfirmed: bump },
    count: () => calls,
  };
}

/** An IPv4 header (total length `size`) from peer `id`'s routed subnet to its tunnel address. */
function ipv4Header(id: number, size: number): Uint8Array {
  const [tunnel4, routed4] = prefixesOf(id);
  const header = new Uint8Array(20);
  header[0] = 0x45;
  header[2] = size >>> 8;
  header[3] = size & 0xff;
  header[8] = 64;
  header[9] = 17;
  header.set(routed4!.bytes, 12);
  header[15] = 7;
  header.set(tunnel4!.bytes, 16);
  return header;
}

/** One sender and one receiver Datapath sharing ACTIVE_PEERS sessions, and the slots between them. */
export class PacketPath {
  readonly size: number;
  readonly peerIds: readonly number[];
  readonly tunRoutes: AllowedIps;
  readonly sender: Datapath;
  readonly receiver: Datapath;
  readonly tunSlab = Slab.create(SLOTS);
  readonly udpSlab = Slab.create(SLOTS);
  readonly headers: readonly Uint8Array[];
  readonly sendMeta = new DatagramMeta(SLOTS);
  readonly peerOut = new Int32Array(1);
  readonly source: DatagramSource;
  /** BATCH datagrams back to back, each at a multiple of `stride`, with their lengths. */
  readonly datagrams: Uint8Array;
  readonly datagramLengths = new Int32Array(BATCH);
  /** datagrams[j] as a view of exactly its length, made once (lengths do not change between batches). */
  private readonly datagramViews: Uint8Array[] = [];
  readonly stride: number;
  readonly unexpectedEffects: () => number;
  private readonly materials: ReadonlyArray<readonly [number, KeypairMaterial]>;
  private next = 0;

  constructor(size: number, firstPeer = 0) {
    this.size = size;
    this.peerIds = Array.from({ length: ACTIVE_PEERS }, (_, k) => (firstPeer + k * 151) % PEERS);
    this.tunRoutes = gatewayTable(PEERS).table;
    const stats = new Float64Array(PEERS * PEER_RECORD_F64S);
    const a = countingEffects();
    const b = countingEffects();
    this.unexpectedEffects = () => a.count() + b.count();
    this.sender = new Datapath(aeadBackend(), stats, MTU, a.effects);
    this.receiver = new Datapath(aeadBackend(), new Float64Array(PEERS * PEER_RECORD_F64S), MTU, b.effects);
    for (let peer = 0; peer < PEERS; peer++) {
      for (const p of prefixesOf(peer)) this.receiver.routes.insert(p.bytes, p.prefixLength, peer);
    }
    const materials: Array<readonly [number, KeypairMaterial]> = [];
    this.peerIds.forEach((id, k) => {
      const sendKey = randomBytes(new Uint8Array(32));
      const receiveKey = randomBytes(new Uint8Array(32));
      // Random u32s in production: half are 2^31 or more, which V8 does not hold as small integers.
      const localIndex = 0x9e37_7900 + k;
      const remoteIndex = 0x1234_5600 + k;
      this.sender.addPeer(id);
      this.sender.setEndpoint(id, REMOTE);
      this.sender.installKeypair(id, { localIndex, remoteIndex, sendKey, receiveKey, isInitiator: true, createdAt: CREATED_AT });
      this.receiver.addPeer(id);
      this.receiver.setEndpoint(id, REMOTE);
      const crossed: KeypairMaterial = {
        localIndex: remoteIndex, remoteIndex: localIndex, sendKey: receiveKey, receiveKey: sendKey, isInitiator: true,
        createdAt: CREATED_AT,
      };
      materials.push([id, crossed]);
      this.receiver.installKeypair(id, crossed);
    });
    this.materials = materials;
    this.headers = this.peerIds.map((id) => ipv4Header(id, size));
    for (let slot = 0; slot < SLOTS; slot++) {
      this.udpSlab.setRemote(slot, REMOTE.family, REMOTE.port);
      this.udpSlab.remoteAddressView(slot).set(REMOTE.address);
      // A recognisable body; only the IP header is rewritten per packet (see encryptOne).
      const payload = this.tunSlab.payloadView(slot);
      for (let i = 20; i < size; i++) payload[SLOT_PLAINTEXT_OFFSET + i] = (i * 13 + slot) & 0xff;
    }
    const udpSlab = this.udpSlab;
    let currentSlot = 0;
    this.source = {
      // As the worker's SlotSource: the slot's remote address and port against the known endpoint.
      matches(endpoint) {
        if (endpoint === null) return false;
        if (udpSlab.remoteFamily(currentSlot) !== endpoint.family || udpSlab.remotePort(currentSlot) !== endpoint.port) return false;
        const remote = udpSlab.remoteAddressView(currentSlot);
        for (let k = 0; k < endpoint.address.length; k++) if (remote[k] !== endpoint.address[k]) return false;
        return endpoint.localAddress === null;
      },
      toEndpoint: () => REMOTE,
    };
    this.setSourceSlot = (slot: number) => void (currentSlot = slot);
    this.stride = SLOT_PLAINTEXT_OFFSET + size + 16 + 16;
    this.datagrams = new Uint8Array(BATCH * this.stride);
  }

  readonly setSourceSlot: (slot: number) => void;

  /** Encrypts the next packet (next peer, next slot); returns the datagram length. */
  encryptOne(): number {
    const i = this.next++;
    const slot = i & (SLOTS - 1);
    const payload = this.tunSlab.payloadView(slot);
    // What the TUN read leaves behind: a plaintext header (the body's bytes do not matter to the cost).
    payload.set(this.headers[i % ACTIVE_PEERS]!, SLOT_PLAINTEXT_OFFSET);
    const peer = this.tunRoutes.lookupV4(payload, SLOT_PLAINTEXT_OFFSET + 16);
    this.tunSlab.setPayloadLength(slot, this.size);
    this.tunSlab.setPeerId(slot, peer);
    const length = this.sender.encrypt(this.tunSlab.peerId(slot), 0, payload, this.tunSlab.payloadLength(slot), NOW);
    const endpoint = this.sender.endpointOf(peer)!;
    const m = slot;
    this.sendMeta.setLength(m, length);
    this.sendMeta.setRemote(m, endpoint.family, endpoint.address, endpoint.port);
    this.sendMeta.clearLocal(m);
    return length;
  }

  /** Fills `datagrams` with BATCH fresh datagrams and resets the receiver's replay windows. */
  prepareDecryptBatch(): void {
    for (let j = 0; j < BATCH; j++) {
      const length = this.encryptOne();
      const slot = (this.next - 1) & (SLOTS - 1);
      this.datagrams.set(this.tunSlab.payloadView(slot).subarray(0, length), j * this.stride);
      this.datagramLengths[j] = length;
      if (this.datagramViews[j]?.length !== length) this.datagramViews[j] = this.datagrams.subarray(j * this.stride, j * this.stride + length);
    }
    this.resetReplayWindows();
  }

  /** Fresh receiving sessions (same keys): the prepared batch decrypts again. */
  resetReplayWindows(): void {
    for (const [id, material] of this.materials) this.receiver.installKeypair(id, material);
  }

  /** Decrypts datagram j of the prepared batch; returns the inner packet length. */
  decryptOne(j: number): number {
    const slot = j & (SLOTS - 1);
    const payload = this.udpSlab.payloadView(slot);
    const length = this.datagramLengths[j]!;
    // The copy recvmmsg makes, without a subarray of our own: the bench must not allocate for the path.
    payload.set(this.datagramViews[j]!);
    this.setSourceSlot(slot);
    return this.receiver.decrypt(payload, length, this.source, NOW, this.peerOut);
  }

  /** Encrypts one packet per peer and decrypts each back; throws unless every byte comes back. */
  check(): void {
    for (let k = 0; k < ACTIVE_PEERS; k++) {
      const slot = this.next & (SLOTS - 1);
      const original = Uint8Array.from(this.tunSlab.payloadView(slot).subarray(SLOT_PLAINTEXT_OFFSET, SLOT_PLAINTEXT_OFFSET + this.size));
      original.set(this.headers[this.next % ACTIVE_PEERS]!);
      const length = this.encryptOne();
      const expected = SLOT_PLAINTEXT_OFFSET + Math.min(MTU, (this.size + 15) & ~15) + 16;
      if (length !== expected) throw new Error(`encrypt gave ${length} bytes for a ${this.size}-byte packet, expected ${expected}`);
      const udp = this.udpSlab.payloadView(0);
      udp.set(this.tunSlab.payloadView(slot).subarray(0, length));
      this.setSourceSlot(0);
      const inner = this.receiver.decrypt(udp, length, this.source, NOW, this.peerOut);
      if (inner !== this.size) throw new Error(`decrypt gave ${inner} (drops ${JSON.stringify(this.receiver.drops)})`);
      if (this.peerOut[0] !== this.peerIds[k]) throw new Error(`decrypt named peer ${this.peerOut[0]}, expected ${this.peerIds[k]}`);
      if (Buffer.compare(udp.subarray(SLOT_PLAINTEXT_OFFSET, SLOT_PLAINTEXT_OFFSET + this.size), original) !== 0) {
        throw new Error('the decrypted packet differs from the one encrypted');
      }
    }
    this.prepareDecryptBatch();
    for (let j = 0; j < BATCH; j++) {
      const inner = this.decryptOne(j);
      if (inner !== this.size) throw new Error(`decrypt of prepared datagram ${j} gave ${inner}`);
    }
    if (this.unexpectedEffects() !== 0) throw new Error('the data path asked for handshakes or roaming during the benchmark');
  }
}

export function datapathCases(): BenchCase[] {
  const encryptCases: BenchCase[] = [];
  const decryptCases: BenchCase[] = [];
  for (const size of [64, 1420]) {
    const path = new PacketPath(size);
    encryptCases.push({
      group: 'encrypt path', name: `${size} B: TUN slot → route → encrypt → send meta`, unit: 'packet', opsPerRun: BATCH,
      check: () => path.check(),
      run() {
        for (let i = 0; i < BATCH; i++) if (path.encryptOne() < 0) throw new Error('encrypt dropped');
      },
    });
    decryptCases.push({
      group: 'decrypt path', name: `${size} B: UDP slot → decrypt → inner checks`, unit: 'packet', opsPerRun: BATCH,
      check: () => path.check(),
      // Each call decrypts a batch prepared (untimed) just for it: the replay window forbids a second pass.
      beforeEach: () => path.prepareDecryptBatch(),
      run() {
        for (let j = 0; j < BATCH; j++) if (path.decryptOne(j) !== size) throw new Error('decrypt dropped');
      },
    });
  }
  return [...encryptCases, ...decryptCases];
}

// ---- allocations per packet ---------------------------------------------------------------------

/**
 * Heap bytes allocated per call of `step`, over `total` calls in chunks of BATCH, with `prepare`
 * (not counted) between chunks. Allocation = growth of the used heap across the chunk plus what
 * every collection during it freed (v8.GCProfiler reports each one's before and after), so a
 * scavenge in the middle cannot hide anything. The cost of the measurement itself is taken from
 * an empty chunk and subtracted.
 *
 * Besides the mean, the median chunk and how many chunks grew at all: an allocation per packet
 * grows every chunk (by at least BATCH × 8 bytes), while V8 compiling a hotter tier of the code
 * now and then grows a few chunks, which the mean alone cannot tell apart.
 */
interface AllocationResult {
  readonly meanBytes: number;
  readonly medianChunkBytes: number;
  readonly chunksGrown: number;
  readonly chunks: number;
}

function bytesPerCall(total: number, step: (j: number) => void, prepare: () => void): AllocationResult {
  const measureChunk = (body: (j: number) => void): number => {
    const profiler = new GCProfiler();
    profiler.start();
    const before = getHeapStatistics().used_heap_size;
    for (let j = 0; j < BATCH; j++) body(j);
    const after = getHeapStatistics().used_heap_size;
    let freed = 0;
    for (const gc of profiler.stop()?.statistics ?? []) {
      freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
    }
    return after - before + freed;
  };
  const empty = (): void => {};
  for (let k = 0; k < 3; k++) measureChunk(empty);
  const overhead = measureChunk(empty);
  // Warm-up chunks (JIT compilation allocates code) are not counted.
  for (let k = 0; k < 3; k++) {
    prepare();
    measureChunk(step);
  }
  const perChunk: number[] = [];
  while (perChunk.length * BATCH < total) {
    prepare();
    perChunk.push(Math.max(0, measureChunk(step) - overhead));
  }
  const sorted = [...perChunk].sort((x, y) => x - y);
  const bytes = perChunk.reduce((sum, b) => sum + b, 0);
  return {
    meanBytes: bytes / (perChunk.length * BATCH),
    medianChunkBytes: sorted[sorted.length >> 1]!,
    chunksGrown: perChunk.filter((b) => b > 0).length,
    chunks: perChunk.length,
  };
}

/** Rows of heap bytes per packet on the encrypt and decrypt paths over `packets` packets each. */
export function allocationRows(packets: number): Row[] {
  const rows: Row[] = [];
  for (const size of [64, 1420]) {
    const path = new PacketPath(size);
    path.check();
    const encrypt = bytesPerCall(packets, () => void path.encryptOne(), () => {});
    const decrypt = bytesPerCall(packets, (j) => {
      if (path.decryptOne(j) !== size) throw new Error('bench: decrypt dropped');
    }, () => path.prepareDecryptBatch());
    for (const [name, result] of [['encrypt', encrypt], ['decrypt', decrypt]] as const) {
      rows.push({
        group: 'allocations', name: `${name} ${size} B, ${(packets / 1e6).toFixed(1)} M packets`, unit: 'packet',
        microsPerOp: NaN, opsPerSecond: NaN, rmePercent: NaN,
        note: `${result.meanBytes.toFixed(1)} heap bytes/packet (goal 0); median chunk ${result.medianChunkBytes} B, ` +
          `${result.chunksGrown} of ${result.chunks} chunks grew`,
      });
    }
  }
  return rows;
}

// ---- the encrypt path on 1 vs 2 threads ---------------------------------------------------------

interface ShardConfig {
  readonly size: number;
  readonly firstPeer: number;
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === 'encrypt-shard') {
  const config = workerData as ShardConfig;
  const path = new PacketPath(config.size, config.firstPeer);
  path.check();
  parentPort!.on('message', (packets: number) => {
    let bytes = 0;
    for (let i = 0; i < packets; i++) bytes += path.encryptOne();
    parentPort!.postMessage(bytes);
  });
  parentPort!.postMessage('ready');
}

/** Workers that each run the encrypt path for their own peers, `packets` per request. */
async function startShards(count: number, size: number): Promise<{ run: (packets: number) => Promise<number>; close: () => Promise<void> }> {
  const workers = Array.from({ length: count }, (_, k) => new Worker(new URL(import.meta.url), {
    workerData: { kind: 'encrypt-shard', size, firstPeer: 1 + k * 17 },
  }));
  await Promise.all(workers.map((w) => new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('message', () => resolve());
  })));
  const request = (w: Worker, packets: number): Promise<number> => new Promise((resolve, reject) => {
    w.once('error', reject);
    w.once('message', (bytes: number) => {
      w.off('error', reject);
      resolve(bytes);
    });
    w.postMessage(packets);
  });
  return {
    run: async (packets) => (await Promise.all(workers.map((w) => request(w, packets)))).reduce((a, b) => a + b, 0),
    close: async () => void (await Promise.all(workers.map((w) => w.terminate()))),
  };
}

/** The encrypt path (1420 B) on 1 and on 2 threads; `close` stops the threads. */
export async function scalingCases(): Promise<{ cases: BenchCase[]; close: () => Promise<void> }> {
  const size = 1420;
  const packets = 2 * BATCH;
  const closers: Array<() => Promise<void>> = [];
  const cases: BenchCase[] = [];
  for (const threads of [1, 2]) {
    const shards = await startShards(threads, size);
    closers.push(shards.close);
    const expected = threads * packets * (SLOT_PLAINTEXT_OFFSET + size + 16);
    cases.push({
      group: 'encrypt scaling', name: `${size} B on ${threads} thread${threads > 1 ? 's' : ''}, own peers each`,
      unit: 'packet', opsPerRun: threads * packets,
      async check() {
        const bytes = await shards.run(packets);
        if (bytes !== expected) throw new Error(`threads produced ${bytes} datagram bytes, expected ${expected}`);
      },
      async run() {
        await shards.run(packets);
      },
    });
  }
  return { cases, close: async () => void (await Promise.all(closers.map((c) => c()))) };
}

// ---- a fixed number of packets, for instruction counters ------------------------------------------

/**
 * Runs exactly `packets` packets of one path (after one warm-up batch) and nothing else, for
 * `perf stat` or `valgrind --tool=callgrind`, which count instructions and so are far less
 * disturbed by a shared machine than timings. The decrypt path re-decrypts one prepared batch,
 * resetting the replay windows between passes, so no encryption is counted in it. Instructions per
 * packet: the difference of two runs with different counts, divided by the difference of counts.
 */
export function fixedCountLoop(path: 'encrypt' | 'decrypt', size: number, packets: number): number {
  const packetPath = new PacketPath(size);
  packetPath.check();
  packetPath.prepareDecryptBatch();
  let bytes = 0;
  if (path === 'encrypt') {
    for (let i = 0; i < packets; i++) bytes += packetPath.encryptOne();
    return bytes;
  }
  for (let done = 0; done < packets;) {
    packetPath.resetReplayWindows();
    for (let j = 0; j < BATCH && done < packets; j++, done++) bytes += packetPath.decryptOne(j);
  }
  return bytes;
}

if (isMainThread && import.meta.main && process.argv[2] === '--count') {
  // node bench/datapath.bench.ts --count encrypt|decrypt SIZE PACKETS
  const [, , , path, size, packets] = process.argv;
  if ((path !== 'encrypt' && path !== 'decrypt') || !(Number(size) > 0) || !(Number(packets) > 0)) {
    throw new RangeError('bench: usage: --count encrypt|decrypt SIZE PACKETS');
  }
  const started = process.cpuUsage();
  const bytes = fixedCountLoop(path, Number(size), Number(packets));
  const used = process.cpuUsage(started);
  console.log(`${path} ${size} B × ${packets}: ${bytes} bytes out, ${(((used.user + used.system) * 1000) / Number(packets)).toFixed(0)} ns CPU per packet (set-up included)`);
} else if (isMainThread && import.meta.main) {
  await runStandalone(datapathCases());
  const scaling = await scalingCases();
  try {
    await runStandalone(scaling.cases);
  } finally {
    await scaling.close();
  }
}
