// `npm run bench`: every microbenchmark of the data plane in one table. Each case checks its result
// before it is timed (bench/harness.ts); timings are per operation with tinybench's margin of error.
//
//   node bench/run.ts [--time MS] [--alloc-packets N] [--threads N] [--only GROUP[,GROUP...]]
//
// --time: milliseconds per case (default 1500); --alloc-packets: packets per allocation
// measurement (default 1,000,000); --threads: handshake threads (default 2); --only: a subset
// (aead, ring, path, allocations, handshakes, allowedips, scaling).
// The machine is printed first: the numbers mean little without it, and on a shared machine the
// load average says how much to trust them.
import { parseToolArgs } from '../test/support/tool-args.ts';
import { aeadCases } from './aead.bench.ts';
import { allowedIpsCases } from './allowedips.bench.ts';
import { allocationRows, datapathCases, scalingCases } from './datapath.bench.ts';
import { handshakeCases } from './handshake.bench.ts';
import { describeMachine, formatTable, timeCases } from './harness.ts';
import type { BenchCase, Row } from './harness.ts';
import { ringCases } from './ring.bench.ts';

const GROUPS = ['aead', 'ring', 'path', 'allocations', 'handshakes', 'allowedips', 'scaling'] as const;
type Group = (typeof GROUPS)[number];

const values = parseToolArgs(import.meta.filename, {
  options: {
    time: { type: 'string', default: '1500' },
    'alloc-packets': { type: 'string', default: '1000000' },
    threads: { type: 'string', default: '2' },
    only: { type: 'string', default: GROUPS.join(',') },
  },
});
const timing = { timeMs: Number(values.time), warmupMs: Math.min(300, Number(values.time) / 4) };
const allocPackets = Number(values['alloc-packets']);
const threads = Number(values.threads);
const only = new Set(values.only.split(',').map((g) => g.trim()));
for (const g of only) {
  if (!(GROUPS as readonly string[]).includes(g)) throw new RangeError(`bench: unknown group ${JSON.stringify(g)} (one of ${GROUPS.join(', ')})`);
}
if (!(timing.timeMs > 0) || !(allocPackets > 0) || !(Number.isInteger(threads) && threads >= 1)) {
  throw new RangeError('bench: --time, --alloc-packets and --threads must be positive numbers');
}
const wanted = (group: Group): boolean => only.has(group);

console.log(describeMachine());
const rows: Row[] = [];
const progress = (what: string): void => void process.stderr.write(`bench: ${what}…\n`);

async function timed(what: string, cases: readonly BenchCase[], close?: () => Promise<void>): Promise<Row[]> {
  progress(what);
  try {
    return await timeCases(cases, timing);
  } finally {
    await close?.();
  }
}

if (wanted('aead')) rows.push(...await timed('AEAD backends', aeadCases()));
if (wanted('ring')) {
  const ring = ringCases();
  rows.push(...await timed('ring handoff', ring.cases, ring.close));
}
if (wanted('path')) rows.push(...await timed('encrypt and decrypt paths', datapathCases()));
if (wanted('allocations')) {
  progress(`allocations over ${allocPackets} packets per path`);
  rows.push(...allocationRows(allocPackets));
}
if (wanted('handshakes')) {
  const handshakes = await handshakeCases(threads);
  const handshakeRows = await timed('handshakes', handshakes.cases, handshakes.close);
  const [one, many] = handshakeRows;
  if (one !== undefined && many !== undefined) {
    handshakeRows[1] = { ...many, note: `×${(many.opsPerSecond / one.opsPerSecond).toFixed(2)} vs 1 thread` };
  }
  rows.push(...handshakeRows);
}
if (wanted('allowedips')) rows.push(...await timed('AllowedIPs lookups', allowedIpsCases()));
if (wanted('scaling')) {
  const scaling = await scalingCases();
  const scalingRows = await timed('encrypt path on 1 and 2 threads', scaling.cases, scaling.close);
  const [one, two] = scalingRows;
  if (one !== undefined && two !== undefined) {
    const ratio = two.opsPerSecond / one.opsPerSecond;
    scalingRows[1] = { ...two, note: `×${ratio.toFixed(2)} vs 1 thread (goal ≥ 1.60)${ratio >= 1.6 ? '' : ': below goal'}` };
  }
  rows.push(...scalingRows);
}
console.log(formatTable(rows));
console.log(describeMachine().replace(/^machine: .*; load/, 'after the run: load'));
