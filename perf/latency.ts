// Ping RTT through the tunnel, ztgate against wireguard-go, back to back in the same run: for each
// round and each pair (in a fresh lab: two namespaces joined by veth, test/lab/lab.ts), a few
// warm-up pings (and, with --preheat N, a flood of N pings first), then `--count` pings at each
// interval of `--intervals`, then the idle CPU of each daemon over `--idle-seconds`. Pairs
// alternate from round to round so that a change in machine load hits all of them alike.
//
// Per pair and interval it prints the RTT median, p25, p90 and min over every round, and what the
// two daemons spent per ping from their threads' /proc schedstat: CPU time, time runnable but
// waiting for a CPU (high when the machine is busy: the RTTs are then unreliable) and switch-ins
// (for threads that sleep between packets, the wake-ups). --threads adds the same per thread.
//
// Light traffic is where a userspace data plane pays for waking threads: at -i 0.2 and -i 1 every
// packet finds every thread asleep. The issue-3 goal is "no worse than wireguard-go" there.
//
//   node perf/latency.ts [--count 30] [--intervals 0.2,1] [--rounds 2] [--workers 2]
//                        [--pairs ztgate,wireguard-go] [--idle-seconds 3] [--preheat N] [--threads]
//
// Needs root (namespaces), ping and wireguard-go. Bounded: every ping has a deadline, and each lab
// removes its namespaces and daemons when its pair is done, even on failure.
import { parseToolArgs } from '../test/support/tool-args.ts';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeMachine } from '../bench/harness.ts';
import { formatColumns, parseCpuTicks, quantile, type SchedStat } from './measure.ts';
import { threadSchedStats } from './proc.ts';
import { parseKeepWarm } from '../src/main/daemon.ts';
import { buildPair, parsePairings, ping, requireRoot, run, withLab } from '../test/lab/lab.ts';
import type { Netns } from '../test/lab/lab.ts';

const values = parseToolArgs(import.meta.filename, {
  options: {
    count: { type: 'string', default: '30' },
    intervals: { type: 'string', default: '0.2,1' },
    rounds: { type: 'string', default: '2' },
    workers: { type: 'string', default: '2' },
    pairs: { type: 'string', default: 'ztgate,wireguard-go' },
    'idle-seconds': { type: 'string', default: '3' },
    preheat: { type: 'string', default: '0' },
    threads: { type: 'boolean', default: false },
  },
});
const count = Number(values.count);
const rounds = Number(values.rounds);
const workers = Number(values.workers);
const idleSeconds = Number(values['idle-seconds']);
const preheat = Number(values.preheat);
if (!(Number.isInteger(preheat) && preheat >= 0 && preheat <= 100_000)) throw new RangeError('latency: --preheat must be an integer 0..100000');
for (const [name, value, max] of [['count', count, 500], ['rounds', rounds, 20], ['workers', workers, 64],
  ['idle-seconds', idleSeconds, 60]] as const) {
  if (!(Number.isInteger(value) && value >= 1 && value <= max)) throw new RangeError(`latency: --${name} must be an integer 1..${max}`);
}
const intervals = values.intervals.split(',').map(Number);
for (const interval of intervals) {
  // ping(8) refuses intervals below 0.002 s; above 5 s a run would take minutes.
  if (!(interval >= 0.002 && interval <= 5)) throw new RangeError(`latency: each interval must be 0.002..5 s, got ${interval}`);
}
const pairNames = values.pairs.split(',').map((p) => p.trim()).filter(Boolean);

/** Every reply's RTT in ms, in order. */
async function pingTimes(ns: Netns, target: string, n: number, intervalS: number): Promise<readonly number[]> {
  return (await ping(ns, target, { count: n, intervalS, replyTimeoutS: 1, deadlineS: Math.ceil(n * intervalS + 3) })).rttsMs;
}

/** The daemons' keep-warm window: they read the same environment variable. */
const keepWarmMs = parseKeepWarm(process.env['ZTGATE_KEEP_WARM_MS']);
const clockTicks = Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
const cpuSeconds = (pid: number): number => parseCpuTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) / clockTicks;

/**
 * Per thread (perf/proc.ts): time on a CPU, time runnable but waiting for one, and how many times
 * it was switched in — for threads that sleep between packets, their wake-ups. Summed by side and
 * thread name.
 */
const ZERO: SchedStat = { onCpuNs: 0, waitNs: 0, slices: 0 };

function addStat(into: Map<string, SchedStat>, key: string, x: SchedStat, sign = 1): void {
  const sum = into.get(key) ?? ZERO;
  into.set(key, { onCpuNs: sum.onCpuNs + sign * x.onCpuNs, waitNs: sum.waitNs + sign * x.waitNs, slices: sum.slices + sign * x.slices });
}

function schedStats(pids: readonly number[]): Map<string, SchedStat> {
  const byThread = new Map<string, SchedStat>();
  for (const [side, pid] of pids.entries()) {
    for (const thread of threadSchedStats(pid)) {
      // Node names a worker thread after its script, cut to 15 characters: "../workers/tun-".
      addStat(byThread, `${side === 0 ? 'A' : 'B'} ${thread.comm.replace('../workers/', '')}`, thread);
    }
  }
  return byThread;
}

/** RTTs per pair and interval, and idle CPU % per pair (both sides), gathered over the rounds. */
const samples = new Map<string, number[]>();
/** Both daemons' schedstat rise over each interval's pings, per thread name, summed over the rounds. */
const perPing = new Map<string, Map<string, SchedStat>>();
const idle = new Map<string, number[]>();
const sent = new Map<string, number>();

async function measure(name: string): Promise<void> {
  const { a, b } = parsePairings(name, workers)[0]!;
  await withLab(async (lab) => {
    const pair = await buildPair(lab, { implA: a, implB: b });
    // The handshake, and the first packets through freshly started threads, are not what we measure.
    await pingTimes(pair.a.ns, pair.b.tunnelV4, 5, 0.05);
    if (preheat > 0) {
      // A flood first: what light traffic costs once the JIT has seen plenty of packets.
      await pair.a.ns.exec('ping', ['-n', '-q', '-f', '-c', String(preheat), '-w', '60', pair.b.tunnelV4], { check: false, timeoutMs: 65_000 });
    }
    const pids = [pair.a.daemon.process.pid, pair.b.daemon.process.pid];
    for (const interval of intervals) {
      const key = `${name}|${interval}`;
      const before = schedStats(pids);
      const times = await pingTimes(pair.a.ns, pair.b.tunnelV4, count, interval);
      const after = schedStats(pids);
      samples.set(key, [...(samples.get(key) ?? []), ...times]);
      sent.set(key, (sent.get(key) ?? 0) + count);
      const rise = perPing.get(key) ?? new Map<string, SchedStat>();
      for (const [name, stat] of after) addStat(rise, name, stat);
      for (const [name, stat] of before) if (after.has(name)) addStat(rise, name, stat, -1);
      perPing.set(key, rise);
    }
    // Idle means nothing moved for longer than ztgate's keep-warm window; its ticks between pings
    // are in the CPU per ping above.
    await sleep(keepWarmMs + 500);
    const before = pids.map(cpuSeconds);
    await sleep(idleSeconds * 1000);
    const percent = pids.map((pid, i) => (100 * (cpuSeconds(pid) - before[i]!)) / idleSeconds);
    idle.set(name, [...(idle.get(name) ?? []), ...percent]);
  });
}

await requireRoot();
console.log(describeMachine());
console.log(`${count} pings per interval per round, ${rounds} round(s), intervals ${intervals.join(', ')} s, ` +
  `ztgate with ${workers} workers`);
for (let round = 0; round < rounds; round++) {
  // Alternate the order from round to round as well, so that no pair always goes first.
  const order = round % 2 === 0 ? pairNames : [...pairNames].reverse();
  for (const name of order) {
    process.stderr.write(`latency: round ${round + 1}/${rounds}: ${name}\n`);
    await measure(name);
  }
}

const header = ['pair', 'interval s', 'replies', 'median ms', 'p25 ms', 'p90 ms', 'min ms', 'CPU µs/ping', 'runq wait µs/ping',
  'switch-ins/ping', 'idle CPU % (A, B)'];
const rows = pairNames.flatMap((name) => intervals.map((interval) => {
  const key = `${name}|${interval}`;
  const times = [...(samples.get(key) ?? [])].sort((x, y) => x - y);
  const cpu = idle.get(name) ?? [];
  const sched = { onCpuNs: 0, waitNs: 0, slices: 0 };
  for (const stat of perPing.get(key)?.values() ?? []) {
    sched.onCpuNs += stat.onCpuNs;
    sched.waitNs += stat.waitNs;
    sched.slices += stat.slices;
  }
  const pings = Math.max(1, sent.get(key) ?? 0);
  const meanA = cpu.filter((_, i) => i % 2 === 0).reduce((s, v) => s + v, 0) / Math.max(1, cpu.length / 2);
  const meanB = cpu.filter((_, i) => i % 2 === 1).reduce((s, v) => s + v, 0) / Math.max(1, cpu.length / 2);
  return [name, String(interval), `${times.length}/${sent.get(key) ?? 0}`, quantile(times, 0.5).toFixed(3),
    quantile(times, 0.25).toFixed(3), quantile(times, 0.9).toFixed(3), quantile(times, 0).toFixed(3),
    (sched.onCpuNs / 1000 / pings).toFixed(0), (sched.waitNs / 1000 / pings).toFixed(0), (sched.slices / pings).toFixed(1),
    `${meanA.toFixed(2)}, ${meanB.toFixed(2)}`];
}));
console.log(formatColumns(header, rows));
if (values.threads) {
  // Where the CPU time and the wake-ups of one ping go, thread by thread (both sides).
  for (const [key, byThread] of perPing) {
    const pings = Math.max(1, sent.get(key) ?? 0);
    console.log(`\n${key.replace('|', ', interval ')} s: per ping, CPU µs / switch-ins`);
    for (const [name, stat] of [...byThread].sort(([x], [y]) => x.localeCompare(y))) {
      if (stat.onCpuNs / 1000 / pings < 1) continue;
      console.log(`  ${name.padEnd(24)} ${(stat.onCpuNs / 1000 / pings).toFixed(0).padStart(6)}  ${(stat.slices / pings).toFixed(1).padStart(5)}`);
    }
  }
}
console.log(describeMachine().replace(/^machine: .*; load/, 'after the run: load'));
