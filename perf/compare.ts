// ztgate against wireguard-go on the same machine in the same run: the ztgate pair, the mixed pair
// (ztgate on A, wireguard-go on B) and the wireguard-go pair, back to back, each in a fresh lab
// (two namespaces joined by veth, test/lab/lab.ts). Per pair:
//
//   ping RTT through the tunnel, and each daemon's CPU during those pings; idle CPU of each daemon
//   over --idle-seconds, tunnel up and quiet for longer than ztgate's keep-warm window;
//   iperf3 TCP A→B and B→A for --seconds each; the highest UDP rate offered with < 1% loss, by a
//   bounded doubling-then-bisection search of short runs (--udp-seconds each, ≤ --udp-trials);
//   then a paced UDP run at half that rate for --seconds.
//
// Prints one table with ratios against the wireguard-go pair, and writes it as JSON to
// perf/out/compare.json. As Firezone's performance CI does, it exits non-zero when a ztgate
// daemon logged a warning (pino level ≥ 40, anywhere in the run) or the kernel dropped datagrams
// at a ztgate daemon's own UDP socket (the per-socket drops of /proc/net/udp{,6}) during the clean
// phase: ping, idle and the paced run. The namespace-wide counters (RcvbufErrors, SndbufErrors in
// /proc/net/snmp{,6}) are printed too, but they also count iperf3's sockets, so they do not fail the
// run. The datagrams ztgate itself counts as failed sends (sendFailed, sendBufferFull in its
// "dropped packets" records) count as its own socket's errors. TCP runs and the UDP search
// saturate the path on purpose (TCP finds its rate by loss), so drops there are reported only.
//
//   node perf/compare.ts [--seconds 10] [--udp-seconds 3] [--udp-trials 6] [--idle-seconds 5]
//                        [--workers 2] [--pairs ztgate,mixed,wireguard-go]
//
// Needs root (namespaces), iperf3, ping and wireguard-go. The machine may be shared: compare the
// columns of one run, and repeat.
import { mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeMachine } from '../bench/harness.ts';
import { DROP_REPORT_INTERVAL_MS } from '../src/control/messages.ts';
import { parseKeepWarm } from '../src/main/daemon.ts';
import { formatColumns, parseCpuTicks, parseSocketDrops, parseUdpErrors, searchHighestRate, warningsIn } from './measure.ts';
import type { LogRecord, RateSearch, UdpErrorCounters } from './measure.ts';
import { buildPair, dropsByReason, iperf3, latestDropCounts, parsePairings, ping, requireRoot, run, withLab } from '../test/lab/lab.ts';
import type { Netns, Pair, Side } from '../test/lab/lab.ts';

const REPO_ROOT = resolve(import.meta.dirname, '..');

interface SideReport {
  readonly impl: string;
  /** During the pings: light traffic, with ztgate's workers keeping their path warm. */
  readonly pingCpuPercent: number;
  readonly idleCpuPercent: number;
  /** Rise of the namespace's UDP error counters during the clean phase (ping, idle, paced UDP). */
  readonly cleanSocketErrors: UdpErrorCounters;
  /** Rise during the TCP runs and the UDP search: they saturate on purpose, so reported only. */
  readonly tcpSocketErrors: UdpErrorCounters;
  readonly searchSocketErrors: UdpErrorCounters;
  /**
   * Datagrams the kernel dropped at the daemon's own UDP sockets during the clean phase, plus the
   * sends ztgate counted as failed.
   */
  readonly cleanOwnSocketDrops: number;
  /** Everything the daemon logged at level ≥ 40 over the whole run (ztgate only). */
  readonly warnings: readonly LogRecord[];
}

interface PairReport {
  readonly name: string;
  readonly rttMs: number | null;
  readonly tcpForwardGbps: number;
  readonly tcpReverseGbps: number;
  readonly udp: RateSearch;
  /** The clean-phase UDP run at half the rate the search found. */
  readonly paced: { readonly offeredMbps: number; readonly receivedGbps: number; readonly lossPercent: number };
  readonly sides: readonly [SideReport, SideReport];
}

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    'udp-seconds': { type: 'string', default: '3' },
    'udp-trials': { type: 'string', default: '6' },
    'idle-seconds': { type: 'string', default: '5' },
    workers: { type: 'string', default: '2' },
    pairs: { type: 'string', default: 'ztgate,mixed,wireguard-go' },
    out: { type: 'string', default: join(REPO_ROOT, 'perf', 'out') },
  },
});
const seconds = Number(values.seconds);
const udpSeconds = Number(values['udp-seconds']);
const udpTrials = Number(values['udp-trials']);
const idleSeconds = Number(values['idle-seconds']);
const workers = Number(values.workers);
for (const [name, value, max] of [['seconds', seconds, 300], ['udp-seconds', udpSeconds, 60], ['udp-trials', udpTrials, 20],
  ['idle-seconds', idleSeconds, 60], ['workers', workers, 64]] as const) {
  if (!(Number.isInteger(value) && value >= 1 && value <= max)) throw new RangeError(`compare: --${name} must be an integer 1..${max}`);
}

async function udpErrors(ns: Netns): Promise<UdpErrorCounters> {
  const snmp = await ns.exec('cat', ['/proc/net/snmp']);
  const snmp6 = await ns.exec('cat', ['/proc/net/snmp6'], { check: false });
  return parseUdpErrors(snmp.stdout, snmp6.stdout);
}

function rise(before: UdpErrorCounters, after: UdpErrorCounters): UdpErrorCounters {
  return { rcvbufErrors: after.rcvbufErrors - before.rcvbufErrors, sndbufErrors: after.sndbufErrors - before.sndbufErrors };
}

/** The daemons' keep-warm window: they read the same environment variable. */
const keepWarmMs = parseKeepWarm(process.env['ZTGATE_KEEP_WARM_MS']);
const clockTicks = Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;

function cpuTicks(pid: number): number {
  return parseCpuTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** The kernel's drop count summed over the UDP sockets process `pid` holds (threads share them). */
function ownSocketDrops(pid: number): number {
  const inodes = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed since the listing
    }
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match !== null) inodes.add(Number(match[1]));
  }
  // /proc/PID/net shows the tables of the namespace the process lives in.
  return parseSocketDrops(readFileSync(`/proc/${pid}/net/udp`, 'utf8'), inodes) +
    parseSocketDrops(readFileSync(`/proc/${pid}/net/udp6`, 'utf8'), inodes);
}

const isZtgate = (side: Side): boolean => side.daemon.implName.startsWith('ztgate');

/** The sends a ztgate daemon has counted as failed so far (0 for wireguard-go). */
function countedSendErrors(side: Side): number {
  if (!isZtgate(side)) return 0;
  const drops = dropsByReason(latestDropCounts(side.daemon.process.output()));
  return (drops.sendFailed ?? 0) + (drops.sendBufferFull ?? 0);
}

async function measurePair(name: string): Promise<PairReport> {
  const { a, b } = parsePairings(name, workers)[0]!;
  return withLab(async (lab) => {
    const pair: Pair = await buildPair(lab, { implA: a, implB: b });
    const sides = [pair.a, pair.b] as const;
    const counters = (): Promise<UdpErrorCounters[]> => Promise.all(sides.map((s) => udpErrors(s.ns)));
    const atStart = await counters();
    const ownDrops = (): number[] => sides.map((s) => ownSocketDrops(s.daemon.process.pid) + countedSendErrors(s));
    const ownAtStart = ownDrops();
    progress(`${name}: ping`);
    const ticksBeforePing = sides.map((s) => cpuTicks(s.daemon.process.pid));
    const pingStarted = performance.now();
    const rtt = await ping(pair.a.ns, pair.b.tunnelV4, { count: 20, intervalS: 0.1, replyTimeoutS: 2, deadlineS: 15 });
    if (rtt.received === 0) {
      const tails = sides.map((s) => `${s.daemon.implName}:\n${s.daemon.process.output().split('\n').slice(-8).join('\n')}`);
      throw new Error(`no ping reply through the tunnel; daemon output:\n${tails.join('\n')}`);
    }
    const pingSeconds = (performance.now() - pingStarted) / 1000;
    const pingCpu = sides.map((s, i) => (100 * (cpuTicks(s.daemon.process.pid) - ticksBeforePing[i]!)) / clockTicks / pingSeconds);
    progress(`${name}: idle CPU over ${idleSeconds} s`);
    // Idle means nothing moved for longer than ztgate's keep-warm window (its ticks are light-traffic CPU).
    await sleep(keepWarmMs + 1000);
    const ticksBefore = sides.map((s) => cpuTicks(s.daemon.process.pid));
    await sleep(idleSeconds * 1000);
    const idleCpu = sides.map((s, i) => (100 * (cpuTicks(s.daemon.process.pid) - ticksBefore[i]!)) / clockTicks / idleSeconds);
    const afterIdle = await counters();
    const ownAfterIdle = ownDrops();

    progress(`${name}: TCP A→B and B→A, ${seconds} s each`);
    const server = { ns: pair.b.ns, address: pair.b.tunnelV4 };
    const forward = await iperf3(server, pair.a.ns, { protocol: 'tcp', durationS: seconds });
    const reverse = await iperf3(server, pair.a.ns, { protocol: 'tcp', durationS: seconds, reverse: true });
    const afterTcp = await counters();

    progress(`${name}: UDP rate search (≤ ${udpTrials} runs of ${udpSeconds} s)`);
    const udpRun = async (offeredMbps: number, durationS: number): Promise<{ receivedGbps: number; lossPercent: number }> => {
      const result = await iperf3(server, pair.a.ns, { protocol: 'udp', durationS, udpBitrate: `${offeredMbps}M` });
      const lossPercent = result.lossPercent ?? 100;
      progress(`${name}:   UDP ${offeredMbps} Mbit/s offered → ${(result.gbps * 1000).toFixed(0)} received, loss ${lossPercent.toFixed(2)}%`);
      return { receivedGbps: result.gbps, lossPercent };
    };
    const udp = await searchHighestRate(async (offeredMbps) => ({ offeredMbps, ...await udpRun(offeredMbps, udpSeconds) }), {
      startMbps: Math.max(50, Math.round(forward.gbps * 1000)), maxMbps: 20_000, maxLossPercent: 1, maxTrials: udpTrials,
      resolution: 0.1,
    });
    // Drop counters reach the log at most every DROP_REPORT_INTERVAL_MS: let the search's arrive.
    await sleep(DROP_REPORT_INTERVAL_MS + 500);
    const afterSearch = await counters();
    const ownAfterSearch = ownDrops();

    // The paced run: half the rate the search found, where nothing should overflow anywhere.
    const pacedMbps = Math.max(10, Math.round(udp.bestMbps / 2));
    progress(`${name}: paced UDP at ${pacedMbps} Mbit/s for ${seconds} s (clean phase)`);
    const paced = await udpRun(pacedMbps, seconds);
    await sleep(DROP_REPORT_INTERVAL_MS + 500);
    const afterPaced = await counters();
    const ownAfterPaced = ownDrops();
    const sideReport = (i: 0 | 1): SideReport => {
      const idle = rise(atStart[i]!, afterIdle[i]!);
      const pacedRise = rise(afterSearch[i]!, afterPaced[i]!);
      return {
        impl: sides[i].daemon.implName,
        pingCpuPercent: pingCpu[i]!,
        idleCpuPercent: idleCpu[i]!,
        cleanSocketErrors: {
          rcvbufErrors: idle.rcvbufErrors + pacedRise.rcvbufErrors, sndbufErrors: idle.sndbufErrors + pacedRise.sndbufErrors,
        },
        tcpSocketErrors: rise(afterIdle[i]!, afterTcp[i]!),
        searchSocketErrors: rise(afterTcp[i]!, afterSearch[i]!),
        cleanOwnSocketDrops: ownAfterIdle[i]! - ownAtStart[i]! + ownAfterPaced[i]! - ownAfterSearch[i]!,
        warnings: isZtgate(sides[i]) ? warningsIn(sides[i].daemon.process.output()) : [],
      };
    };
    return {
      name: name === 'wireguard-go' ? name : `${name} (${workers} workers)`,
      rttMs: rtt.rttAvgMs,
      tcpForwardGbps: forward.gbps,
      tcpReverseGbps: reverse.gbps,
      udp,
      paced: { offeredMbps: pacedMbps, ...paced },
      sides: [sideReport(0), sideReport(1)],
    };
  });
}

function progress(what: string): void {
  process.stderr.write(`compare: ${what}\n`);
}

function formatTable(reports: readonly PairReport[]): string {
  const baseline = reports.find((r) => r.name === 'wireguard-go');
  type Metric = { readonly label: string; readonly value: (r: PairReport) => number | null; readonly digits: number };
  const metrics: Metric[] = [
    { label: 'TCP A→B Gbit/s', value: (r) => r.tcpForwardGbps, digits: 3 },
    { label: 'TCP B→A Gbit/s', value: (r) => r.tcpReverseGbps, digits: 3 },
    { label: 'UDP max offered <1% loss Mbit/s', value: (r) => r.udp.bestMbps, digits: 0 },
    { label: 'UDP received at that rate Gbit/s', value: (r) => r.udp.receivedGbps, digits: 3 },
    { label: 'ping RTT ms', value: (r) => r.rttMs, digits: 3 },
    { label: 'CPU % of a core during the pings, A', value: (r) => r.sides[0].pingCpuPercent, digits: 2 },
    { label: 'CPU % of a core during the pings, B', value: (r) => r.sides[1].pingCpuPercent, digits: 2 },
    { label: 'idle CPU % of a core, side A', value: (r) => r.sides[0].idleCpuPercent, digits: 2 },
    { label: 'idle CPU % of a core, side B', value: (r) => r.sides[1].idleCpuPercent, digits: 2 },
    { label: 'paced UDP (half that rate) loss %', value: (r) => r.paced.lossPercent, digits: 2 },
    { label: 'daemon socket drops, clean phase (A+B)', value: (r) => r.sides[0].cleanOwnSocketDrops + r.sides[1].cleanOwnSocketDrops, digits: 0 },
    { label: 'netns socket buf errors, clean (A+B)', value: (r) => totalErrors(r, 'cleanSocketErrors'), digits: 0 },
    { label: 'socket buf errors, TCP runs (A+B)', value: (r) => totalErrors(r, 'tcpSocketErrors'), digits: 0 },
    { label: 'socket buf errors, UDP search (A+B)', value: (r) => totalErrors(r, 'searchSocketErrors'), digits: 0 },
    { label: 'ztgate warnings (level ≥ 40)', value: (r) => r.sides[0].warnings.length + r.sides[1].warnings.length, digits: 0 },
  ];
  const ratioMetrics = new Set(metrics.slice(0, 7).map((m) => m.label));
  const header = ['', ...reports.map((r) => r.name)];
  const others = baseline === undefined ? [] : reports.filter((r) => r !== baseline);
  for (const r of others) header.push(`${r.name.split(' ')[0]} / wg-go`);
  const rows = metrics.map((m) => {
    const cells = [m.label, ...reports.map((r) => {
      const v = m.value(r);
      return v === null ? 'n/a' : v.toFixed(m.digits);
    })];
    for (const r of others) {
      const v = m.value(r);
      const base = baseline === undefined ? null : m.value(baseline);
      cells.push(ratioMetrics.has(m.label) && v !== null && base !== null && base > 0 ? `×${(v / base).toFixed(2)}` : '');
    }
    return cells;
  });
  return formatColumns(header, rows);
}

function totalErrors(r: PairReport, which: 'cleanSocketErrors' | 'tcpSocketErrors' | 'searchSocketErrors'): number {
  return r.sides.reduce((sum, s) => sum + s[which].rcvbufErrors + s[which].sndbufErrors, 0);
}

await requireRoot();
console.log(describeMachine());
console.log(`iperf3 ${seconds} s per TCP run, UDP search ≤ ${udpTrials} × ${udpSeconds} s, idle CPU over ${idleSeconds} s`);
const reports: PairReport[] = [];
const failures: string[] = [];
for (const name of values.pairs.split(',').map((p) => p.trim()).filter(Boolean)) {
  try {
    reports.push(await measurePair(name));
  } catch (error) {
    failures.push(`${name}: ${(error as Error).message}`);
  }
}
console.log(formatTable(reports));
mkdirSync(values.out, { recursive: true });
writeFileSync(join(values.out, 'compare.json'), `${JSON.stringify({ machine: describeMachine(), reports }, null, 2)}\n`);

// Firezone-style gate: a clean run of ztgate logs no warnings and its socket drops nothing.
for (const report of reports) {
  for (const [i, side] of report.sides.entries()) {
    if (!side.impl.startsWith('ztgate')) continue;
    const label = `${report.name}, side ${i === 0 ? 'A' : 'B'}`;
    for (const w of side.warnings.slice(0, 5)) failures.push(`${label}: ztgate logged level ${w.level}: ${w.msg}`);
    if (side.cleanOwnSocketDrops > 0) {
      failures.push(`${label}: the kernel dropped ${side.cleanOwnSocketDrops} datagrams at ztgate's UDP socket during the clean phase`);
    }
  }
}
console.log(describeMachine().replace(/^machine: .*; load/, 'after the run: load'));
if (failures.length > 0) {
  console.log(`\nFAILED:\n${failures.map((f) => `  ${f}`).join('\n')}`);
  process.exitCode = 1;
}
