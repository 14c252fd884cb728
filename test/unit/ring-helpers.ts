// Main-thread side of the cross-thread tests: run one job of ring.worker.ts in a fresh Worker.
import { Worker } from 'node:worker_threads';
import type { Job } from './ring.worker.ts';

const WORKER_URL = new URL('./ring.worker.ts', import.meta.url);

/** Starts the job now; resolves with its one result, rejects on error, exit without result, or timeout. */
export function runJob<T>(job: Job, timeoutMs: number): Promise<T> {
  const worker = new Worker(WORKER_URL, { workerData: job });
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      void worker.terminate();
      reject(new Error(`${job.kind}: no result after ${timeoutMs} ms`));
    }, timeoutMs);
    worker.once('message', (result: T) => {
      clearTimeout(timer);
      resolve(result);
    });
    worker.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    worker.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${job.kind}: worker exited (${code}) without a result`));
    });
  });
}
