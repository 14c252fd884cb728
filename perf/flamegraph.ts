// One command from "is it slow?" to a flame graph: builds the two-namespace lab pair, drives an
// iperf3 load through the tunnel, samples the WireGuard processes with `perf record -g` meanwhile
// (ztgate runs with --perf-basic-prof so JavaScript frames have names), and writes to perf/out/:
//   flamegraph-<tag>.svg     the flame graph (open it in a browser; hover a box for its share)
//   flamegraph-<tag>.txt     throughput, samples per thread, top frames by self and total %
//   flamegraph-<tag>.folded  the folded stacks, one "a;b;c count" per line, for other tools
//
//   node perf/flamegraph.ts [--impl ztgate|mixed|wireguard-go] [--workers N] [--seconds S]
//                           [--udp] [--bitrate 1G] [--reverse] [--frequency HZ] [--out DIR]
//
// Needs root (namespaces) and perf (Debian: apt-get install linux-perf).
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseToolArgs } from '../test/support/tool-args.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { fold, parsePerfScript, renderFlameGraph, samplesByRoot, topFrames } from './flame.ts';
import type { Sample } from './flame.ts';
import { buildPair, iperf3, requireRoot, run, withLab, wireguardGo, ztgate } from '../test/lab/lab.ts';
import type { IperfResult, Side, WgImpl } from '../test/lab/lab.ts';

const REPO_ROOT = resolve(import.meta.dirname, '..');
/** Node flags that let perf name JS frames; interpreted frames get their own native frame too. */
export const PERF_NODE_OPTIONS = '--perf-basic-prof --interpreted-frames-native-stack';

/**
 * The sampling event perf can use here: cycles where the CPU's counters are exposed, else the
 * cpu-clock software timer (virtual machines often expose no hardware events).
 */
export async function choosePerfEvent(): Promise<string> {
  const probe = await run('perf', ['stat', '-e', 'cycles', 'true'], { check: false }).catch((error: unknown) => {
    throw new Error(`flamegraph: perf is not installed (Debian: apt-get install linux-perf): ${(error as Error).message}`);
  });
  if (probe.code === 127) throw new Error('flamegraph: perf is not installed (Debian: apt-get install linux-perf)');
  return probe.code === 0 && !/not supported|not counted/.test(probe.stderr + probe.stdout) ? 'cycles' : 'cpu-clock';
}

function impls(name: string, workers: number): { a: WgImpl; b: WgImpl } {
  switch (name) {
    case 'ztgate': return { a: ztgate(workers), b: ztgate(workers) };
    case 'mixed': return { a: ztgate(workers), b: wireguardGo };
    case 'wireguard-go': return { a: wireguardGo, b: wireguardGo };
    default: throw new RangeError(`flamegraph: --impl must be ztgate, mixed or wireguard-go, got ${JSON.stringify(name)}`);
  }
}

async function main(): Promise<void> {
  const values = parseToolArgs(import.meta.filename, {
    options: {
      impl: { type: 'string', default: 'ztgate' },
      workers: { type: 'string', default: '2' },
      seconds: { type: 'string', default: '10' },
      udp: { type: 'boolean', default: false },
      bitrate: { type: 'string', default: '1G' },
      reverse: { type: 'boolean', default: false },
      frequency: { type: 'string', default: '999' },
      out: { type: 'string', default: join(REPO_ROOT, 'perf', 'out') },
    },
  });
  const workers = Number(values.workers);
  const seconds = Number(values.seconds);
  const frequency = Number(values.frequency);
  if (!(seconds >= 1 && seconds <= 600) || !(frequency >= 1 && frequency <= 20_000)) {
    throw new RangeError('flamegraph: --seconds must be 1..600 and --frequency 1..20000');
  }
  const { a: implA, b: implB } = impls(values.impl, workers);
  const protocol = values.udp ? 'udp' : 'tcp';
  const tag = `${values.impl}${values.impl === 'wireguard-go' ? '' : `-w${workers}`}-${protocol}${values.reverse ? '-reverse' : ''}`;
  await requireRoot();
  const event = await choosePerfEvent();
  mkdirSync(values.out, { recursive: true });
  const dataPath = join(values.out, `perf-${tag}.data`);

  // bin/ztgate hands these to node; the lab starts daemons with this process's environment.
  process.env.ZTGATE_NODE_OPTIONS = `${process.env.ZTGATE_NODE_OPTIONS ?? ''} ${PERF_NODE_OPTIONS}`.trim();
  const profiledPids: number[] = [];
  try {
    await withLab(async (lab) => {
      const pair = await buildPair(lab, { implA, implB });
      const sides: ReadonlyArray<readonly [string, Side]> = [['A', pair.a], ['B', pair.b]];
      const roleOf = new Map<number, string>();
      for (const [label, side] of sides) {
        const sending = (label === 'A') !== values.reverse;
        roleOf.set(side.daemon.process.pid, `${label} ${side.daemon.implName} (${sending ? 'sender' : 'receiver'})`);
        profiledPids.push(side.daemon.process.pid);
      }
      // One ping first: the handshake is done before the load starts.
      await pair.a.ns.exec('ping', ['-n', '-c', '3', '-i', '0.2', '-W', '2', pair.b.tunnelV4], { timeoutMs: 15_000 });
      const load = iperf3({ ns: pair.b.ns, address: pair.b.tunnelV4 }, pair.a.ns, {
        protocol, durationS: seconds + 2, reverse: values.reverse, ...(values.udp ? { udpBitrate: values.bitrate } : {}),
      });
      // Sample the steady state: from one second in until a second before the load ends.
      await sleep(1000);
      const recording = run('perf', ['record', '-e', event, '-F', String(frequency), '-g', '-p', profiledPids.join(','),
        '-o', dataPath, '--', 'sleep', String(seconds)], { timeoutMs: (seconds + 60) * 1000 });
      const [result] = await Promise.all([load, recording]);
      const script = await run('perf', ['script', '-i', dataPath, '-F', 'comm,pid,tid,ip,sym,dso'],
        { timeoutMs: 300_000, check: true });
      report({ tag, event, frequency, seconds, protocol, values, result, script: script.stdout, roleOf, out: values.out });
    });
  } finally {
    for (const pid of profiledPids) rmSync(`/tmp/perf-${pid}.map`, { force: true });
  }
}

function report(input: {
  readonly tag: string; readonly event: string; readonly frequency: number; readonly seconds: number; readonly protocol: string;
  readonly values: { readonly impl: string; readonly workers: string; readonly bitrate: string; readonly reverse: boolean };
  readonly result: IperfResult; readonly script: string; readonly roleOf: ReadonlyMap<number, string>; readonly out: string;
}): void {
  const samples = parsePerfScript(input.script, REPO_ROOT);
  // Node's main thread carries the process's name; its other threads are told apart by id.
  const rootsOf = (s: Sample): string[] => [input.roleOf.get(s.pid) ?? `pid ${s.pid}`, s.tid === s.pid ? `${s.comm} (main)` : `${s.comm} ${s.tid}`];
  const folded = fold(samples, rootsOf, true);
  const tops = topFrames(folded, 30, 2);
  const throughput = `${input.protocol.toUpperCase()} ${input.values.reverse ? 'B→A' : 'A→B'}: ${input.result.gbps.toFixed(3)} Gbit/s` +
    (input.result.lossPercent === null ? '' : `, loss ${input.result.lossPercent.toFixed(2)}% at ${input.values.bitrate}`);
  const title = `ztgate perf: ${input.values.impl}${input.values.impl === 'wireguard-go' ? '' : `, ${input.values.workers} workers`}, ${throughput}`;
  const subtitle = `${samples.length} samples of ${input.event} at ${input.frequency} Hz over ${input.seconds} s; ` +
    'bottom: process and thread; width: share of samples; top edge: where the CPU was';
  writeFileSync(join(input.out, `flamegraph-${input.tag}.svg`), renderFlameGraph(folded, { title, subtitle }));
  writeFileSync(join(input.out, `flamegraph-${input.tag}.folded`), [...folded].map(([stack, n]) => `${stack} ${n}`).join('\n') + '\n');
  const table = (rows: ReadonlyArray<{ name: string; samples: number; percent: number }>): string[] =>
    rows.map((r) => `${r.percent.toFixed(2).padStart(6)}%  ${String(r.samples).padStart(6)}  ${r.name}`);
  const text = [
    title,
    subtitle,
    '',
    'samples per process and thread:',
    ...table(samplesByRoot(folded, 2)),
    '',
    'top frames by self time (innermost frame of the sample):',
    ...table(tops.self),
    '',
    'top frames by total time (anywhere on the stack):',
    ...table(tops.total),
    '',
  ].join('\n');
  writeFileSync(join(input.out, `flamegraph-${input.tag}.txt`), text);
  console.log(text);
  console.log(`wrote ${join(input.out, `flamegraph-${input.tag}.svg`)} (+ .txt, .folded)`);
}

if (import.meta.main) {
  if (!existsSync('/proc/self/ns/net')) throw new Error('flamegraph: needs Linux network namespaces');
  await main();
}
