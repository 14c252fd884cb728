// The control thread's ICE side (src/control/connections.ts) without sockets: two nodes exchange
// candidates through their events, datagrams through a fake network and a fake clock, and each
// ends with a WireGuard endpoint pointing at the other. A node with two connections routes every
// check to the agent it is meant for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IceConnections, transportFromEndpoint, type ConnectionEvent } from '../../src/control/connections.ts';
import { transportAddress, sameTransportAddress, type TransportAddress } from '../../src/ice/address.ts';

interface SimNode {
  readonly name: string;
  readonly address: TransportAddress;
  readonly ice: IceConnections;
  readonly events: ConnectionEvent[];
}

function node(name: string, address: string): SimNode {
  const host = transportAddress(address, 51820);
  return { name, address: host, ice: new IceConnections({ hostAddresses: [host], stunServers: [], relays: [] }), events: [] };
}

const credentials = (tag: string): { ufrag: string; pwd: string } => ({ ufrag: `${tag}ufrag`, pwd: `${tag}passwordoftwentytwochars` });

/** Runs the nodes for `ms` of fake time: delivers datagrams (1 ms delay), fires timers, collects events. */
function run(nodes: readonly SimNode[], start: number, ms: number, signal: (from: SimNode, event: ConnectionEvent) => void): number {
  let now = start;
  const inFlight: Array<{ at: number; from: TransportAddress; to: TransportAddress; bytes: Uint8Array }> = [];
  for (; now < start + ms; now++) {
    for (const n of nodes) {
      if (n.ice.pollTimeout() <= now) n.ice.handleTimeout(now);
      for (let t = n.ice.pollTransmit(); t !== undefined; t = n.ice.pollTransmit()) inFlight.push({ at: now + 1, from: n.address, to: t.to, bytes: t.bytes });
      for (let e = n.ice.pollEvent(); e !== undefined; e = n.ice.pollEvent()) {
        n.events.push(e);
        signal(n, e);
      }
    }
    const due = inFlight.filter((d) => d.at <= now);
    inFlight.splice(0, inFlight.length, ...inFlight.filter((d) => d.at > now));
    for (const d of due) {
      const target = nodes.find((n) => sameTransportAddress(n.address, d.to));
      target?.ice.handleDatagram(d.bytes, d.from, target.address, now);
    }
  }
  return now;
}

test('two nodes connect directly and point their WireGuard endpoints at each other', () => {
  const a = node('a', '192.0.2.1');
  const b = node('b', '192.0.2.2');
  a.ice.add(7, 'controlling', credentials('a'), credentials('b'), 0);
  b.ice.add(3, 'controlled', credentials('b'), credentials('a'), 0);
  run([a, b], 0, 3_000, (from, event) => {
    if (event.kind !== 'localCandidate') return;
    (from === a ? b : a).ice.addRemoteCandidate(from === a ? 3 : 7, event.candidate);
  });
  const up = (n: SimNode) => n.events.find((e) => e.kind === 'connected');
  const aUp = up(a);
  const bUp = up(b);
  assert.ok(aUp?.kind === 'connected' && bUp?.kind === 'connected', JSON.stringify([a.events, b.events]));
  assert.equal(aUp.peer, 7);
  assert.equal(bUp.peer, 3);
  assert.ok(sameTransportAddress(transportFromEndpoint(aUp.endpoint), b.address));
  assert.ok(sameTransportAddress(transportFromEndpoint(bUp.endpoint), a.address));
  assert.equal(aUp.endpoint.relayChannel, undefined, 'a direct path has no relay channel');
  assert.match(aUp.path, /\(direct\)/);
});

test('with two connections on one node, each check reaches the agent it names', () => {
  const hub = node('hub', '192.0.2.10');
  const x = node('x', '192.0.2.11');
  const y = node('y', '192.0.2.12');
  hub.ice.add(1, 'controlled', credentials('hx'), credentials('x'), 0);
  hub.ice.add(2, 'controlled', credentials('hy'), credentials('y'), 0);
  x.ice.add(1, 'controlling', credentials('x'), credentials('hx'), 0);
  y.ice.add(1, 'controlling', credentials('y'), credentials('hy'), 0);
  run([hub, x, y], 0, 3_000, (from, event) => {
    if (event.kind !== 'localCandidate') return;
    if (from === hub) (event.peer === 1 ? x : y).ice.addRemoteCandidate(1, event.candidate);
    else hub.ice.addRemoteCandidate(from === x ? 1 : 2, event.candidate);
  });
  const connected = hub.events.filter((e) => e.kind === 'connected');
  assert.deepEqual(connected.map((e) => e.peer).sort(), [1, 2]);
  for (const e of connected) {
    assert.ok(e.kind === 'connected');
    assert.ok(sameTransportAddress(transportFromEndpoint(e.endpoint), e.peer === 1 ? x.address : y.address));
  }
  assert.equal(hub.ice.dropCounts()['ice.unmatched'], 0);
  assert.equal(hub.ice.dropCounts()['ice.refusedUnauthenticated'] ?? 0, 0, 'a check went to the wrong agent');
});

test('a connection whose peer never answers fails, and garbage is counted, not thrown', () => {
  const a = node('a', '192.0.2.1');
  a.ice.add(5, 'controlling', credentials('a'), credentials('b'), 0);
  a.ice.addRemoteCandidate(5, 'candidate:1 1 udp 2122317823 192.0.2.99 51820 typ host');
  a.ice.handleDatagram(new Uint8Array([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]), a.address, a.address, 1);
  run([a], 0, 20_000, () => undefined);
  const failed = a.events.find((e) => e.kind === 'failed');
  assert.ok(failed?.kind === 'failed' && failed.peer === 5 && /noWorkingPair/.test(failed.reason), JSON.stringify(a.events));
  assert.ok(Object.values(a.ice.dropCounts()).reduce((sum, n) => sum + n, 0) >= 1);
});
