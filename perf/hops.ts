// Where a ping's round trip goes, leg by leg, for ztgate and wireguard-go pairs in the same run:
// while A pings B through the tunnel, `perf record` takes the kernel's packet tracepoints
// (net:net_dev_xmit, net:netif_receive_skb) on every CPU, and each echo is followed from ping's
// write into A's tunnel device to A's tunnel device handing back the reply (measure.ts,
// hopTimings). Per pair it prints the median and p90 of each leg in µs:
//
//   A out     A's daemon: the request read from the tunnel device, encrypted, sent on the underlay
//   B in      the underlay, then B's daemon: received, decrypted, written to the tunnel device
//   B reply   B's kernel answering the echo (no daemon in it: a check on the method)
//   B out     B's daemon: the reply read, encrypted, sent
//   A in      the underlay, then A's daemon: received, decrypted, written
//
// The tracepoints cost a little on each packet, so totals run somewhat above latency.ts's RTTs;
// compare the legs of two pairs in one run. At -i 0.2 every packet finds the daemons asleep.
//
//   node perf/hops.ts [--count 30] [--interval 0.2] [--workers 2] [--pairs ztgate,wireguard-go]
//
// Needs root (namespaces, tracepoints), perf (Debian: apt-get install linux-perf), ping and
// wireguard-go. Bounded: ping has a deadline, perf records for a fixed time, and each lab removes
// its namespaces, daemons and the trace file when its pair is done, even on failure.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseToolArgs } from '../test/support/tool-args.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeMachine } from '../bench/harness.ts';
import { formatColumns, hopTimings, parseNetEvents, quantile, type PingHops } from './measure.ts';
import { buildPair, parsePairings, ping, requireRoot, run, withLab } from '../test/lab/lab.ts';

const values = parseToolArgs(import.meta.filename, {
  options: {
    count: { type: 'string', default: '30' },
    interval: { type: 'string', default: '0.2' },
    workers: { type: 'string', default: '2' },
    pairs: { type: 'string', default: 'ztgate,wireguard-go' },
  },
});
const count = Number(values.count);
const intervalS = Number(values.interval);
const workers = Number(values.workers);
if (!(Number.isInteger(count) && count >= 1 && count <= 500)) throw new RangeError('hops: --count must be an integer 1..500');
if (!(intervalS >= 0.01 && intervalS <= 2)) throw new RangeError('hops: --interval must be 0.01..2 s');
if (!(Number.isInteger(workers) && workers >= 1 && workers <= 64)) throw new RangeError('hops: --workers must be an integer 1..64');
const pairNames = values.pairs.split(',').map((p) => p.trim()).filter(Boolean);

/** ping's default 56 bytes of payload, plus ICMP and IPv4 headers: the packet on the tunnel devices. */
const ECHO_IP_LENGTH = 84;
const LEGS = [['A out', 'aOut'], ['B in', 'bIn'], ['B reply', 'bReply'], ['B out', 'bOut'], ['A in', 'aIn'], ['total', 'total']] as const;

await requireRoot();
const perfCheck = await run('perf', ['list', 'net:net_dev_xmit'], { check: false }).catch((error: unknown) => {
  throw new Error(`hops: perf is not installed (Debian: apt-get install linux-perf): ${(error as Error).message}`);
});
if (!perfCheck.stdout.includes('net:net_dev_xmit')) {
  throw new Error('hops: perf cannot see the net:net_dev_xmit tracepoint (is tracefs mounted, is this root?)');
}

async function measure(name: string): Promise<PingHops[]> {
  const { a, b } = parsePairings(name, workers)[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'ztgate-hops-'));
  try {
    return await withLab(async (lab) => {
      const pair = await buildPair(lab, { implA: a, implB: b });
      // The handshake, and the first packets through freshly started threads, are not what we measure.
      await ping(pair.a.ns, pair.b.tunnelV4, { count: 10, intervalS: 0.05, deadlineS: 10 });
      const traceFile = join(dir, 'trace.data');
      const recordS = count * intervalS + 2;
      const recording = run('perf', ['record', '-a', '-q', '-e', 'net:net_dev_xmit,net:netif_receive_skb', '-o', traceFile,
        '--', 'sleep', String(recordS)], { check: false, timeoutMs: (recordS + 20) * 1000 });
      await sleep(500);
      await ping(pair.a.ns, pair.b.tunnelV4, { count, intervalS });
      const recorded = await recording;
      if (recorded.code !== 0) throw new Error(`hops: perf record failed:\n${recorded.stderr}`);
      const script = await run('perf', ['script', '-i', traceFile, '-F', 'comm,time,event,trace'], { timeoutMs: 60_000 });
      const devices = { tunA: pair.a.ifname, underlayA: pair.a.underlay.dev, tunB: pair.b.ifname, underlayB: pair.b.underlay.dev };
      return hopTimings(parseNetEvents(script.stdout), devices, ECHO_IP_LENGTH);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(describeMachine());
console.log(`${count} pings at -i ${intervalS} per pair, ztgate with ${workers} workers; µs per leg, median (p90)`);
const rows: string[][] = [];
for (const name of pairNames) {
  console.error(`hops: ${name}`);
  const hops = await measure(name);
  const cells = LEGS.map(([, key]) => {
    const sorted = hops.map((hop) => hop[key]).sort((x, y) => x - y);
    return `${quantile(sorted, 0.5).toFixed(0)} (${quantile(sorted, 0.9).toFixed(0)})`;
  });
  rows.push([name, `${hops.length}/${count}`, ...cells]);
}
console.log(formatColumns(['pair', 'echoes', ...LEGS.map(([label]) => label)], rows));
