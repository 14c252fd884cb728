// WireGuard behaviour over real namespaces: what any implementation (wireguard-go, ztgate, or one of
// each) must do, checked from the outside with wg, ping, iperf3 and the kernel's own counters.
// Implementations come from ZTGATE_LAB_IMPLS (see lab.ts); side A runs pairing.a, side B pairing.b.

import assert from 'node:assert/strict';
import {
  buildPair, endpointOf, iperf3, labTest, linkStats, PAIR_ADDRESSES, peerIn, ping, requireRoot, restartSide,
  upTunnel, wg, wgShowDump, wireguardGo,
} from './lab.ts';
import type { ImplPairing, Lab, Netns, Pair, PingResult, Side } from './lab.ts';

await requireRoot();

/** The largest tunnel MTU an IPv4 underlay can carry: 65535 (IPv4 total length) − 20 (IPv4) − 8 (UDP) −
 * 32 (transport header 16 + Poly1305 tag 16, whitepaper §5.4.6). Padding never exceeds the MTU. */
const LARGEST_TUNNEL_MTU_OVER_IPV4 = 65535 - 20 - 8 - 32;
const ICMP_OVER_IPV4 = 20 + 8;
const ICMP_OVER_IPV6 = 40 + 8;

function assertAllReplies(result: PingResult, what: string): void {
  assert.equal(result.received, result.transmitted, `${what}: ${result.received}/${result.transmitted} replies ${result.errors}`);
  assert.ok(result.transmitted > 0, `${what}: nothing sent`);
}

async function endpointSeenBy(side: Side, peer: Side): Promise<string | null> {
  return peerIn(await wgShowDump(side.ns, side.ifname), peer.keys.publicKey).endpoint;
}

/** UDP ports bound in `ns` (`ss -uln`). */
async function boundUdpPorts(ns: Netns): Promise<number[]> {
  const { stdout } = await ns.exec('ss', ['-H', '-u', '-l', '-n']);
  return stdout.split('\n').filter(Boolean).map((line) => Number(/:(\d+)\s/.exec(line)?.[1]));
}

for (const initiator of ['a', 'b'] as const) {
  labTest(`handshake initiated by side ${initiator.toUpperCase()}; ping and TCP both ways; dump reports it`, 40_000,
    async (lab, impls) => {
      // Only the initiator knows an endpoint, so the handshake can only come from it, and the
      // responder must learn the initiator's endpoint from it.
      const pair = await buildPair(lab, { implA: impls.a, implB: impls.b,
        endpoints: initiator === 'a' ? 'a-knows-b' : 'b-knows-a' });
      const [from, to] = initiator === 'a' ? [pair.a, pair.b] : [pair.b, pair.a];
      assert.equal(peerIn(await wgShowDump(from.ns, from.ifname), to.keys.publicKey).latestHandshake, 0);

      assertAllReplies(await ping(from.ns, to.tunnelV4, { count: 5 }), 'IPv4 ping from the initiator');
      assertAllReplies(await ping(to.ns, from.tunnelV6, { count: 5 }), 'IPv6 ping from the responder');
      const forward = await iperf3({ ns: to.ns, address: to.tunnelV4 }, from.ns, { protocol: 'tcp', durationS: 2 });
      const backward = await iperf3({ ns: to.ns, address: to.tunnelV4 }, from.ns,
        { protocol: 'tcp', durationS: 2, reverse: true });
      assert.ok(forward.gbps > 0.01 && backward.gbps > 0.01, `TCP ${forward.gbps} / ${backward.gbps} Gbit/s`);

      const now = Date.now() / 1000;
      for (const [side, peer] of [[from, to], [to, from]] as const) {
        const seen = peerIn(await wgShowDump(side.ns, side.ifname), peer.keys.publicKey);
        assert.ok(Math.abs(seen.latestHandshake - now) < 60, `${side.ifname}: latest handshake ${seen.latestHandshake}, now ${now}`);
        assert.ok(seen.rxBytes > 0 && seen.txBytes > 0, `${side.ifname}: rx ${seen.rxBytes} tx ${seen.txBytes}`);
        // Transfer counts include WireGuard's own overhead, so they are at least the TCP payload.
        const sent = side === from ? forward.bytesReceived : backward.bytesReceived;
        const received = side === from ? backward.bytesReceived : forward.bytesReceived;
        assert.ok(seen.txBytes >= sent, `${side.ifname}: tx ${seen.txBytes} < payload ${sent}`);
        assert.ok(seen.rxBytes >= received, `${side.ifname}: rx ${seen.rxBytes} < payload ${received}`);
      }
      assert.equal(await endpointSeenBy(to, from), endpointOf(from.underlay.addresses[0] ?? '', from.listenPort),
        'the responder learnt the initiator\'s endpoint from the handshake');
    }, { alsoWith: 'ztgate:1,ztgate:2,mixed:1,mixed:2' });
}

labTest('traffic resumes after either daemon restarts with the same keys', 60_000, async (lab, impls) => {
  let { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
  assertAllReplies(await ping(a.ns, b.tunnelV4), 'before restarts');

  a = await restartSide(a, impls.a);
  assert.equal(peerIn(await wgShowDump(a.ns, a.ifname), b.keys.publicKey).latestHandshake, 0, 'a fresh daemon');
  // B still holds a session A forgot: B must notice the silence and handshake again after
  // KEEPALIVE_TIMEOUT + REKEY_TIMEOUT = 15 s (whitepaper §6.5; plus up to 1/3 s jitter).
  const started = Date.now();
  const recovered = await ping(b.ns, a.tunnelV4, { count: 1, intervalS: 0.5, deadlineS: 30 });
  const recoveryMs = Date.now() - started;
  assert.equal(recovered.received, 1, `B never reached the restarted A: ${recovered.errors}`);
  assert.ok(recoveryMs < 20_000, `B took ${recoveryMs} ms to re-handshake with the restarted A`);

  b = await restartSide(b, impls.b);
  assertAllReplies(await ping(b.ns, a.tunnelV4), 'the restarted side initiating');
  assertAllReplies(await ping(a.ns, b.tunnelV6), 'back the other way');
});

labTest('roaming: the endpoint follows the latest authenticated packet, also across address families', 30_000,
  async (lab, impls) => {
    const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
    assertAllReplies(await ping(a.ns, b.tunnelV4), 'before moving');
    assert.equal(await endpointSeenBy(b, a), endpointOf('198.18.0.1', a.listenPort));

    // A moves to a new IPv4 address; B's configured endpoint is now stale until A speaks. A
    // re-applies its peer's endpoint, as a roaming host does on a network change: that also drops
    // the source address A had been answering from (whether A drops a vanished source by itself is
    // the subject of the reply-source tests below).
    await a.ns.removeAddress(a.underlay.dev, '198.18.0.1/24');
    await a.ns.addAddress(a.underlay.dev, '198.18.0.11/24');
    await wg(a.ns, ['set', a.ifname, 'peer', b.keys.publicKey, 'endpoint', endpointOf('198.18.0.2', b.listenPort)]);
    assertAllReplies(await ping(a.ns, b.tunnelV4), 'after A moved');
    assert.equal(await endpointSeenBy(b, a), endpointOf('198.18.0.11', a.listenPort));
    assertAllReplies(await ping(b.ns, a.tunnelV4), 'B answering at the new address');

    // A now reaches B over IPv6: B must switch to A's IPv6 endpoint.
    await wg(a.ns, ['set', a.ifname, 'peer', b.keys.publicKey, 'endpoint', endpointOf('fd5a::2', b.listenPort)]);
    assertAllReplies(await ping(a.ns, b.tunnelV6), 'A over the IPv6 underlay');
    assert.equal(await endpointSeenBy(b, a), endpointOf('fd5a::1', a.listenPort));
    assertAllReplies(await ping(b.ns, a.tunnelV4), 'B answering over IPv6');
  });

/**
 * A pair where A has extra addresses .11 and .12 besides its primary .1 and knows no endpoint for
 * B (so everything A sends answers B), and B talks to A at .11.
 */
async function buildMultiAddressPair(lab: Lab, impls: ImplPairing): Promise<Pair> {
  const pair = await buildPair(lab, { implA: impls.a, implB: impls.b, endpoints: 'b-knows-a' });
  // Secondary addresses: by itself the kernel would pick .1 as the source.
  await pair.a.ns.addAddress(pair.a.underlay.dev, '198.18.0.11/24');
  await pair.a.ns.addAddress(pair.a.underlay.dev, '198.18.0.12/24');
  await wg(pair.b.ns, ['set', pair.b.ifname, 'peer', pair.a.keys.publicKey,
    'endpoint', endpointOf('198.18.0.11', pair.a.listenPort)]);
  return pair;
}

labTest('replies leave from the address the peer\'s packets arrived on', 30_000, async (lab, impls) => {
  const { a, b } = await buildMultiAddressPair(lab, impls);
  assertAllReplies(await ping(b.ns, a.tunnelV4, { count: 5 }), 'B to A at .11');
  assertAllReplies(await ping(a.ns, b.tunnelV4, { count: 5 }), 'A to B');
  // Had A answered from .1, B would have roamed there.
  assert.equal(await endpointSeenBy(b, a), endpointOf('198.18.0.11', a.listenPort), 'A answered from .11');

  // .11 disappears; B learns (out of band) of .12: A's replies must follow to .12, not go to .1.
  await a.ns.removeAddress(a.underlay.dev, '198.18.0.11/24');
  await wg(b.ns, ['set', b.ifname, 'peer', a.keys.publicKey, 'endpoint', endpointOf('198.18.0.12', a.listenPort)]);
  assertAllReplies(await ping(b.ns, a.tunnelV4, { count: 5 }), 'B to A at .12');
  assertAllReplies(await ping(a.ns, b.tunnelV6, { count: 5 }), 'A to B after the switch');
  assert.equal(await endpointSeenBy(b, a), endpointOf('198.18.0.12', a.listenPort), 'A answered from .12');
});

// Debian's wireguard-go (0.0.20220316) drops a stale source address only when sendmsg fails with
// EINVAL; Linux ≥ 6.x answers ENETUNREACH for a vanished IP_PKTINFO source, so that wireguard-go
// stays silent until its peer speaks to a live address. The kernel's WireGuard checks that the
// source is still local before each send (inet_confirm_addr) and falls back; ztgate must too. So this
// test is declared only where side A is not wireguard-go.
labTest('when the address replies left from disappears, the next packets fall back to another one', 30_000,
  async (lab, impls) => {
    const { a, b } = await buildMultiAddressPair(lab, impls);
    assertAllReplies(await ping(b.ns, a.tunnelV4, { count: 3 }), 'B to A at .11');
    assert.equal(await endpointSeenBy(b, a), endpointOf('198.18.0.11', a.listenPort));

    await a.ns.removeAddress(a.underlay.dev, '198.18.0.11/24');
    assertAllReplies(await ping(a.ns, b.tunnelV4, { count: 5 }), 'A to B after losing .11');
    const fallback = await endpointSeenBy(b, a);
    assert.ok(fallback === endpointOf('198.18.0.1', a.listenPort) || fallback === endpointOf('198.18.0.12', a.listenPort),
      `B sees A at ${fallback}`);
    assertAllReplies(await ping(b.ns, a.tunnelV4, { count: 3 }), 'B to A at the fallback address');
  }, { when: (impls) => impls.a !== wireguardGo });

labTest('MTU changes at run time, up to the largest an IPv4 underlay can carry', 40_000, async (lab, impls) => {
  const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b, underlayMtu: 65535, tunnelMtu: 1420 });
  const setBoth = async (mtu: number): Promise<void> => {
    await a.ns.setLink(a.ifname, ['mtu', String(mtu)]);
    await b.ns.setLink(b.ifname, ['mtu', String(mtu)]);
  };
  const probe = (side: Side, target: string, size: number): Promise<PingResult> =>
    ping(side.ns, target, { count: 2, size, dontFragment: true });

  for (const mtu of [1420, 1280, 9000, LARGEST_TUNNEL_MTU_OVER_IPV4]) {
    await setBoth(mtu);
    assertAllReplies(await probe(a, b.tunnelV4, mtu - ICMP_OVER_IPV4), `IPv4 filling MTU ${mtu} A→B`);
    assertAllReplies(await probe(b, a.tunnelV4, mtu - ICMP_OVER_IPV4), `IPv4 filling MTU ${mtu} B→A`);
    assertAllReplies(await probe(a, b.tunnelV6, mtu - ICMP_OVER_IPV6), `IPv6 filling MTU ${mtu} A→B`);
    // One byte more must be refused by the tunnel interface itself: the new MTU is in force.
    const tooBig = await probe(a, b.tunnelV4, mtu - ICMP_OVER_IPV4 + 1);
    assert.equal(tooBig.received, 0, `a ${mtu + 1}-byte packet crossed a ${mtu} MTU`);
    assert.match(tooBig.errors, new RegExp(`message too long, mtu=${mtu}\\b`));
  }
});

labTest('the tunnel interface works after moving to another namespace; the UDP socket stays', 30_000,
  async (lab, impls) => {
    const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
    assertAllReplies(await ping(a.ns, b.tunnelV4), 'before the move');
    const elsewhere = await lab.namespace('a2');
    await a.ns.setLink(a.ifname, ['netns', elsewhere.name]);
    assert.equal(await a.ns.linkExists(a.ifname), false);
    // A namespace move drops addresses and takes the link down.
    await upTunnel(elsewhere, a.ifname, PAIR_ADDRESSES.tunnel.a);

    assertAllReplies(await ping(elsewhere, b.tunnelV4, { count: 5 }), 'IPv4 from the new namespace');
    assertAllReplies(await ping(b.ns, a.tunnelV6, { count: 5 }), 'IPv6 into the new namespace');
    assert.ok((await boundUdpPorts(a.ns)).includes(a.listenPort), 'the UDP socket is still in the first namespace');
    assert.ok(!(await boundUdpPorts(elsewhere)).includes(a.listenPort), 'no UDP socket in the new namespace');
    assert.equal((await wgShowDump(elsewhere, a.ifname)).iface.publicKey, a.keys.publicKey, 'wg still manages it');
  });

labTest('listen-port changes at run time; the peer re-learns it', 30_000, async (lab, impls) => {
  const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
  assertAllReplies(await ping(a.ns, b.tunnelV4), 'before');

  await wg(a.ns, ['set', a.ifname, 'listen-port', '52000']);
  assert.equal((await wg(a.ns, ['show', a.ifname, 'listen-port'])).trim(), '52000');
  const ports = await boundUdpPorts(a.ns);
  assert.ok(ports.includes(52000) && !ports.includes(a.listenPort), `bound UDP ports: ${ports.join(' ')}`);
  // Told explicitly: B updates its endpoint and speaks first.
  await wg(b.ns, ['set', b.ifname, 'peer', a.keys.publicKey, 'endpoint', endpointOf('198.18.0.1', 52000)]);
  assertAllReplies(await ping(b.ns, a.tunnelV4), 'B to the new port');

  // Not told: A speaks first from its next port and B follows it.
  await wg(a.ns, ['set', a.ifname, 'listen-port', '52001']);
  assertAllReplies(await ping(a.ns, b.tunnelV6), 'A from the next port');
  assert.equal(await endpointSeenBy(b, a), endpointOf('198.18.0.1', 52001));
  assertAllReplies(await ping(b.ns, a.tunnelV4), 'B after re-learning');
});

labTest('fwmark marks the UDP socket and stays on it when the listen-port changes', 30_000, async (lab, impls) => {
  const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
  const markOf = async (port: number): Promise<string | undefined> => {
    const { stdout } = await a.ns.exec('ss', ['-H', '-u', '-a', '-n', '-e', 'sport', '=', `:${port}`]);
    return /fwmark:(0x[0-9a-f]+)/.exec(stdout)?.[1];
  };
  await wg(a.ns, ['set', a.ifname, 'fwmark', '0x2a']);
  assert.equal((await wg(a.ns, ['show', a.ifname, 'fwmark'])).trim(), '0x2a');
  assert.equal(await markOf(a.listenPort), '0x2a', 'the socket carries the mark');
  await wg(a.ns, ['set', a.ifname, 'listen-port', '52002']);
  assert.equal(await markOf(52002), '0x2a', 'the new socket carries it too');
  await wg(b.ns, ['set', b.ifname, 'peer', a.keys.publicKey, 'endpoint', endpointOf('198.18.0.1', 52002)]);
  assertAllReplies(await ping(b.ns, a.tunnelV4), 'through the marked socket');
});

labTest('the tunnel interface\'s kernel counters count the real traffic', 30_000, async (lab, impls) => {
  const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
  assertAllReplies(await ping(a.ns, b.tunnelV4, { count: 1 }), 'warm-up (handshake)');

  const count = 20;
  const size = 1000;
  const packetBytes = size + ICMP_OVER_IPV4;
  const slackBytes = 4 * 1500; // room for a few stray packets (e.g. IPv6 neighbour traffic)
  const beforeA = await linkStats(a.ns, a.ifname);
  const beforeB = await linkStats(b.ns, b.ifname);
  assertAllReplies(await ping(a.ns, b.tunnelV4, { count, size, intervalS: 0.05 }), 'counted pings');
  const afterA = await linkStats(a.ns, a.ifname);
  const afterB = await linkStats(b.ns, b.ifname);
  for (const [what, delta] of [
    ['A tx', afterA.txBytes - beforeA.txBytes], ['A rx', afterA.rxBytes - beforeA.rxBytes],
    ['B tx', afterB.txBytes - beforeB.txBytes], ['B rx', afterB.rxBytes - beforeB.rxBytes],
  ] as const) {
    assert.ok(delta >= count * packetBytes && delta <= count * packetBytes + slackBytes,
      `${what}: ${delta} bytes for ${count} × ${packetBytes}`);
  }
  assert.ok(afterB.rxPackets - beforeB.rxPackets >= count && afterA.rxPackets - beforeA.rxPackets >= count);

  const tcpBeforeA = await linkStats(a.ns, a.ifname);
  const tcpBeforeB = await linkStats(b.ns, b.ifname);
  const tcp = await iperf3({ ns: b.ns, address: b.tunnelV4 }, a.ns, { protocol: 'tcp', durationS: 2 });
  const sentByA = (await linkStats(a.ns, a.ifname)).txBytes - tcpBeforeA.txBytes;
  const receivedByB = (await linkStats(b.ns, b.ifname)).rxBytes - tcpBeforeB.rxBytes;
  // Payload plus TCP/IP headers (about 3–4 % at this MTU) and the handful of control segments.
  // Each side is checked against the payload rather than against the other: with TUN offloads an
  // implementation reads TCP super-packets (one set of headers for up to 64 KiB) and may write
  // segments one by one, so A's tx and B's rx legitimately differ by per-segment header bytes.
  // A's side also carries TCP's retransmissions of segments lost on the way, hence its wider bound
  // (still far from counting anything twice).
  for (const [what, bytes, bound] of [['A tx', sentByA, 1.5], ['B rx', receivedByB, 1.1]] as const) {
    assert.ok(bytes >= tcp.bytesReceived && bytes <= tcp.bytesReceived * bound + 1e6,
      `${what} ${bytes} for ${tcp.bytesReceived} payload bytes`);
  }
});
