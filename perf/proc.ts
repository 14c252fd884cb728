// What the lab instruments read of a daemon process under /proc (the parsing is in measure.ts).
import { readFileSync, readdirSync } from 'node:fs';
import { parseSchedStat, type SchedStat } from './measure.ts';

export interface ThreadSchedStat extends SchedStat {
  /** The thread's name: Node names a worker thread after its script, cut to 15 characters. */
  readonly comm: string;
}

/** Each live thread of process `pid`, with its schedstat (ns resolution, unlike /proc/PID/stat's ticks). */
export function threadSchedStats(pid: number): ThreadSchedStat[] {
  const threads: ThreadSchedStat[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let comm: string;
    let schedstat: string;
    try {
      comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      schedstat = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
    } catch (error) {
      // The thread exited between the listing and the reads.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ESRCH') continue;
      throw error;
    }
    threads.push({ comm, ...parseSchedStat(schedstat) });
  }
  return threads;
}
