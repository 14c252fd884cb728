// What the commands that run a device share: argument errors, the worker count, the keep-warm
// window, and signals.
import { availableParallelism } from 'node:os';
import type { Device } from '../control/device.ts';
import { MAX_WORKERS } from '../ring/fabric.ts';
import { DEFAULT_KEEP_WARM_MS, MAX_KEEP_WARM_MS } from '../workers/keep-warm.ts';

/** A command line that cannot be run as given: printed with the usage text, exit status 2. */
export class UsageError extends Error {}

/** `--workers`: packet worker threads, default cores − 1 and at least 1. */
export function parseWorkers(text: string | undefined): number {
  if (text === undefined) return Math.max(1, availableParallelism() - 1);
  const workers = Number(text);
  if (!Number.isInteger(workers) || workers < 1 || workers > MAX_WORKERS) {
    throw new UsageError(`--workers must be an integer from 1 to ${MAX_WORKERS}, got '${text}'`);
  }
  return workers;
}

/** `--keep-warm-ms`: how long after its last data packet a worker keeps its path warm; 0: never. */
export function parseKeepWarm(text: string | undefined): number {
  if (text === undefined) return DEFAULT_KEEP_WARM_MS;
  const ms = Number(text);
  if (text.trim() === '' || !Number.isInteger(ms) || ms < 0 || ms > MAX_KEEP_WARM_MS) {
    throw new UsageError(`--keep-warm-ms must be an integer from 0 to ${MAX_KEEP_WARM_MS}, got '${text}'`);
  }
  return ms;
}

/**
 * Stops `device` gracefully on SIGTERM or SIGINT (a second signal forces the exit) and resolves
 * once it has stopped, for whatever reason.
 */
export function runUntilStopped(device: Device): Promise<void> {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) process.exit(1);
    void device.stop(`received ${signal}`);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return device.stopped;
}
