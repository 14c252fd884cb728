// ztgate against wireguard-go on the same machine in the same run: the ztgate pair, the mixed pair
// (ztgate on A, wireguard-go on B) and the wireguard-go pair, back to back, each in a fresh lab
// (two namespaces joined by veth, test/lab/lab.ts). Per pair:
//
//   the first ping after start, which carries the first handshake; then the median RTT of 20
//   pings through the tunnel (-i 0.1), and each daemon's CPU during them; idle CPU of each
//   daemon over --idle-seconds, tunnel up and quiet for longer than ztgate's keep-warm window;
//   iperf3 TCP A→B and B→A for --seconds each; the highest UDP rate offered with < 1% loss, by a
//   bounded doubling-then-bisection search of short runs (--udp-seconds each, ≤ --udp-trials);
//   then a paced UDP run at half that rate for --seconds.
//
// With --rounds N, measures the pairs N times in turn (ztgate, mixed, wireguard-go, then again):
// this machine's figures swing between runs (UDP most), so the table gives each figure's median
// over the rounds, and the UDP search's result per round follows it.
//
// Prints one table with ratios against the wireguard-go pair, and writes every round's reports as
// JSON to perf/out/compare.json. As Firezone's performance CI does, it exits non-zero when a ztgate
// daemon logged a warning (pino level ≥ 40, anywhere in the run) or the kernel dropped datagrams
// at a ztgate daemon's own UDP socket (the per-socket drops of /proc/net/udp{,6}) during the clean
// phase: ping, idle and the paced run. The namespace-wide counters (RcvbufErrors, SndbufErrors in
// /proc/net/snmp{,6}) are printed too, but they also count iperf3's sockets, so they do not fail the
// run. The datagrams ztgate itself counts as failed sends (sendFailed, sendBufferFull in its
// "dropped packets" records) count as its own socket's errors. TCP runs and the UDP search
// saturate the path on purpose (TCP finds its rate by loss), so drops there are reported only.
//
//   node perf/compare.ts [--seconds 10] [--udp-seconds 3] [--udp-trials 6] [--idle-seconds 5]
//                        [--workers 2] [--pairs ztgate,mixed,wireguard-go] [--rounds 1]
//
// Needs root (namespaces), iperf3, ping and wireguard-go. The machine may be shared: compare the
// columns of one run, and repeat (--rounds).
import { mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseToolArgs } from '../test/support/tool-args.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeMachine } from '../bench/harness.ts';
import { DROP_REPORT_INTERVAL_MS } from '../src/control/messages.ts';
import { parseKeepWarm } from '../src/main/daemon.ts';
import { formatColumns, median, parseCpuTicks, parseSocketDrops, parseUdpErrors, searchHighestRate, warningsIn } from './measure.ts';
import type { LogRecord, RateSearch, UdpErrorCounters } from './measure.ts';
import { threadSchedStats } from './proc.ts';
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
  /** The first ping after start: it waits for the first handshake. */
  readonly firstPingMs: number | null;
  /** The median RTT of the 20 pings after it. */
  readonly rttMs: number | null;
  readonly tcpForwardGbps: number;
  readonly tcpReverseGbps: number;
  readonly udp: RateSearch;
  /** The clean-phase UDP run at half the rate the search found. */
  readonly paced: { readonly offeredMbps: number; readonly receivedGbps: number; readonly lossPercent: number };
  readonly sides: readonly [SideReport, SideReport];
}

const values = parseToolArgs(import.meta.filename, {
  options: {
    seconds: { type: 'string', default: '10' },
    'udp-seconds': { type: 'string', default: '3' },
    'udp-trials': { type: 'string', default: '6' },
    'idle-seconds': { type: 'string', default: '5' },
    workers: { type: 'string', default: '2' },
    pairs: { type: 'string', default: 'ztgate,mixed,wireguard-go' },
    rounds: { type: 'string', default: '1' },
    out: { type: 'string', default: join(REPO_ROOT, 'perf', 'out') },
  },
});
const seconds = Number(values.seconds);
const udpSeconds = Number(values['udp-seconds']);
const udpTrials = Number(values['udp-trials']);
const idleSeconds = Number(values['idle-seconds']);
const workers = Number(values.workers);
const rounds = Number(values.rounds);
for (const [name, value, max] of [['seconds', seconds, 300], ['udp-seconds', udpSeconds, 60], ['udp-trials', udpTrials, 20],
  ['idle-seconds', idleSeconds, 60], ['workers', workers, 64], ['rounds', rounds, 10]] as const) {
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

/** CPU time of process `pid`'s threads in ns (schedstat: finer than the ticks, for short phases). */
function cpuNs(pid: number): number {
  return threadSchedStats(pid).reduce((sum, thread) => sum + thread.onCpuNs, 0);
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
    const first = await ping(pair.a.ns, pair.b.tunnelV4, { count: 1, replyTimeoutS: 5, deadlineS: 6 });
    const cpuBeforePing = sides.map((s) => cpuNs(s.daemon.process.pid));
    const pingStarted = performance.now();
    const rtt = await ping(pair.a.ns, pair.b.tunnelV4, { count: 20, intervalS: 0.1, replyTimeoutS: 2, deadlineS: 15 });
    if (first.received === 0 || rtt.received === 0) {
      const tails = sides.map((s) => `${s.daemon.implName}:\n${s.daemon.process.output().split('\n').slice(-8).join('\n')}`);
      throw new Error(`no ping reply through the tunnel; daemon output:\n${tails.join('\n')}`);
    }
    const pingSeconds = (performance.now() - pingStarted) / 1000;
    const pingCpu = sides.map((s, i) => (100 * (cpuNs(s.daemon.process.pid) - cpuBeforePing[i]!)) / 1e9 / pingSeconds);
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
      name: pairLabel(name),
      firstPingMs: first.rttAvgMs,
      rttMs: median(rtt.rttsMs),
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

/** A pair's name in the table and the reports: ztgate's pairings say how many workers they ran. */
function pairLabel(name: string): string {
  return name === 'wireguard-go' ? name : `${name} (${workers} workers)`;
}

/** One column per pair, each figure the median over that pair's rounds. */
function formatTable(byPair: ReadonlyMap<string, readonly PairReport[]>): string {
  const names = [...byPair.keys()];
  const baseline = names.find((name) => name === 'wireguard-go');
  type Metric = { readonly label: string; readonly value: (r: PairReport) => number | null; readonly digits: number };
  const metrics: Metric[] = [
    { label: 'TCP A→B Gbit/s', value: (r) => r.tcpForwardGbps, digits: 3 },
    { label: 'TCP B→A Gbit/s', value: (r) => r.tcpReverseGbps, digits: 3 },
    { label: 'UDP max offered <1% loss Mbit/s', value: (r) => r.udp.bestMbps, digits: 0 },
    { label: 'UDP received at that rate Gbit/s', value: (r) => r.udp.receivedGbps, digits: 3 },
    { label: 'first ping ms (waits for the handshake)', value: (r) => r.firstPingMs, digits: 3 },
    { label: 'ping RTT ms, median of 20 after it', value: (r) => r.rttMs, digits: 3 },
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
  const ratioMetrics = new Set(metrics.slice(0, 8).map((m) => m.label));
  const header = ['', ...names.map(pairLabel)];
  const others = baseline === undefined ? [] : names.filter((name) => name !== baseline);
  for (const name of others) header.push(`${name} / wg-go`);
  const rows = metrics.map((m) => {
    const value = (name: string): number | null => median((byPair.get(name) ?? []).map(m.value));
    const cells = [m.label, ...names.map((name) => {
      const v = value(name);
      return v === null ? 'n/a' : v.toFixed(m.digits);
    })];
    for (const name of others) {
      const v = value(name);
      const base = baseline === undefined ? null : value(baseline);
      cells.push(ratioMetrics.has(m.label) && v !== null && base !== null && base > 0 ? `×${(v / base).toFixed(2)}` : '');
    }
    return cells;
  });
  return formatColumns(header, rows);
}

/** Each round's UDP search result per pair, and its ratio to the wireguard-go pair's in that round. */
function formatUdpRounds(byRound: readonly (readonly PairReport[])[]): string {
  const lines = ['UDP max offered <1% loss, Mbit/s, per round:'];
  for (const [k, reports] of byRound.entries()) {
    const baseline = reports.find((r) => r.name === 'wireguard-go');
    const cells = reports.map((r) => {
      const ratio = baseline === undefined || r === baseline || baseline.udp.bestMbps <= 0 ? '' : ` (×${(r.udp.bestMbps / baseline.udp.bestMbps).toFixed(2)})`;
      return `${r.name} ${r.udp.bestMbps.toFixed(0)}${ratio}`;
    });
    lines.push(`  round ${k + 1}: ${cells.join(', ')}`);
  }
  return lines.join('\n');
}

function totalErrors(r: PairReport, which: 'cleanSocketErrors' | 'tcpSocketErrors' | 'searchSocketErrors'): number {
  return r.sides.reduce((sum, s) => sum + s[which].rcvbufErrors + s[which].sndbufErrors, 0);
}

await requireRoot();
console.log(describeMachine());
console.log(`iperf3 ${seconds} s per TCP run, UDP search ≤ ${udpTrials} × ${udpSeconds} s, idle CPU over ${idleSeconds} s, ` +
  `${rounds} round${rounds === 1 ? '' : 's'}`);
const pairNames = values.pairs.split(',').map((p) => p.trim()).filter(Boolean);
const byRound: PairReport[][] = [];
const byPair = new Map<string, PairReport[]>(pairNames.map((name) => [name, []]));
const failures: string[] = [];
for (let round = 1; round <= rounds; round++) {
  if (rounds > 1) progress(`round ${round} of ${rounds}`);
  const reports: PairReport[] = [];
  for (const name of pairNames) {
    try {
      const report = await measurePair(name);
      reports.push(report);
      byPair.get(name)!.push(report);
    } catch (error) {
      failures.push(`${name}, round ${round}: ${(error as Error).message}`);
    }
  }
  byRound.push(reports);
}
if (rounds > 1) console.log(`medians over ${rounds} rounds:`);
console.log(formatTable(byPair));
if (rounds > 1) console.log(formatUdpRounds(byRound));
mkdirSync(values.out, { recursive: true });
writeFileSync(join(values.out, 'compare.json'), `${JSON.stringify({ machine: describeMachine(), rounds: byRound }, null, 2)}\n`);

// Firezone-style gate: a clean run of ztgate logs no warnings and its socket drops nothing.
for (const report of byRound.flat()) {
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
