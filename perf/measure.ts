// The pure parts of perf/compare.ts: the bounded search for the highest UDP rate under a loss
// limit, and readers for the kernel's and the daemon's own reports (UDP socket error counters,
// process CPU time, pino warnings). No I/O here, so each is tested on its own.

/** One trial of the UDP search: what was offered and what came out. */
export interface RateTrial {
  readonly offeredMbps: number;
  readonly receivedGbps: number;
  readonly lossPercent: number;
}

export interface RateSearch {
  /** The highest offered rate that stayed under the loss limit (0 when none did). */
  readonly bestMbps: number;
  /** What the receiver got at that rate. */
  readonly receivedGbps: number;
  readonly trials: readonly RateTrial[];
}

export interface RateSearchOptions {
  readonly startMbps: number;
  readonly maxMbps: number;
  readonly maxLossPercent: number;
  /** At most this many trials (each one iperf3 run). */
  readonly maxTrials: number;
  /** Stop once the bracket is narrower than this fraction of the best rate. */
  readonly resolution: number;
}

/**
 * Doubles the offered rate from `startMbps` while loss stays under the limit, then bisects between
 * the best passing and the lowest failing rate; never more than `maxTrials` measurements.
 */
export async function searchHighestRate(measure: (offeredMbps: number) => Promise<RateTrial>, options: RateSearchOptions): Promise<RateSearch> {
  if (!(options.startMbps > 0 && options.maxMbps >= options.startMbps && options.maxTrials >= 1)) {
    throw new RangeError('compare: the UDP search needs 0 < start ≤ max and at least one trial');
  }
  const trials: RateTrial[] = [];
  let good: RateTrial | null = null;
  let badMbps = Number.POSITIVE_INFINITY;
  let rate = Math.round(options.startMbps);
  while (trials.length < options.maxTrials) {
    const trial = await measure(rate);
    trials.push(trial);
    if (trial.lossPercent < options.maxLossPercent) {
      if (good === null || trial.offeredMbps > good.offeredMbps) good = trial;
    } else {
      badMbps = Math.min(badMbps, trial.offeredMbps);
    }
    const low = good?.offeredMbps ?? 0;
    let next: number;
    if (badMbps === Number.POSITIVE_INFINITY) {
      if (low >= options.maxMbps) break;
      next = Math.min(options.maxMbps, low * 2);
    } else {
      if (badMbps - low <= Math.max(1, options.resolution * Math.max(low, 1))) break;
      next = (low + badMbps) / 2;
    }
    rate = Math.max(1, Math.round(next));
    if (rate === trial.offeredMbps) break;
  }
  return { bestMbps: good?.offeredMbps ?? 0, receivedGbps: good?.receivedGbps ?? 0, trials };
}

/** UDP socket buffer error counters of one namespace (IPv4 and IPv6 added up). */
export interface UdpErrorCounters {
  readonly rcvbufErrors: number;
  readonly sndbufErrors: number;
}

/** Reads RcvbufErrors and SndbufErrors from /proc/net/snmp (and /proc/net/snmp6 when given). */
export function parseUdpErrors(snmp: string, snmp6 = ''): UdpErrorCounters {
  const lines = snmp.split('\n').filter((line) => line.startsWith('Udp: '));
  if (lines.length < 2) throw new Error('compare: /proc/net/snmp has no Udp: lines');
  const names = lines[0]!.trim().split(/\s+/);
  const values = lines[1]!.trim().split(/\s+/);
  const field = (name: string): number => {
    const i = names.indexOf(name);
    if (i < 0) throw new Error(`compare: /proc/net/snmp has no Udp ${name}`);
    return Number(values[i]);
  };
  const v6 = (name: string): number => Number(new RegExp(`^Udp6${name}\\s+(\\d+)`, 'm').exec(snmp6)?.[1] ?? 0);
  return {
    rcvbufErrors: field('RcvbufErrors') + v6('RcvbufErrors'),
    sndbufErrors: field('SndbufErrors') + v6('SndbufErrors'),
  };
}

/**
 * The drops of the sockets whose inodes are given, summed from /proc/net/udp or /proc/net/udp6
 * text: the kernel counts there, per socket, every datagram it could not queue (a full receive
 * buffer, a failed checksum). Unlike the namespace-wide RcvbufErrors, this is one process's own
 * sockets, not iperf3's.
 */
export function parseSocketDrops(table: string, inodes: ReadonlySet<number>): number {
  const lines = table.split('\n');
  const columns = lines[0]?.trim().split(/\s+/) ?? [];
  // The header names "tx_queue rx_queue" and "tr tm->when" as two columns each but their values
  // are one field each ("00000000:00000000"), so count the inode and drops fields from the end.
  if (columns.at(-1) !== 'drops' || !columns.includes('inode')) throw new Error('compare: unreadable /proc/net/udp header');
  let drops = 0;
  for (const line of lines.slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 4) continue;
    const inode = Number(fields.at(-4));
    if (inodes.has(inode)) drops += Number(fields.at(-1));
  }
  return drops;
}

/** User + system CPU time in clock ticks from /proc/PID/stat (fields 14 and 15). */
export function parseCpuTicks(stat: string): number {
  // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error('compare: unreadable /proc/PID/stat');
  return utime + stime;
}

export interface LogRecord {
  readonly level: number;
  readonly msg: string;
}

/** The pino records at level ≥ 40 (warn, error, fatal) in a daemon's output; other lines are ignored. */
export function warningsIn(output: string): LogRecord[] {
  const warnings: LogRecord[] = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof record !== 'object' || record === null) continue;
    const { level, msg } = record as { level?: unknown; msg?: unknown };
    if (typeof level === 'number' && level >= 40) warnings.push({ level, msg: typeof msg === 'string' ? msg : '' });
  }
  return warnings;
}
