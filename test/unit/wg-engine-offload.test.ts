// The engine with its responder crypto handed out as jobs (offloadHandshakeCrypto), the way the
// device runs it with a pool of handshake threads. Jobs are run here, synchronously and in chosen
// orders, with the same pure function the threads run (runHandshakeJob), so every case is
// deterministic, and each job and result goes through the packed records the pool sends between
// threads (handshake-pool-records.ts). What must hold: the wire and the events are those of the inline engine, and
// whatever changes while a job is out (the peer, its key, our key, a newer initiation) is honoured.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CookieGenerator } from '../../src/wireguard/cookie.ts';
import { WireGuardEngine, type EngineEvent, type Transmit } from '../../src/wireguard/engine.ts';
import { generatePrivateKey, publicKeyOf, toPresharedKey, zeroPresharedKey, type PrivateKey } from '../../src/wireguard/keys.ts';
import { MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE, HANDSHAKE_INITIATION_RATE_MS } from '../../src/wireguard/constants.ts';
import { readU32LE } from '../../src/wireguard/messages.ts';
import { runHandshakeJob, type HandshakeJob, type HandshakeJobResult } from '../../src/wireguard/noise.ts';
import { decodeJob, decodeResult, encodeJob, encodeResult, JOB_RECORD_SIZE, RESULT_RECORD_SIZE } from '../../src/control/handshake-pool-records.ts';
import { seededRandom, v4Endpoint } from '../support/sim.ts';

const RESPONDER_AT = v4Endpoint(1, 51820);
const WALL_BASE = 1_700_000_000_000;

interface Node {
  readonly engine: WireGuardEngine;
  readonly privateKey: PrivateKey;
  readonly clock: { now: number };
}

function node(seed: number, offload: boolean, clock = { now: 1_000 }): Node {
  const privateKey = generatePrivateKey();
  const engine = new WireGuardEngine({
    shardCount: 2, random: seededRandom(seed), wallClock: () => WALL_BASE + clock.now, offloadHandshakeCrypto: offload,
  });
  engine.setPrivateKey(privateKey);
  return { engine, privateKey, clock };
}

function drain<T>(poll: () => T | undefined): T[] {
  const out: T[] = [];
  for (let x = poll(); x !== undefined; x = poll()) out.push(x);
  return out;
}

/** A responder (peer ids 0..n-1) and n initiators that know it at RESPONDER_AT. */
function setup(offload: boolean, initiators = 1, seed = 5): { responder: Node; initiators: Node[] } {
  const clock = { now: 1_000 };
  const responder = node(seed, offload, clock);
  const others = Array.from({ length: initiators }, (_, i) => node(100 + i, false, clock));
  others.forEach((initiator, i) => {
    responder.engine.addPeer(i, i % 2, publicKeyOf(initiator.privateKey), zeroPresharedKey());
    initiator.engine.addPeer(0, 0, publicKeyOf(responder.privateKey), zeroPresharedKey());
    initiator.engine.setEndpoint(0, RESPONDER_AT);
  });
  return { responder, initiators: others };
}

/** The next initiation of `initiator`, from its own address. */
function initiationFrom(initiator: Node): Transmit {
  initiator.engine.requestHandshake(0, initiator.clock.now);
  const sent = drain(() => initiator.engine.pollTransmit());
  drain(() => initiator.engine.pollEvent());
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.bytes[0], MESSAGE_INITIATION);
  return sent[0]!;
}

function deliver(to: Node, bytes: Uint8Array, from = v4Endpoint(9, 40000)): void {
  to.engine.handleHandshakeDatagram(bytes, bytes.length, from, to.clock.now, false);
}

/** What a handshake thread does with a job, records in and records out, as the pool sends them. */
function runInThread(job: HandshakeJob): HandshakeJobResult {
  const jobs = new Uint8Array(2 * JOB_RECORD_SIZE).fill(0xee);
  encodeJob(job, jobs, 1);
  const results = new Uint8Array(2 * RESULT_RECORD_SIZE).fill(0xee);
  encodeResult(runHandshakeJob(decodeJob(jobs, 1)), results, 1);
  return decodeResult(results, 1);
}

/** Runs every job the engine has handed out, repeatedly, in `order` (the pool may answer in any). */
function runJobs(responder: Node, order: 'fifo' | 'reverse' = 'fifo'): number {
  let ran = 0;
  for (let jobs = drain(() => responder.engine.pollHandshakeJob()); jobs.length > 0; jobs = drain(() => responder.engine.pollHandshakeJob())) {
    const results = (order === 'reverse' ? [...jobs].reverse() : jobs).map(runInThread);
    for (const result of results) responder.engine.completeHandshakeJob(result, responder.clock.now);
    ran += jobs.length;
  }
  return ran;
}

test('an offloaded initiation is answered only once its jobs are done, and both ends share keys', () => {
  const { responder, initiators } = setup(true);
  const initiator = initiators[0]!;
  deliver(responder, initiationFrom(initiator).bytes);
  assert.equal(responder.engine.pollTransmit(), undefined, 'nothing leaves before the crypto is done');
  assert.equal(responder.engine.handshakeJobsInFlight, 1);
  assert.equal(runJobs(responder), 2, 'one job opens the initiation, one builds the response');
  assert.equal(responder.engine.handshakeJobsInFlight, 0);

  const [response, ...more] = drain(() => responder.engine.pollTransmit());
  assert.equal(more.length, 0);
  assert.equal(response!.bytes.length, MESSAGE_RESPONSE_SIZE);
  const events = drain(() => responder.engine.pollEvent());
  const install = events.find((e): e is Extract<EngineEvent, { kind: 'installKeypair' }> => e.kind === 'installKeypair');
  assert.ok(install !== undefined);
  assert.equal(readU32LE(response!.bytes, 4), install.keypair.localIndex, 'the response carries the index the session got');
  assert.equal(install.keypair.localIndex % 2, 0, "the index belongs to the peer's shard");

  deliver(initiator, response!.bytes, RESPONDER_AT);
  const initiatorInstall = drain(() => initiator.engine.pollEvent()).find((e) => e.kind === 'installKeypair');
  assert.ok(initiatorInstall?.kind === 'installKeypair', 'the initiator accepted the response (macs and transcript)');
  assert.deepEqual(initiatorInstall.keypair.sendKey, install.keypair.receiveKey);
  assert.deepEqual(initiatorInstall.keypair.receiveKey, install.keypair.sendKey);
  assert.equal(initiatorInstall.keypair.remoteIndex, install.keypair.localIndex);
  assert.equal(install.keypair.remoteIndex, initiatorInstall.keypair.localIndex);
});

test('inline and offloaded engines put the same things on the wire and raise the same events', () => {
  // The same script on both: three peers, a replay, a flood, a forged initiation (valid mac1).
  const script = (offload: boolean): unknown[] => {
    const { responder, initiators } = setup(offload, 3, 11);
    const trace: unknown[] = [];
    const step = (bytes: Uint8Array, from = v4Endpoint(9, 40000)): void => {
      deliver(responder, bytes, from);
      runJobs(responder);
      for (const t of drain(() => responder.engine.pollTransmit())) {
        trace.push({ type: t.bytes[0], to: t.to.port, indexes: [readU32LE(t.bytes, 4), readU32LE(t.bytes, 8)] });
      }
      for (const e of drain(() => responder.engine.pollEvent())) {
        trace.push(e.kind === 'installKeypair' ? { kind: e.kind, peer: e.peer, local: e.keypair.localIndex, remote: e.keypair.remoteIndex } : { kind: e.kind, peer: e.peer });
      }
    };
    const first = initiators.map(initiationFrom);
    first.forEach((t, i) => step(t.bytes, v4Endpoint(10 + i, 40000 + i)));
    step(first[0]!.bytes); // replayed
    responder.clock.now += HANDSHAKE_INITIATION_RATE_MS + 1;
    initiators[1]!.clock.now = responder.clock.now;
    initiators[1]!.engine.resetPeer(0);
    drain(() => initiators[1]!.engine.pollEvent());
    step(initiationFrom(initiators[1]!).bytes);
    const forged = Uint8Array.from(first[2]!.bytes);
    forged[20] = forged[20]! ^ 1;
    step(forged); // mac1 no longer matches
    // The same, with mac1 made right (anyone who knows our public key can): it fails in the crypto.
    new CookieGenerator(publicKeyOf(responder.privateKey)).addMacs(forged, MESSAGE_INITIATION_SIZE, responder.clock.now);
    step(forged);
    trace.push({ ...responder.engine.drops });
    return trace;
  };
  const inline = script(false);
  const offloaded = script(true);
  assert.deepEqual(offloaded, inline);
  const drops = inline.at(-1) as Record<string, number>;
  assert.equal(drops.replayedInitiation, 1);
  assert.equal(drops.badMac1, 1, 'the flipped byte breaks mac1 before any crypto');
  assert.equal(drops.badInitiation, 1);
  assert.equal(inline.filter((x) => (x as { type?: number }).type === MESSAGE_RESPONSE).length, 4);
});

test('results that come back in reverse order still answer every initiation', () => {
  const { responder, initiators } = setup(true, 4);
  const senderIndexes = initiators.map((initiator) => {
    const initiation = initiationFrom(initiator).bytes;
    deliver(responder, initiation);
    return readU32LE(initiation, 4);
  });
  runJobs(responder, 'reverse');
  const responses = drain(() => responder.engine.pollTransmit());
  // Each initiator's index comes back as the receiver of exactly one response.
  assert.deepEqual(responses.map((r) => readU32LE(r.bytes, 8)).sort(), [...senderIndexes].sort());
  const installs = drain(() => responder.engine.pollEvent()).filter((e) => e.kind === 'installKeypair');
  assert.deepEqual(installs.map((e) => e.peer).sort(), [0, 1, 2, 3]);
});

test('a peer removed, re-keyed or our key changed while its job runs: no response, counted as stale', () => {
  const cases: Array<[string, (responder: Node) => void, 'open' | 'respond']> = [
    ['peer removed after the open job left', (r) => r.engine.removePeer(0), 'open'],
    ['peer removed after the respond job left', (r) => r.engine.removePeer(0), 'respond'],
    ['preshared key changed after the respond job left', (r) => r.engine.setPresharedKey(0, toPresharedKey(new Uint8Array(32).fill(7))), 'respond'],
    ['our private key changed after the open job left', (r) => r.engine.setPrivateKey(generatePrivateKey()), 'open'],
  ];
  for (const [name, change, when] of cases) {
    const { responder, initiators } = setup(true);
    deliver(responder, initiationFrom(initiators[0]!).bytes);
    let job = responder.engine.pollHandshakeJob()!;
    if (when === 'respond') {
      responder.engine.completeHandshakeJob(runInThread(job), responder.clock.now);
      job = responder.engine.pollHandshakeJob()!;
      assert.equal(job.kind, 'respond', name);
    }
    change(responder);
    drain(() => responder.engine.pollEvent());
    responder.engine.completeHandshakeJob(runInThread(job), responder.clock.now);
    runJobs(responder);
    assert.equal(responder.engine.pollTransmit(), undefined, name);
    assert.equal(drain(() => responder.engine.pollEvent()).filter((e) => e.kind === 'installKeypair').length, 0, name);
    assert.equal(responder.engine.drops.staleHandshake + responder.engine.drops.badInitiation, 1, name);
    assert.equal(responder.engine.handshakeJobsInFlight, 0, name);
  }
});

test('a replay that arrives while the original is still in the pool is refused when it comes back', () => {
  const { responder, initiators } = setup(true);
  const initiation = initiationFrom(initiators[0]!).bytes;
  deliver(responder, initiation);
  deliver(responder, initiation);
  assert.equal(responder.engine.handshakeJobsInFlight, 2);
  runJobs(responder);
  assert.equal(drain(() => responder.engine.pollTransmit()).length, 1);
  assert.equal(responder.engine.drops.replayedInitiation, 1);
});

test('a forged initiation with a valid mac1 fails in the job and is counted as a bad initiation', () => {
  const { responder, initiators } = setup(true);
  const forged = Uint8Array.from(initiationFrom(initiators[0]!).bytes);
  forged[40] = forged[40]! ^ 0x80; // inside the encrypted static key
  // A real attacker knows our public key, so it can make mac1 right: recompute it.
  new CookieGenerator(publicKeyOf(responder.privateKey)).addMacs(forged, MESSAGE_INITIATION_SIZE, responder.clock.now);
  deliver(responder, forged);
  assert.equal(runJobs(responder), 1, 'only the open job: the static key did not open');
  assert.equal(responder.engine.pollTransmit(), undefined);
  assert.equal(responder.engine.drops.badInitiation, 1);
});

test('records carry every field of every job and result kind, ids up to 2^32 - 1', () => {
  const { responder, initiators } = setup(true);
  deliver(responder, initiationFrom(initiators[0]!).bytes);
  const open = responder.engine.pollHandshakeJob()!;
  const roundTrip = (job: HandshakeJob): HandshakeJob => {
    const records = new Uint8Array(JOB_RECORD_SIZE);
    encodeJob(job, records, 0);
    return decodeJob(records, 0);
  };
  const openJob = { ...open, id: 0xffffffff } as HandshakeJob;
  assert.deepEqual(roundTrip(openJob), openJob);
  const opened = runHandshakeJob(open);
  const resultRoundTrip = (result: HandshakeJobResult): HandshakeJobResult => {
    const records = new Uint8Array(RESULT_RECORD_SIZE);
    encodeResult(result, records, 0);
    return decodeResult(records, 0);
  };
  assert.deepEqual(resultRoundTrip(opened), opened);
  assert.deepEqual(resultRoundTrip({ kind: 'openInitiation', id: 7, opened: null }), { kind: 'openInitiation', id: 7, opened: null });
  responder.engine.completeHandshakeJob(opened, responder.clock.now);
  const respond = responder.engine.pollHandshakeJob()!;
  assert.equal(respond.kind, 'respond');
  assert.deepEqual(roundTrip(respond), respond);
  const responded = runHandshakeJob(respond);
  assert.deepEqual(resultRoundTrip(responded), responded);
});

test('switching offload on and off at run time: jobs already out still complete, new ones run inline', () => {
  const { responder, initiators } = setup(false, 2);
  deliver(responder, initiationFrom(initiators[0]!).bytes);
  assert.equal(drain(() => responder.engine.pollTransmit()).length, 1, 'inline: answered at once');
  assert.equal(responder.engine.pollHandshakeJob(), undefined);
  responder.engine.setOffloadHandshakeCrypto(true);
  deliver(responder, initiationFrom(initiators[1]!).bytes);
  assert.equal(responder.engine.pollTransmit(), undefined);
  const job = responder.engine.pollHandshakeJob()!;
  responder.engine.setOffloadHandshakeCrypto(false);
  responder.engine.completeHandshakeJob(runInThread(job), responder.clock.now);
  assert.equal(runJobs(responder), 1, 'the respond job of a handshake begun offloaded is still a job');
  assert.equal(drain(() => responder.engine.pollTransmit()).length, 1);
  assert.equal(responder.engine.handshakeJobsInFlight, 0);
});
