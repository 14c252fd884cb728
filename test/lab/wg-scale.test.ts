// Configurations at scale: one peer with 130,000 allowed IPs (set in one `wg setconf`, listed in full
// and still routing), and a hub with 40 peers, each a namespace of its own, each reached correctly.

import assert from 'node:assert/strict';
import {
  buildPair, endpointOf, generateKeyPair, hostRoute, labTest, PAIR_ADDRESSES, peerIn, ping, requireRoot,
  upTunnel, wg, wgSetconf, wgShowDump, wireguardGo,
} from './lab.ts';
import type { KeyPair, Lab, Netns, WgImpl } from './lab.ts';

await requireRoot();

/** 130,000 distinct canonical prefixes: IPv4 /32 and /24, IPv6 /128, as `wg` prints them. */
function manyPrefixes(count: number): string[] {
  const prefixes: string[] = [];
  for (let i = 0; i < 1000; i++) prefixes.push(`172.${16 + (i >> 8)}.${i & 255}.0/24`);
  for (let i = 1; i <= 49_000; i++) prefixes.push(`fd5c::${i.toString(16)}/128`);
  for (let i = 0; prefixes.length < count; i++) prefixes.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);
  return prefixes;
}

labTest('a peer with 130,000 allowed IPs: one setconf, listed in full, still routing', 90_000, async (lab, impls) => {
  const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
  const generated = manyPrefixes(130_000 - 2);
  const expected = [...generated, ...PAIR_ADDRESSES.tunnel.b.map(hostRoute)];
  const started = Date.now();
  await wgSetconf(a.ns, a.ifname, {
    ...a.config,
    peers: a.config.peers.map((peer) => ({ ...peer, allowedIps: expected })),
  }, 60_000);
  const setconfMs = Date.now() - started;

  const listing = await wg(a.ns, ['show', a.ifname, 'allowed-ips'], { timeoutMs: 30_000 });
  const [key, list = ''] = listing.trim().split('\t');
  assert.equal(key, b.keys.publicKey);
  const listed = list.split(' ');
  assert.equal(listed.length, expected.length, 'every allowed IP is listed');
  assert.deepEqual(new Set(listed), new Set(expected));

  // The peer's own addresses, buried among 130,000 others, still route (and only to it).
  for (const target of [b.tunnelV4, b.tunnelV6]) {
    const result = await ping(a.ns, target);
    assert.equal(result.received, result.transmitted, `ping ${target}`);
  }
  console.log(`# ${impls.name}: setconf of 130,000 allowed IPs took ${setconfMs} ms`);
});

const SPOKES = 40;
const HUB_PORT = 51820;
const SPOKE_PORT = 51821;

type Spoke = { readonly ns: Netns; readonly keys: KeyPair; readonly underlay: string; readonly tunnel: string };

async function startSpoke(lab: Lab, impl: WgImpl, hub: Netns, hubKeys: KeyPair, index: number): Promise<Spoke> {
  const ns = await lab.namespace(`s${index}`);
  const subnet = 100 + index;
  await lab.veth(hub, ns, { labelA: `h${index}`, labelB: `s${index}v`,
    addressesA: [`198.18.${subnet}.1/24`], addressesB: [`198.18.${subnet}.2/24`] });
  const keys = await generateKeyPair();
  const ifname = lab.name(`s${index}w`);
  await impl.start(ns, ifname);
  await wgSetconf(ns, ifname, { privateKey: keys.privateKey, listenPort: SPOKE_PORT,
    peers: [{ publicKey: hubKeys.publicKey, endpoint: endpointOf(`198.18.${subnet}.1`, HUB_PORT),
      allowedIps: ['198.19.0.0/24'] }] });
  const tunnel = `198.19.0.${10 + index}`;
  await upTunnel(ns, ifname, [`${tunnel}/24`]);
  return { ns, keys, underlay: `198.18.${subnet}.2`, tunnel };
}

/** Runs `task` over `items`, at most `limit` at a time (keeps a 2-core machine responsive). */
async function inBatches<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let i = 0; i < items.length; i += limit) results.push(...await Promise.all(items.slice(i, i + limit).map(task)));
  return results;
}

labTest(`a hub with ${SPOKES} peers, each in its own namespace, reaches each one`, 120_000, async (lab, impls) => {
  const hub = await lab.namespace('hub');
  const hubKeys = await generateKeyPair();
  const indices = Array.from({ length: SPOKES }, (_, i) => i);
  // The hub is the device under test (side A's implementation); the 40 spokes are the rest of the
  // network, played by wireguard-go: 40 extra Node processes would only test start-up on 2 cores.
  const spokes = await inBatches(indices, 8, (index) => startSpoke(lab, wireguardGo, hub, hubKeys, index));

  const hubIf = lab.name('hubw');
  await impls.a.start(hub, hubIf);
  await wgSetconf(hub, hubIf, { privateKey: hubKeys.privateKey, listenPort: HUB_PORT,
    peers: spokes.map((spoke) => ({ publicKey: spoke.keys.publicKey, endpoint: endpointOf(spoke.underlay, SPOKE_PORT),
      allowedIps: [`${spoke.tunnel}/32`] })) });
  await upTunnel(hub, hubIf, ['198.19.0.1/24']);

  // A spoke only answers for its own tunnel address: a reply proves the hub picked the right peer.
  const results = await inBatches(spokes, 10, (spoke) => ping(hub, spoke.tunnel, { count: 2 }));
  results.forEach((result, index) => {
    assert.equal(result.received, result.transmitted, `spoke ${index} at ${spokes[index]?.tunnel}: ${result.errors}`);
  });
  const dump = await wgShowDump(hub, hubIf);
  assert.equal(dump.peers.length, SPOKES);
  for (const spoke of spokes) {
    const peer = peerIn(dump, spoke.keys.publicKey);
    assert.deepEqual(peer.allowedIps, [`${spoke.tunnel}/32`]);
    assert.equal(peer.endpoint, endpointOf(spoke.underlay, SPOKE_PORT));
    assert.ok(peer.latestHandshake > 0 && peer.rxBytes > 0 && peer.txBytes > 0, `traffic with ${spoke.tunnel}`);
  }
});
