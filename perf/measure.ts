// The pure parts of the lab instruments: for perf/compare.ts, the bounded search for the highest
// UDP rate under a loss limit and readers for the kernel's and the daemon's own reports (UDP socket
// error counters, process and thread CPU time, pino warnings); for perf/hops.ts, the packet
// tracepoints and the echoes they trace; a quantile, a median and a table layout for all. No I/O
// here, so each is tested on its own.

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

/** A thread's /proc/PID/task/TID/schedstat: ns on a CPU, ns runnable but waiting, times switched in. */
export interface SchedStat {
  readonly onCpuNs: number;
  readonly waitNs: number;
  readonly slices: number;
}

export function parseSchedStat(text: string): SchedStat {
  const [onCpuNs, waitNs, slices] = text.trim().split(' ').map(Number);
  if (!Number.isFinite(onCpuNs) || !Number.isFinite(waitNs) || !Number.isFinite(slices)) throw new Error('perf: unreadable schedstat');
  return { onCpuNs: onCpuNs!, waitNs: waitNs!, slices: slices! };
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

/** The q-quantile (0 ≤ q ≤ 1) of ascending `sorted`, as its element at ⌊q·n⌋; NaN when empty. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/**
 * The median of the values that are not null (the mean of the middle two for an even count); null
 * when there are none.
 */
export function median(values: readonly (number | null)[]): number | null {
  const known = values.filter((v): v is number => v !== null).sort((x, y) => x - y);
  if (known.length === 0) return null;
  const mid = Math.floor(known.length / 2);
  return known.length % 2 === 1 ? known[mid]! : (known[mid - 1]! + known[mid]!) / 2;
}

/**
 * Lays out a table as the instruments print it: the first column left-aligned, the others
 * right-aligned, columns two spaces apart, a rule of dashes under the header.
 */
export function formatColumns(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, col) => Math.max(h.length, ...rows.map((row) => (row[col] ?? '').length)));
  const line = (row: readonly string[]): string =>
    widths.map((width, col) => (col === 0 ? (row[col] ?? '').padEnd(width) : (row[col] ?? '').padStart(width))).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** A packet event from `perf script -F comm,time,event,trace` over the net:* tracepoints. */
export interface NetEvent {
  readonly comm: string;
  /** Seconds, perf's clock. */
  readonly time: number;
  readonly kind: 'xmit' | 'receive';
  readonly device: string;
  readonly length: number;
}

/** Reads net:net_dev_xmit (a device sends) and net:netif_receive_skb (a device receives) lines. */
export function parseNetEvents(script: string): NetEvent[] {
  const events: NetEvent[] = [];
  for (const line of script.split('\n')) {
    const match = /^\s*(.+?)\s+(\d+\.\d+):\s+net:(net_dev_xmit|netif_receive_skb):\s.*\bdev=(\S+).*\blen=(\d+)/.exec(line);
    if (match === null) continue;
    events.push({
      comm: match[1]!,
      time: Number(match[2]),
      kind: match[3] === 'net_dev_xmit' ? 'xmit' : 'receive',
      device: match[4]!,
      length: Number(match[5]),
    });
  }
  return events;
}

/** The devices of a tunnel pair whose events mark a ping's way through it. */
export interface PairDevices {
  readonly tunA: string;
  readonly underlayA: string;
  readonly tunB: string;
  readonly underlayB: string;
}

/** One echo's way through a pair, µs per leg (see hopTimings). */
export interface PingHops {
  /** A's daemon: the request read from A's tunnel device → sent on A's underlay. */
  readonly aOut: number;
  /** The underlay, then B's daemon: sent by A → written to B's tunnel device. */
  readonly bIn: number;
  /** B's kernel: the request written → the reply queued on B's tunnel device. */
  readonly bReply: number;
  /** B's daemon: the reply read → sent on B's underlay. */
  readonly bOut: number;
  /** The underlay, then A's daemon: sent by B → written to A's tunnel device. */
  readonly aIn: number;
  readonly total: number;
}

/**
 * Follows each ping from A through a pair and back, in the order the kernel saw it: `ping` hands the
 * request (`ipLength` bytes) to A's tunnel device, A's underlay sends the datagram, B's tunnel
 * device receives the request, sends the reply, B's underlay sends it, A's tunnel device receives
 * it. An echo whose six events are not all there (the trace ended, a reply was lost) is left out.
 */
export function hopTimings(events: readonly NetEvent[], devices: PairDevices, ipLength: number): PingHops[] {
  const steps: ReadonlyArray<(event: NetEvent) => boolean> = [
    (e) => e.kind === 'xmit' && e.device === devices.underlayA,
    (e) => e.kind === 'receive' && e.device === devices.tunB && e.length === ipLength,
    (e) => e.kind === 'xmit' && e.device === devices.tunB && e.length === ipLength,
    (e) => e.kind === 'xmit' && e.device === devices.underlayB,
    (e) => e.kind === 'receive' && e.device === devices.tunA && e.length === ipLength,
  ];
  const isRequest = (e: NetEvent): boolean => e.comm === 'ping' && e.kind === 'xmit' && e.device === devices.tunA && e.length === ipLength;
  const starts: number[] = [];
  events.forEach((event, index) => {
    if (isRequest(event)) starts.push(index);
  });
  const hops: PingHops[] = [];
  starts.forEach((start, n) => {
    // Each echo's events lie between its request and the next one's.
    const end = starts[n + 1] ?? events.length;
    const times = [events[start]!.time];
    let j = start + 1;
    for (const step of steps) {
      while (j < end && !step(events[j]!)) j++;
      if (j === end) return;
      times.push(events[j]!.time);
      j++;
    }
    const us = (k: number): number => (times[k + 1]! - times[k]!) * 1e6;
    hops.push({ aOut: us(0), bIn: us(1), bReply: us(2), bOut: us(3), aIn: us(4), total: (times[5]! - times[0]!) * 1e6 });
  });
  return hops;
}
