// The inbound cryptokey-routing check (whitepaper §2) stays exact although the datapath remembers
// the last inner source it verified per peer: every change to the routing table must be seen by the
// very next packet, whichever way the table changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AllowedIps } from '../../src/wireguard/allowedips.ts';
import { SimNetwork, SimNode, ipv4Packet, v4Endpoint } from '../support/sim.ts';

const A_ADDRESS = Uint8Array.of(10, 0, 0, 1);

function pair(): { net: SimNetwork; a: SimNode; b: SimNode } {
  const net = new SimNetwork(3);
  const a = new SimNode(net, v4Endpoint(1, 51820));
  const b = new SimNode(net, v4Endpoint(2, 51821));
  a.addPeer(0, b, ['10.0.0.2/32'], b.address);
  b.addPeer(0, a, ['10.0.0.1/32'], null);
  return { net, a, b };
}

/** Sends one packet from a's tunnel address to b; returns whether b delivered it. */
function sendFromA(net: SimNetwork, a: SimNode, b: SimNode): boolean {
  const before = b.delivered.length;
  a.sendPacket(ipv4Packet('10.0.0.1', '10.0.0.2', 40));
  net.run(net.now + 100);
  return b.delivered.length === before + 1;
}

test('a route removed, moved to another peer or restored applies to the next packet from a verified source', () => {
  const { net, a, b } = pair();
  assert.ok(sendFromA(net, a, b));
  assert.ok(sendFromA(net, a, b), 'the same source again (the remembered verification)');

  assert.ok(b.datapath.routes.remove(A_ADDRESS, 32, 0));
  assert.equal(sendFromA(net, a, b), false, 'route removed');
  assert.equal(b.datapath.drops.sourceNotAllowed, 1);

  b.datapath.routes.insert(A_ADDRESS, 32, 0);
  assert.ok(sendFromA(net, a, b), 'route restored');

  b.datapath.routes.insert(A_ADDRESS, 32, 5);
  assert.equal(sendFromA(net, a, b), false, 'address moved to another peer');
  assert.equal(b.datapath.drops.sourceNotAllowed, 2);

  b.datapath.routes.insert(A_ADDRESS, 32, 0);
  assert.ok(sendFromA(net, a, b));
  b.datapath.routes.removePeer(0);
  assert.equal(sendFromA(net, a, b), false, 'all of the peer’s routes removed');
  assert.equal(b.datapath.drops.sourceNotAllowed, 3);
});

test('AllowedIps.generation changes on every change of the table and only then', () => {
  const routes = new AllowedIps();
  const seen = [routes.generation];
  const changed = (what: string): void => {
    assert.ok(!seen.includes(routes.generation), what);
    seen.push(routes.generation);
  };
  routes.insert(A_ADDRESS, 32, 1);
  changed('insert');
  routes.insert(A_ADDRESS, 32, 2);
  changed('insert moving a prefix to another peer');
  routes.insert(Uint8Array.of(10, 0, 0, 0), 8, 2);
  changed('insert of a covering prefix');
  routes.lookupV4(A_ADDRESS, 0);
  assert.equal(routes.generation, seen.at(-1), 'a lookup changes nothing');
  assert.equal(routes.remove(A_ADDRESS, 32, 1), false);
  assert.equal(routes.generation, seen.at(-1), 'a remove that finds nothing changes nothing');
  assert.ok(routes.remove(A_ADDRESS, 32, 2));
  changed('remove');
  routes.removePeer(2);
  changed('removePeer');
});
