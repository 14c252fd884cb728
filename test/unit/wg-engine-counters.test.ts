// observeCounters tells the device whether a peer's transport counters moved: the device ticks
// every 100 ms while they do and lets an idle device sleep up to a second between ticks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WireGuardEngine } from '../../src/wireguard/engine.ts';
import { generatePrivateKey, publicKeyOf, zeroPresharedKey } from '../../src/wireguard/keys.ts';
import { seededRandom } from '../support/sim.ts';

test('observeCounters reports whether any authenticated packet went either way since the last look', () => {
  const engine = new WireGuardEngine({ shardCount: 1, random: seededRandom(3), wallClock: () => 0 });
  engine.setPrivateKey(generatePrivateKey());
  engine.addPeer(0, 0, publicKeyOf(generatePrivateKey()), zeroPresharedKey());
  const counters = { txData: 0, txAny: 0, rxData: 0, rxAny: 0 };
  assert.equal(engine.observeCounters(0, counters, 1_000), false, 'nothing yet');
  counters.rxAny = 1;
  assert.equal(engine.observeCounters(0, counters, 1_100), true, 'a keepalive arrived');
  assert.equal(engine.observeCounters(0, counters, 1_200), false, 'the same counters again');
  counters.txAny = 3;
  counters.txData = 2;
  assert.equal(engine.observeCounters(0, counters, 1_300), true, 'data went out');
  assert.equal(engine.observeCounters(0, counters, 1_400), false);
  assert.equal(engine.observeCounters(7, counters, 1_500), false, 'an unknown peer');
});
