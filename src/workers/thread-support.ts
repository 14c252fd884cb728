// What every packet thread shares: reading its init data, draining the control thread's commands
// without yielding to the event loop, and reporting drop counters now and then.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { DROP_REPORT_INTERVAL_MS, type ControlNotice, type ThreadInit } from '../control/messages.ts';


export function threadInit(): ThreadInit {
  if (parentPort === null) throw new Error('workers: this file runs as a worker thread');
  return workerData as ThreadInit;
}

export function notifyControl(notice: ControlNotice): void {
  parentPort?.postMessage(notice);
}

/**
 * Commands arrive by postMessage, but a packet thread blocks in Atomics.wait or poll(2) rather than
 * in Node's event loop, so it takes them synchronously. `signal` is the word the control thread
 * bumps after each postMessage: comparing it is cheaper than polling the port every iteration.
 */
export class CommandInbox<T> {
  private seen = 0;
  private readonly signals: Int32Array;
  private readonly index: number;

  constructor(signals: SharedArrayBuffer, index: number) {
    this.signals = new Int32Array(signals);
    this.index = index;
  }

  pending(): boolean {
    return Atomics.load(this.signals, this.index) !== this.seen;
  }

  drain(apply: (command: T) => void): void {
    if (!this.pending() || parentPort === null) return;
    this.seen = Atomics.load(this.signals, this.index);
    for (let m = receiveMessageOnPort(parentPort); m !== undefined; m = receiveMessageOnPort(parentPort)) {
      apply(m.message as T);
    }
  }
}

/** Reports a thread's drop counters when they changed since the last report (rate-limited). */
export class DropReporter {
  private lastReportAt = 0;
  private lastTotal = 0;
  private readonly thread: string;

  constructor(thread: string) {
    this.thread = thread;
  }

  /** `counts` is only called when a report is due, so the hot loop allocates nothing. */
  maybeReport(counts: () => Readonly<Record<string, number>>, now: number, force = false): void {
    if (!force && now - this.lastReportAt < DROP_REPORT_INTERVAL_MS) return;
    this.report(counts(), now, force);
  }

  private report(counts: Readonly<Record<string, number>>, now: number, force: boolean): void {
    // The next look comes an interval later whether or not this one reports: a thread whose
    // counters did not change must not gather them again on every turn.
    this.lastReportAt = now;
    let total = 0;
    for (const key in counts) total += counts[key] ?? 0;
    if (total === this.lastTotal && !force) return;
    this.lastTotal = total;
    notifyControl({ kind: 'drops', thread: this.thread, counts: { ...counts } });
  }
}
