// The shared shape of every benchmark that `npm run bench` (bench/run.ts) runs: a case checks its
// own result before anything is timed, then tinybench times it; a row of the final table says how
// long one operation took and how many fit in a second. Cases that do many operations per call
// (batches, work spread over threads) say how many, so the table is always per operation.
import { cpus, loadavg, totalmem } from 'node:os';
import { Bench } from 'tinybench';

export interface BenchCase {
  /** Which part of the data plane: the table is grouped by it. */
  readonly group: string;
  readonly name: string;
  /** What one operation is ("packet", "handshake", ...): the unit of µs/op and ops/s. */
  readonly unit: string;
  /** Operations one call of `run` performs. */
  readonly opsPerRun: number;
  /** Throws when the code under test computes something wrong; called once before timing. */
  readonly check: () => void | Promise<void>;
  readonly run: () => void | Promise<void>;
  /** Untimed preparation before each call of `run` (e.g. fresh datagrams for a replay window). */
  readonly beforeEach?: () => void;
  /** Shown beside the timing (e.g. memory use of the structure timed). */
  readonly note?: string;
}

export interface Row {
  readonly group: string;
  readonly name: string;
  readonly unit: string;
  /** NaN for rows that are not timings (e.g. bytes allocated per packet). */
  readonly microsPerOp: number;
  readonly opsPerSecond: number;
  /** Relative margin of error of the mean, percent (NaN when not timed). */
  readonly rmePercent: number;
  readonly note: string;
}

export interface TimingOptions {
  /** Milliseconds tinybench spends on each case (after warm-up). */
  readonly timeMs: number;
  readonly warmupMs: number;
}

/** Checks every case, then times them one after another; returns one row per case. */
export async function timeCases(cases: readonly BenchCase[], options: TimingOptions): Promise<Row[]> {
  for (const c of cases) {
    try {
      await c.check();
    } catch (error) {
      throw new Error(`bench: ${c.group} / ${c.name} computed a wrong result: ${(error as Error).message}`, { cause: error });
    }
  }
  const bench = new Bench({ time: options.timeMs, warmupTime: options.warmupMs });
  for (const c of cases) bench.add(`${c.group} / ${c.name}`, c.run, c.beforeEach === undefined ? {} : { beforeEach: c.beforeEach });
  await bench.run();
  return bench.tasks.map((task, i): Row => {
    const c = cases[i]!;
    const result = task.result;
    if (result.state !== 'completed') {
      const reason = result.state === 'errored' ? `: ${String(result.error)}` : '';
      throw new Error(`bench: ${task.name} ${result.state}${reason}`);
    }
    const microsPerOp = (result.latency.mean * 1000) / c.opsPerRun;
    return {
      group: c.group, name: c.name, unit: c.unit, microsPerOp, opsPerSecond: 1e6 / microsPerOp,
      rmePercent: result.latency.rme, note: c.note ?? '',
    };
  });
}

/** A line saying what ran the numbers: they mean little without it. */
export function describeMachine(): string {
  const cores = cpus();
  const model = cores[0]?.model.trim() ?? 'unknown CPU';
  const [one = 0, five = 0] = loadavg();
  return `machine: ${model}, ${cores.length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; node ${process.version}; ` +
    `load average ${one.toFixed(2)} (1 min) ${five.toFixed(2)} (5 min)`;
}

function formatCount(n: number): string {
  if (!Number.isFinite(n)) return '';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(1);
}

function formatMicros(us: number): string {
  if (!Number.isFinite(us)) return '';
  if (us >= 100) return us.toFixed(0);
  if (us >= 1) return us.toFixed(2);
  return us.toFixed(3);
}

/** The rows as an aligned text table, grouped as they come. */
export function formatTable(rows: readonly Row[]): string {
  const header = ['group', 'case', 'µs/op', 'ops/s', '±%', 'note'];
  const cells = rows.map((r) => [
    r.group,
    r.name,
    formatMicros(r.microsPerOp),
    Number.isFinite(r.opsPerSecond) ? `${formatCount(r.opsPerSecond)} ${r.unit}/s` : '',
    Number.isFinite(r.rmePercent) ? r.rmePercent.toFixed(1) : '',
    r.note,
  ]);
  const widths = header.map((h, col) => Math.max(h.length, ...cells.map((row) => row[col]!.length)));
  const rightAligned = new Set([2, 3, 4]);
  const line = (row: readonly string[]): string =>
    row.map((cell, col) => (rightAligned.has(col) ? cell.padStart(widths[col]!) : cell.padEnd(widths[col]!))).join('  ').trimEnd();
  const out = [line(header), line(widths.map((w) => '-'.repeat(w)))];
  let previousGroup = '';
  for (let i = 0; i < cells.length; i++) {
    const row = cells[i]!;
    if (row[0] === previousGroup) row[0] = '';
    else previousGroup = row[0]!;
    out.push(line(row));
  }
  return out.join('\n');
}


/** Runs `cases` on their own and prints their table: for the single-topic bench files. */
export async function runStandalone(cases: readonly BenchCase[], options: TimingOptions = { timeMs: 1500, warmupMs: 300 }): Promise<void> {
  console.log(describeMachine());
  console.log(formatTable(await timeCases(cases, options)));
}

export { seededRandom as seeded } from '../test/support/random.ts';
