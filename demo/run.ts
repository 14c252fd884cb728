// The demo: two network namespaces joined by a veth pair, a WireGuard tunnel between them run by
// the chosen implementation on each side (configured with the stock `wg`), a ping and a 5 s iperf3
// each way through it; prints the figures, then removes everything it made. Needs root.
//
//   node demo/run.ts [--impl ztgate|wireguard-go|mixed] [--workers N] [--seconds S]

import { parseToolArgs } from '../test/support/tool-args.ts';
import { buildPair, iperf3, ping, requireRoot, wgShowDump, wireguardGo, withLab, ztgate } from '../test/lab/lab.ts';
import type { ImplPairing } from '../test/lab/lab.ts';

const values = parseToolArgs(import.meta.filename, {
  options: {
    impl: { type: 'string', default: 'ztgate' },
    workers: { type: 'string', default: '2' },
    seconds: { type: 'string', default: '5' },
  },
});

function pairingFor(impl: string, workers: number): ImplPairing {
  switch (impl) {
    case 'ztgate':
      return { name: impl, a: ztgate(workers), b: ztgate(workers) };
    case 'wireguard-go':
      return { name: impl, a: wireguardGo, b: wireguardGo };
    case 'mixed':
      return { name: impl, a: ztgate(workers), b: wireguardGo };
    default:
      throw new RangeError(`demo: unknown --impl ${JSON.stringify(impl)} (ztgate, wireguard-go or mixed)`);
  }
}

const seconds = Number(values.seconds);
if (!Number.isInteger(seconds) || seconds < 1 || seconds > 60) throw new RangeError('demo: --seconds must be 1..60');
const pairing = pairingFor(values.impl, Number(values.workers));

await requireRoot();
await withLab(async (lab) => {
  console.log(`demo: side A runs ${pairing.a.name}, side B runs ${pairing.b.name}`);
  const { a, b } = await buildPair(lab, { implA: pairing.a, implB: pairing.b });
  console.log(`demo: namespaces ${a.ns.name} (${a.underlay.addresses[0]}) and ${b.ns.name} (${b.underlay.addresses[0]}), ` +
    `tunnel ${a.tunnelV4} <-> ${b.tunnelV4}`);

  const pinged = await ping(a.ns, b.tunnelV4, { count: 10, intervalS: 0.1 });
  console.log(`ping A→B through the tunnel: ${pinged.received}/${pinged.transmitted} replies, ` +
    `average rtt ${pinged.rttAvgMs ?? '—'} ms`);
  if (pinged.received === 0) throw new Error(`demo: the tunnel carries nothing ${pinged.errors}`);

  const server = { ns: b.ns, address: b.tunnelV4 };
  const upload = await iperf3(server, a.ns, { protocol: 'tcp', durationS: seconds });
  console.log(`iperf3 TCP A→B, ${seconds} s: ${upload.gbps.toFixed(2)} Gbit/s`);
  const download = await iperf3(server, a.ns, { protocol: 'tcp', durationS: seconds, reverse: true });
  console.log(`iperf3 TCP B→A, ${seconds} s: ${download.gbps.toFixed(2)} Gbit/s`);

  const peer = (await wgShowDump(a.ns, a.ifname)).peers[0];
  if (peer !== undefined) {
    console.log(`wg on A: latest handshake ${new Date(peer.latestHandshake * 1000).toISOString()}, ` +
      `rx ${(peer.rxBytes / 1e6).toFixed(1)} MB, tx ${(peer.txBytes / 1e6).toFixed(1)} MB`);
  }
});
console.log('demo: cleaned up');
