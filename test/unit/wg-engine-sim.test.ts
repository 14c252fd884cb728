// Whole-protocol simulations: two nodes (engine + datapath each) over a simulated network with a
// fake clock. Covers handshakes, staged packets, roaming, rekeying over a 3-minute session,
// retransmission under loss, giving up, and replayed initiations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SimNetwork, SimNode, ipv4Packet, v4Endpoint } from '../support/sim.ts';
import { REKEY_AFTER_TIME_MS, REJECT_AFTER_TIME_MS, REKEY_ATTEMPT_TIME_MS, KEEPALIVE_TIMEOUT_MS, REKEY_TIMEOUT_MS } from '../../src/wireguard/constants.ts';
import { MESSAGE_INITIATION } from '../../src/wireguard/constants.ts';

function pair(seed = 1): { net: SimNetwork; a: SimNode; b: SimNode } {
  const net = new SimNetwork(seed);
  const a = new SimNode(net, v4Endpoint(1, 51820));
  const b = new SimNode(net, v4Endpoint(2, 51821));
  // a knows b's endpoint; b learns a's from a's handshake.
  a.addPeer(0, b, ['10.0.0.2/32'], b.address);
  b.addPeer(0, a, ['10.0.0.1/32'], null);
  return { net, a, b };
}

test('first packet is staged, a handshake runs, and the packet arrives', () => {
  const { net, a, b } = pair();
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 100));
  net.run(net.now + 100);
  assert.equal(a.handshakesCompleted, 1);
  assert.equal(b.delivered.length, 1);
  assert.equal(b.delivered[0]!.length, 120);
  // b learned a's endpoint from the handshake and can answer without a handshake of its own.
  b.sendPacket(ipv4Packet('10.0.0.2', '10.0.0.1', 50));
  net.run(net.now + 100);
  assert.equal(a.delivered.length, 1);
  // The responder's handshake completed when a's first packet confirmed it; b started none itself.
  assert.equal(b.handshakesCompleted, 1);
  assert.equal(a.handshakesCompleted, 1);
});

test('a packet whose inner source is outside the sender’s allowed IPs is dropped and counted', () => {
  const { net, a, b } = pair();
  a.sendPacket(ipv4Packet('10.9.9.9', '10.0.0.2', 10));
  net.run(net.now + 100);
  assert.equal(b.delivered.length, 0);
  assert.equal(b.datapath.drops.sourceNotAllowed, 1);
});

test('a 3-minute session rekeys after REKEY_AFTER_TIME and never loses a packet', () => {
  const { net, a, b } = pair(7);
  // b learns a's endpoint from a's first handshake; until then it has nowhere to send.
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 64, 0xff));
  net.run(net.now + 100);
  b.delivered.length = 0;
  const start = net.now;
  let sent = 0;
  while (net.now < start + 180_000) {
    a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 64, sent & 0xff));
    b.sendPacket(ipv4Packet('10.0.0.2', '10.0.0.1', 64, sent & 0xff));
    sent++;
    net.run(net.now + 1000);
  }
  net.run(net.now + 100);
  assert.equal(b.delivered.length, sent);
  assert.equal(a.delivered.length, sent);
  // One handshake at the start, another once the session passed REKEY_AFTER_TIME.
  const rekeys = a.handshakesCompleted + b.handshakesCompleted;
  assert.ok(rekeys >= 2, `expected a rekey, saw ${rekeys} handshakes`);
  assert.ok(180_000 / REKEY_AFTER_TIME_MS < rekeys + 1);
  assert.equal(a.datapath.drops.badAuthentication + b.datapath.drops.badAuthentication, 0);
  assert.equal(a.datapath.drops.expiredKeypair + b.datapath.drops.expiredKeypair, 0);
});

test('a one-way flow gets keepalives back, and a silent session expires after REJECT_AFTER_TIME', () => {
  const { net, a } = pair(3);
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 10));
  net.run(net.now + KEEPALIVE_TIMEOUT_MS + 500);
  // b received data and sent nothing back: its keepalive timer answered.
  assert.ok(a.datapath.hasSession(0, net.now));
  const rxAnyAtA = a.stats[5]!;
  assert.ok(rxAnyAtA >= 1, 'a should have received a keepalive from b');
  net.run(net.now + REJECT_AFTER_TIME_MS);
  assert.equal(a.datapath.hasSession(0, net.now), false);
});

test('handshake retransmits through 30% loss and still connects', () => {
  const { net, a, b } = pair(11);
  net.lossRate = 0.3;
  for (let i = 0; i < 40; i++) {
    a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 10, i));
    net.run(net.now + 500);
  }
  net.lossRate = 0;
  net.run(net.now + 2 * REKEY_TIMEOUT_MS);
  assert.ok(a.handshakesCompleted >= 1);
  assert.ok(b.delivered.length > 0);
});

test('with the peer unreachable, initiation retries stop after REKEY_ATTEMPT_TIME and staged packets are released', () => {
  const { net, a } = pair(5);
  net.blackhole = () => true;
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 10));
  let initiations = 0;
  const send = net.send.bind(net);
  net.send = (from, to, bytes) => {
    if (bytes[0] === MESSAGE_INITIATION) initiations++;
    send(from, to, bytes);
  };
  net.run(net.now + REKEY_ATTEMPT_TIME_MS + 3 * REKEY_TIMEOUT_MS);
  assert.ok(initiations >= 17 && initiations <= 20, `saw ${initiations} retransmissions`);
  assert.ok(a.events.some((e) => e.kind === 'clearStaged'));
  const countAfterGivingUp = initiations;
  net.run(net.now + 30_000);
  assert.equal(initiations, countAfterGivingUp, 'no initiations after giving up');
});

test('a replayed initiation is rejected', () => {
  const { net, a, b } = pair(9);
  let captured: Uint8Array | null = null;
  const send = net.send.bind(net);
  net.send = (from, to, bytes) => {
    if (bytes[0] === MESSAGE_INITIATION && captured === null) captured = bytes.slice();
    send(from, to, bytes);
  };
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 10));
  net.run(net.now + 200);
  assert.ok(captured !== null);
  const before = b.engine.drops.replayedInitiation;
  net.send(a.address, b.address, captured);
  net.run(net.now + 200);
  assert.equal(b.engine.drops.replayedInitiation, before + 1);
});

test('roaming: the responder follows the initiator to a new address', () => {
  const { net, a, b } = pair(13);
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 10));
  net.run(net.now + 100);
  a.address = v4Endpoint(99, 40000);
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 10));
  net.run(net.now + 100);
  assert.deepEqual(b.engine.endpointOf(0)?.address, a.address.address);
  b.sendPacket(ipv4Packet('10.0.0.2', '10.0.0.1', 10));
  net.run(net.now + 100);
  assert.equal(a.delivered.length, 1);
});

test('under load a responder answers an initiation without mac2 with a cookie; the retry carries it and succeeds', () => {
  const { net, a, b } = pair(17);
  b.underLoad = true;
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 10));
  net.run(net.now + 1_000);
  assert.equal(b.engine.drops.cookieSent, 1, 'the first initiation gets a cookie reply');
  assert.equal(a.handshakesCompleted, 0);
  assert.equal(a.engine.drops.badCookieReply, 0);
  // The retransmission (REKEY_TIMEOUT later) carries mac2 from the cookie and is accepted.
  net.run(net.now + REKEY_TIMEOUT_MS + 1_000);
  assert.equal(a.handshakesCompleted, 1);
  assert.equal(b.engine.drops.cookieSent, 1);
  assert.equal(b.delivered.length, 1);
});
