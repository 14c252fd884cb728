// The per-packet hot path allocates nothing: Datapath.encrypt and Datapath.decrypt (through the
// sodium backend, in place in long-lived slot views) over thousands of packets, including forged
// and replayed datagrams, which are counted drops. Allocation is measured as in bench/datapath.bench.ts:
// growth of V8's used heap across a chunk plus whatever every collection in it freed
// (v8.GCProfiler), so a scavenge cannot hide garbage. The smallest chunk counts: a one-off (JIT code,
// a first cache entry) shows in one chunk, a per-packet allocation (a subarray is ~70 bytes) in all.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GCProfiler, getHeapStatistics } from 'node:v8';
import { PEER_RECORD_F64S, SLOT_PLAINTEXT_OFFSET } from '../../src/ring/layout.ts';
import { Slab } from '../../src/ring/slab.ts';
import { nobleAead, sodiumAead } from '../../src/wireguard/aead.ts';
import { randomBytes } from '../../src/wireguard/crypto.ts';
import type { Endpoint } from '../../src/wireguard/endpoint.ts';
import { Datapath, type DatagramSource, type DatapathEffects } from '../../src/workers/datapath.ts';

const PEERS = 4;
const SLOTS = 64;
const CHUNK = 4096;
const CHUNKS = 6;
/** Bytes per packet the smallest chunk may show: far below one object per packet. */
const BOUND = 2;
const CREATED_AT = 1_000_000;
const NOW = CREATED_AT + 1_000;
const MTU = 1420;
const REMOTE: Endpoint = { family: 4, address: Uint8Array.of(192, 0, 2, 1), port: 51820, localAddress: null, localIfindex: 0 };

/** Smallest heap bytes per call of `step` over CHUNKS chunks of CHUNK calls (after a warm-up chunk). */
function minBytesPerCall(step: (i: number) => void, prepare: () => void): number {
  let smallest = Infinity;
  for (let chunk = 0; chunk <= CHUNKS; chunk++) {
    prepare();
    const profiler = new GCProfiler();
    profiler.start();
    const before = getHeapStatistics().used_heap_size;
    for (let i = 0; i < CHUNK; i++) step(i);
    const after = getHeapStatistics().used_heap_size;
    let freed = 0;
    for (const gc of profiler.stop()?.statistics ?? []) {
      freed += gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize;
    }
    if (chunk > 0) smallest = Math.min(smallest, (after - before + freed) / CHUNK);
  }
  return smallest;
}

function noEffects(): DatapathEffects {
  const unexpected = (): void => assert.fail('the data path asked for a handshake or roamed');
  return { requestHandshake: unexpected, endpointChanged: unexpected, releaseStaged: unexpected, sessionConfirmed: unexpected };
}

/** A sender and a receiver with crossed sessions for PEERS peers, each allowed 10.0.<peer>.0/24. */
function pair(): { sender: Datapath; receiver: Datapath } {
  const sender = new Datapath(sodiumAead, new Float64Array(PEERS * PEER_RECORD_F64S), MTU, noEffects());
  const receiver = new Datapath(sodiumAead, new Float64Array(PEERS * PEER_RECORD_F64S), MTU, noEffects());
  for (let id = 0; id < PEERS; id++) {
    // Indexes are random u32 in production: the upper ones are not small integers to V8.
    const senderIndex = 0xfedc_ba00 + id;
    const receiverIndex = 0x8000_0000 + id;
    const sendKey = randomBytes(new Uint8Array(32));
    const receiveKey = randomBytes(new Uint8Array(32));
    sender.addPeer(id);
    sender.setEndpoint(id, REMOTE);
    sender.installKeypair(id, { localIndex: senderIndex, remoteIndex: receiverIndex, sendKey, receiveKey, isInitiator: true, createdAt: CREATED_AT });
    receiver.addPeer(id);
    receiver.setEndpoint(id, REMOTE);
    receiver.routes.insert(Uint8Array.of(10, 0, id, 0), 24, id);
    receiver.installKeypair(id, {
      localIndex: receiverIndex, remoteIndex: senderIndex, sendKey: receiveKey, receiveKey: sendKey, isInitiator: true, createdAt: CREATED_AT,
    });
  }
  return { sender, receiver };
}

/** Writes an IPv4 header (total length `size`) from 10.0.<peer>.7 into the slot's plaintext. */
function writePacket(payload: Uint8Array, peer: number, size: number): void {
  const o = SLOT_PLAINTEXT_OFFSET;
  payload.fill(0, o, o + 20);
  payload[o] = 0x45;
  payload[o + 2] = size >>> 8;
  payload[o + 3] = size & 0xff;
  payload[o + 8] = 64;
  payload[o + 9] = 17;
  payload[o + 12] = 10;
  payload[o + 14] = peer;
  payload[o + 15] = 7;
}

/** The source every datagram comes from: the peers' known endpoint (no roaming). */
const knownSource: DatagramSource = {
  matches: (endpoint) => endpoint === REMOTE,
  toEndpoint: () => REMOTE,
};

test('Datapath.encrypt and decrypt allocate nothing per packet (sodium, mixed sizes, in slot views)', () => {
  const { sender, receiver } = pair();
  const tun = Slab.create(SLOTS);
  const udp = Slab.create(SLOTS);
  const peerOut = new Int32Array(1);
  // Full-size, MTU-capped, ACK-size and odd sizes through the same slots, as real flows mix them
  // (each slot sees every size in turn).
  const SIZES = [1420, 52, 1405, 72, 1420, 1419, 576, 52];
  const sizeOf = (i: number): number => SIZES[Math.floor(i / SLOTS) % SIZES.length]!;
  const lengths = new Int32Array(CHUNK);
  let sent = 0;

  const encryptOne = (i: number): void => {
    const payload = tun.payloadView(i & (SLOTS - 1));
    const size = sizeOf(i);
    writePacket(payload, i % PEERS, size);
    const length = sender.encrypt(i % PEERS, 0, payload, size, NOW);
    if (length <= 0) assert.fail(`encrypt returned ${length}`);
    lengths[i] = length;
    sent++;
  };
  const encryptBytes = minBytesPerCall(encryptOne, () => {});
  assert.ok(encryptBytes < BOUND, `encrypt allocated ${encryptBytes.toFixed(1)} bytes per packet`);

  // Datagrams to decrypt: one chunk sealed ahead (not measured), copied slot by slot as recvmmsg would.
  const sealed = Array.from({ length: CHUNK }, () => new Uint8Array(0));
  const prepare = (): void => {
    for (let i = 0; i < CHUNK; i++) {
      encryptOne(i);
      const payload = tun.payloadView(i & (SLOTS - 1));
      if (sealed[i]!.length !== lengths[i]) sealed[i] = new Uint8Array(lengths[i]!);
      sealed[i]!.set(payload.subarray(0, lengths[i]));
    }
  };
  const decryptOne = (i: number): void => {
    const payload = udp.payloadView(i & (SLOTS - 1));
    payload.set(sealed[i]!);
    const inner = receiver.decrypt(payload, lengths[i]!, knownSource, NOW, peerOut);
    if (inner !== sizeOf(i) || peerOut[0] !== i % PEERS) assert.fail(`decrypt of packet ${i} returned ${inner} for peer ${peerOut[0]}`);
  };
  const decryptBytes = minBytesPerCall(decryptOne, prepare);
  assert.ok(decryptBytes < BOUND, `decrypt allocated ${decryptBytes.toFixed(1)} bytes per packet`);
  assert.equal(receiver.drops.badAuthentication + receiver.drops.replayed, 0);

  // Drops are counted, not thrown or allocated: every datagram replayed, then every one forged.
  const replayBytes = minBytesPerCall((i) => {
    const payload = udp.payloadView(i & (SLOTS - 1));
    payload.set(sealed[i]!);
    if (receiver.decrypt(payload, lengths[i]!, knownSource, NOW, peerOut) !== -1) assert.fail('a replay was accepted');
  }, () => {});
  const forgedBytes = minBytesPerCall((i) => {
    const payload = udp.payloadView(i & (SLOTS - 1));
    payload.set(sealed[i]!);
    payload[lengths[i]! - 1]! ^= 0x80;
    if (receiver.decrypt(payload, lengths[i]!, knownSource, NOW, peerOut) !== -1) assert.fail('a forged tag was accepted');
  }, prepare);
  assert.ok(replayBytes < BOUND, `a replayed datagram allocated ${replayBytes.toFixed(1)} bytes`);
  assert.ok(forgedBytes < BOUND, `a forged datagram allocated ${forgedBytes.toFixed(1)} bytes`);
  assert.equal(receiver.drops.badAuthentication, (CHUNKS + 1) * CHUNK);
  assert.ok(sent > 0);
});

test('sodium seals and opens correctly however the per-buffer view cache is displaced', () => {
  // Many (offset, length) pairs on one buffer collide in the direct-mapped cache; every call must
  // still use exactly its own range. noble, which makes fresh views, is the reference.
  const key = randomBytes(new Uint8Array(32));
  const buffer = new Uint8Array(new SharedArrayBuffer(4096));
  const reference = new Uint8Array(4096);
  let counter = 0;
  for (let round = 0; round < 3; round++) {
    for (let off = 0; off < 300; off += 13) {
      for (const len of [0, 1, 16, 47, 64, 1024, 1420]) {
        randomBytes(buffer);
        reference.set(buffer);
        const a = sodiumAead.seal(key, counter, buffer, off, len, null, buffer, off);
        const b = nobleAead.seal(key, counter, reference, off, len, null, reference, off);
        assert.equal(a, b);
        assert.deepEqual(buffer, reference, `seal at ${off}+${len}`);
        assert.equal(sodiumAead.open(key, counter, buffer, off, a, null, buffer, off), len);
        assert.equal(nobleAead.open(key, counter, reference, off, b, null, reference, off), len);
        assert.deepEqual(buffer, reference, `open at ${off}+${len}`);
        counter++;
      }
    }
  }
});
