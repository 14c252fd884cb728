// ICE agent in a simulated network with a fake clock: NAT traversal, relays, relayed → direct
// switching, consent expiry, role conflicts, loss, and what it does with hostile input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IceAgent, type IceEvent, type IcePath, type IceTransmit } from '../../src/ice/agent.ts';
import { transportAddress } from '../../src/ice/address.ts';
import { parseCandidate } from '../../src/ice/candidates.ts';
import {
  getErrorCode, getUint64, parseStun, shortTermKey, StunAttribute, StunMessageBuilder, StunMethod, transactionIdFromBytes,
} from '../../src/ice/stun.ts';
import { IceSim, type SimPeer } from '../support/ice-sim.ts';

const kinds = (peer: SimPeer): string[] => peer.events.map((e) => e.event.kind);
const connected = (peer: SimPeer): boolean => peer.agent.selectedPath() !== null;
const isRelayed = (path: IcePath | null): boolean => path !== null && (path.local.type === 'relay' || path.remote.type === 'relay');

/** Two peers behind NATs of the given kind, each with one relay candidate. */
function natPair(kind: 'endpointIndependent' | 'symmetric', seed = 1) {
  const sim = new IceSim(seed);
  const relayA = sim.addRelay('relay-a', '203.0.113.10');
  const relayB = sim.addRelay('relay-b', '203.0.113.20');
  const a = sim.addPeer({ name: 'a', role: 'controlling', host: transportAddress('10.0.1.2', 51820), nat: sim.addNat('198.51.100.1', kind), relays: [relayA] });
  const b = sim.addPeer({ name: 'b', role: 'controlled', host: transportAddress('10.0.2.2', 51820), nat: sim.addNat('198.51.100.2', kind), relays: [relayB] });
  return { sim, a, b };
}

/** Both sides must use the same path: A's remote is what B's local base looks like from outside, and vice versa. */
function assertSamePath(a: SimPeer, b: SimPeer): void {
  const pa = a.agent.selectedPath();
  const pb = b.agent.selectedPath();
  assert.ok(pa && pb);
  assert.equal(pa.local.relay !== null, pb.remote.type === 'relay');
  assert.equal(pb.local.relay !== null, pa.remote.type === 'relay');
  if (pa.local.relay !== null) assert.deepEqual(pb.remote.address, pa.local.base);
  if (pb.local.relay !== null) assert.deepEqual(pa.remote.address, pb.local.base);
}

test('endpoint-independent NATs on both sides: a direct path, the same on both ends', () => {
  const { sim, a, b } = natPair('endpointIndependent');
  sim.exchange(a, b);
  const took = sim.runUntil(() => connected(a) && connected(b), 5_000);
  assert.ok(took < 2_000, `connected after ${took} ms`);
  sim.run(sim.now + 2_000); // let any better pair finish and be nominated
  const pa = a.agent.selectedPath();
  const pb = b.agent.selectedPath();
  assert.ok(pa && pb);
  assert.ok(!isRelayed(pa), `a chose ${pa.local.type} → ${pa.remote.type}`);
  assert.ok(!isRelayed(pb), `b chose ${pb.local.type} → ${pb.remote.type}`);
  // Each side sends to the other's NAT mapping from its own host socket.
  assert.equal(pa.remote.address.address, '198.51.100.2');
  assert.equal(pb.remote.address.address, '198.51.100.1');
  assert.deepEqual(pa.local.base, a.host);
  assert.equal(kinds(a)[0], 'connected');
  assert.equal(kinds(b)[0], 'connected');
  assert.ok(!kinds(a).includes('failed') && !kinds(b).includes('failed'));
});

test('symmetric NATs on both sides: only a relayed pair works, and it is used', () => {
  const { sim, a, b } = natPair('symmetric');
  sim.exchange(a, b);
  const took = sim.runUntil(() => connected(a) && connected(b), 15_000);
  assert.ok(took < 5_000, `connected after ${took} ms`);
  sim.run(sim.now + 20_000);
  assert.ok(isRelayed(a.agent.selectedPath()), 'a uses a relay');
  assert.ok(isRelayed(b.agent.selectedPath()), 'b uses a relay');
  assertSamePath(a, b);
  // Every direct pair failed: the NATs filter them.
  const direct = a.agent.checklist().filter((p) => !isRelayed(p));
  assert.ok(direct.length > 0 && direct.every((p) => p.state === 'failed'), direct.map((p) => p.state).join(','));
  assert.ok(!kinds(a).includes('failed') && !kinds(b).includes('failed'), 'consent keeps the relayed path alive');
});

test('a path that starts relayed becomes direct as soon as that works: pathChanged on both sides', () => {
  const { sim, a, b } = natPair('endpointIndependent');
  const relayIps = new Set(['203.0.113.10', '203.0.113.20']);
  sim.blackhole = (from, to) => !relayIps.has(from.address) && !relayIps.has(to.address);
  sim.exchange(a, b);
  sim.runUntil(() => connected(a) && connected(b), 5_000);
  assert.ok(isRelayed(a.agent.selectedPath()) && isRelayed(b.agent.selectedPath()));
  const openedAt = sim.now + 3_000;
  sim.run(openedAt);
  sim.blackhole = null; // the direct path opens; retransmitted checks get through
  const took = sim.runUntil(() => !isRelayed(a.agent.selectedPath()) && !isRelayed(b.agent.selectedPath()), 15_000);
  assert.ok(took < 5_000, `direct after ${took} ms`);
  for (const peer of [a, b]) {
    const changed = peer.events.find((e) => e.event.kind === 'pathChanged');
    assert.ok(changed && changed.event.kind === 'pathChanged', `${peer.name} saw pathChanged`);
    assert.ok(isRelayed(changed.event.previous) && !isRelayed(changed.event.pair));
  }
  assert.deepEqual(kinds(a).filter((k) => k === 'connected'), ['connected']);
});

test('losing the path: failed with consentExpired once no consent arrived for the consent timeout', () => {
  const { sim, a, b } = natPair('endpointIndependent');
  sim.exchange(a, b);
  sim.runUntil(() => connected(a) && connected(b), 5_000);
  sim.run(sim.now + 12_000); // a few consent rounds
  assert.ok(!a.agent.hasFailed && !b.agent.hasFailed);
  const cutAt = sim.now;
  sim.blackhole = () => true;
  sim.run(cutAt + 30_000);
  for (const peer of [a, b]) {
    const failed = peer.events.find((e) => e.event.kind === 'failed');
    assert.ok(failed && failed.event.kind === 'failed', `${peer.name} failed`);
    assert.equal(failed.event.reason, 'consentExpired');
    // Consent was last refreshed at most ~6 s (1.2 × 5 s plus a round trip) before the cut.
    const after = failed.at - cutAt;
    assert.ok(after <= 15_000 && after >= 15_000 - 6_500, `${peer.name} failed ${after} ms after the cut`);
    assert.equal(peer.agent.pollTimeout(), Infinity);
  }
});

test('no working pair at all: failed with noWorkingPair at the connect timeout', () => {
  const { sim, a, b } = natPair('symmetric');
  sim.blackhole = () => true;
  sim.exchange(a, b);
  sim.run(sim.now + 20_000);
  for (const peer of [a, b]) {
    const failed = peer.events.find((e) => e.event.kind === 'failed');
    assert.ok(failed && failed.event.kind === 'failed' && failed.event.reason === 'noWorkingPair');
    assert.equal(failed.at, 1_000_000 + 15_000);
  }
});

for (const role of ['controlling', 'controlled'] as const) {
  test(`role conflict: both ${role} → one of each, and one shared path`, () => {
    for (const seed of [1, 2, 3, 4]) {
      const sim = new IceSim(seed);
      const a = sim.addPeer({ name: 'a', role, host: transportAddress('192.0.2.1', 1000) });
      const b = sim.addPeer({ name: 'b', role, host: transportAddress('192.0.2.2', 2000) });
      sim.exchange(a, b);
      const took = sim.runUntil(() => connected(a) && connected(b), 5_000);
      assert.ok(took < 2_000, `seed ${seed}: connected after ${took} ms`);
      assert.notEqual(a.agent.currentRole, b.agent.currentRole, `seed ${seed}`);
      assert.ok(a.agent.stats.roleConflicts + b.agent.stats.roleConflicts > 0);
      assert.ok([...kinds(a), ...kinds(b)].includes('roleChanged'));
      assert.deepEqual(a.agent.selectedPath()?.remote.address, b.host);
      assert.deepEqual(b.agent.selectedPath()?.remote.address, a.host);
    }
  });
}

test('30% random loss: retransmissions still connect, and consent survives', () => {
  for (const seed of [11, 12, 13, 14, 15]) {
    const { sim, a, b } = natPair('endpointIndependent', seed);
    sim.lossRate = 0.3;
    sim.exchange(a, b);
    const took = sim.runUntil(() => connected(a) && connected(b), 15_000);
    assert.ok(took < 10_000, `seed ${seed}: connected after ${took} ms`);
    assert.ok(a.agent.stats.retransmits + b.agent.stats.retransmits > 0);
    sim.run(sim.now + 60_000);
    assert.ok(!a.agent.hasFailed && !b.agent.hasFailed, `seed ${seed}: consent held under loss`);
  }
});

test('remote candidates trickled late still connect; a duplicate or foreign-component candidate is refused', () => {
  const sim = new IceSim(5);
  const a = sim.addPeer({ name: 'a', role: 'controlling', host: transportAddress('192.0.2.1', 1000) });
  const b = sim.addPeer({ name: 'b', role: 'controlled', host: transportAddress('192.0.2.2', 2000) });
  a.agent.setRemoteCredentials({ ufrag: b.agent.localUfrag, pwd: 'password2'.padEnd(24, 'x') });
  b.agent.setRemoteCredentials({ ufrag: a.agent.localUfrag, pwd: 'password1'.padEnd(24, 'x') });
  sim.run(sim.now + 1_000);
  assert.ok(!connected(a));
  sim.sendCandidates(b, a); // only one direction: b learns a as peer-reflexive from a's checks
  sim.runUntil(() => connected(a) && connected(b), 3_000);
  assert.ok(connected(a) && connected(b));
  assert.equal(b.agent.selectedPath()?.remote.type, 'prflx');
  const line = 'candidate:1 1 udp 2130706431 192.0.2.2 2000 typ host';
  assert.equal(a.agent.addRemoteCandidate(parseCandidate(line)), false);
  assert.equal(a.agent.addRemoteCandidate(parseCandidate('candidate:1 2 udp 2130706431 192.0.2.9 2000 typ host')), false);
});

// ---- hostile input, one agent driven by hand ----

const LOCAL = { ufrag: 'locl', pwd: 'local-password-0123456789'.replace(/-/g, 'x') };
const REMOTE = { ufrag: 'remt', pwd: 'remotexpasswordx0123456789' };
const HOST = transportAddress('192.0.2.1', 51820);
const PEER = transportAddress('192.0.2.77', 40000);
const ARRIVAL = { local: HOST, relay: null };

function loneAgent(): IceAgent {
  let n = 0;
  const agent = new IceAgent({
    role: 'controlled', local: LOCAL, remote: REMOTE, now: 0,
    randomBytes: (length) => new Uint8Array(length).map(() => (n++ * 37 + 11) & 0xff),
  });
  agent.addLocalCandidate({ type: 'host', address: HOST });
  return agent;
}

function drainTransmits(agent: IceAgent): IceTransmit[] {
  const out: IceTransmit[] = [];
  for (let t = agent.pollTransmit(); t !== undefined; t = agent.pollTransmit()) out.push(t);
  return out;
}

function drainEvents(agent: IceAgent): IceEvent[] {
  const out: IceEvent[] = [];
  for (let e = agent.pollEvent(); e !== undefined; e = agent.pollEvent()) out.push(e);
  return out;
}

let nextId = 1;
function request(options: { username?: string; key?: Uint8Array | null; fingerprint?: boolean; controlling?: boolean } = {}): Uint8Array {
  const id = transactionIdFromBytes(new Uint8Array(12).fill(nextId++ & 0xff));
  const builder = new StunMessageBuilder(StunMethod.binding, 'request', id);
  if (options.username !== null) builder.username(options.username ?? `${LOCAL.ufrag}:${REMOTE.ufrag}`);
  builder.priority(1_853_824_767);
  if (options.controlling ?? true) builder.iceControlling(5n);
  const key = options.key === undefined ? shortTermKey(LOCAL.pwd) : options.key;
  return builder.encode({ integrityKey: key ?? undefined, fingerprint: options.fingerprint ?? true });
}

function onlyReply(agent: IceAgent): ReturnType<typeof parseStun> {
  const replies = drainTransmits(agent);
  assert.equal(replies.length, 1);
  assert.deepEqual(replies[0].to, PEER);
  return parseStun(replies[0].bytes);
}

test('a good request is answered with a signed success carrying XOR-MAPPED-ADDRESS', () => {
  const agent = loneAgent();
  assert.ok(agent.handleInput(request(), PEER, ARRIVAL, 10));
  const reply = onlyReply(agent);
  assert.equal(reply?.messageClass, 'success');
  assert.equal(agent.stats.requestsAnswered, 1);
});

test('unauthenticated or incomplete requests get 400/401, unsigned, counted, never a success', () => {
  const agent = loneAgent();
  const cases: { bytes: Uint8Array; code: number }[] = [
    { bytes: request({ key: null }), code: 400 }, // no MESSAGE-INTEGRITY
    { bytes: request({ username: undefined, key: shortTermKey('wrongwrongwrongwrongwrong') }), code: 401 },
    { bytes: request({ username: `other:${REMOTE.ufrag}` }), code: 401 }, // not our ufrag
    { bytes: request({ username: `${LOCAL.ufrag}:stale` }), code: 401 }, // another session's remote ufrag
  ];
  for (const { bytes, code } of cases) {
    assert.ok(agent.handleInput(bytes, PEER, ARRIVAL, 10));
    const reply = onlyReply(agent);
    assert.equal(reply?.messageClass, 'error');
    assert.equal(reply && getErrorCode(reply)?.code, code);
    assert.equal(reply?.integrityOffset, -1, 'refusals to unauthenticated requests are not signed');
  }
  assert.equal(agent.stats.refusedBadRequest, 1);
  assert.equal(agent.stats.refusedUnauthenticated, 3);
  assert.equal(agent.stats.requestsAnswered, 0);
  // Authenticated but without a role attribute: 400, signed.
  assert.ok(agent.handleInput(request({ controlling: false }), PEER, ARRIVAL, 10));
  assert.equal(onlyReply(agent) && agent.stats.refusedBadRequest, 2);
  assert.deepEqual(agent.remoteCandidates(), [], 'refused requests teach no peer-reflexive candidate');
});

test('no FINGERPRINT, garbage, unmatched and forged responses: dropped and counted, nothing sent', () => {
  const agent = loneAgent();
  assert.ok(agent.handleInput(request({ fingerprint: false }), PEER, ARRIVAL, 10));
  assert.equal(agent.stats.droppedFingerprint, 1);
  assert.equal(agent.handleInput(new Uint8Array([4, 0, 0, 0, 1, 2, 3]), PEER, ARRIVAL, 10), false, 'not STUN: not ours');
  assert.equal(agent.stats.droppedMalformed, 1);
  const unmatched = new StunMessageBuilder(StunMethod.binding, 'success', transactionIdFromBytes(new Uint8Array(12).fill(0xee)))
    .xorMappedAddress(HOST).encode({ integrityKey: shortTermKey(REMOTE.pwd), fingerprint: true });
  assert.ok(agent.handleInput(unmatched, PEER, ARRIVAL, 10));
  assert.equal(agent.stats.droppedUnmatchedResponse, 1);
  assert.deepEqual(drainTransmits(agent), []);

  // A response to our real check, but signed with the wrong password, changes nothing.
  agent.addRemoteCandidate(parseCandidate(`candidate:x 1 udp 2130706431 ${PEER.address} ${PEER.port} typ host`));
  agent.handleTimeout(0);
  const [check] = drainTransmits(agent);
  const checkMessage = parseStun(check.bytes);
  assert.ok(checkMessage);
  assert.equal(getUint64(checkMessage, StunAttribute.iceControlled) !== undefined, true);
  const forged = new StunMessageBuilder(StunMethod.binding, 'success', checkMessage.transactionId)
    .xorMappedAddress(HOST).encode({ integrityKey: shortTermKey('attackerattackerattacker'), fingerprint: true });
  assert.ok(agent.handleInput(forged, PEER, ARRIVAL, 20));
  assert.equal(agent.stats.droppedResponseIntegrity, 1);
  assert.ok(agent.ownsTransaction(checkMessage.transactionId), 'the real transaction keeps going');
  assert.ok(agent.checklist().every((p) => p.state !== 'succeeded'));
  // The genuine response (from the right address) succeeds the pair.
  const genuine = new StunMessageBuilder(StunMethod.binding, 'success', checkMessage.transactionId)
    .xorMappedAddress(HOST).encode({ integrityKey: shortTermKey(REMOTE.pwd), fingerprint: true });
  assert.ok(agent.handleInput(genuine, PEER, ARRIVAL, 30));
  assert.equal(agent.checklist()[0].state, 'succeeded');
  assert.deepEqual(drainEvents(agent), [], 'controlled: success alone selects nothing until nominated');
});

test('fuzz: handleInput never throws, and mutated signed requests never earn a success', () => {
  const agent = loneAgent();
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 160 }), (bytes) => {
      agent.handleInput(bytes, PEER, ARRIVAL, 10);
      for (const t of drainTransmits(agent)) assert.notEqual(parseStun(t.bytes)?.messageClass, 'success');
    }),
    { numRuns: 3000, interruptAfterTimeLimit: 3000 },
  );
  const valid = request();
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), (edits) => {
      const bytes = valid.slice();
      for (const [at, flip] of edits) bytes[at % bytes.length] ^= flip;
      if (Buffer.compare(bytes, valid) === 0) return;
      agent.handleInput(bytes, PEER, ARRIVAL, 10);
      for (const t of drainTransmits(agent)) assert.notEqual(parseStun(t.bytes)?.messageClass, 'success');
    }),
    { numRuns: 3000, interruptAfterTimeLimit: 3000 },
  );
  assert.equal(agent.stats.requestsAnswered, 0);
});
