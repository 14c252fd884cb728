// The control thread's pool of handshake threads (workers/handshake-worker.ts). Under a storm of
// initiations the responder's X25519 work (four scalar multiplications per handshake, whitepaper
// §5.4.2–§5.4.3) is what the control thread would spend its time on; the pool spreads it over cores
// while the control thread keeps everything stateful (engine.ts). Jobs are batched: every job
// submitted in one turn of the event loop leaves in one message per thread, least busy thread first,
// as packed records (handshake-pool-records.ts) in a transferred buffer.
import { Worker } from 'node:worker_threads';
import type { HandshakeJob, HandshakeJobResult } from '../wireguard/noise.ts';
import { decodeResult, encodeJob, JOB_RECORD_SIZE, RESULT_RECORD_SIZE } from './handshake-pool-records.ts';

/** Handshake threads allocate a little per job; a small young generation bounds their memory. */
const HANDSHAKE_THREAD_YOUNG_GENERATION_MB = 4;

export interface HandshakePoolOptions {
  readonly threads: number;
  /** Results of one batch, in the order its jobs were submitted. */
  readonly onResults: (results: readonly HandshakeJobResult[]) => void;
  /** A thread failed (a bug: jobs never throw on bad input); its jobs will not come back. */
  readonly onError: (error: Error) => void;
}

export class HandshakePool {
  readonly #workers: readonly Worker[];
  /** Jobs sent to each thread and not yet answered. */
  readonly #outstanding: number[];
  readonly #batches: HandshakeJob[][];
  #flushScheduled = false;
  #closed = false;

  private constructor(workers: readonly Worker[], options: HandshakePoolOptions) {
    this.#workers = workers;
    this.#outstanding = workers.map(() => 0);
    this.#batches = workers.map(() => []);
    workers.forEach((worker, index) => {
      worker.on('message', (records: Uint8Array) => {
        const results: HandshakeJobResult[] = [];
        for (let r = 0; r < records.length / RESULT_RECORD_SIZE; r++) results.push(decodeResult(records, r));
        this.#outstanding[index]! -= results.length;
        options.onResults(results);
      });
      worker.on('error', (error) => options.onError(error));
    });
  }

  /** Starts `threads` handshake threads; resolves once each is ready. */
  static async start(options: HandshakePoolOptions): Promise<HandshakePool> {
    if (!(Number.isInteger(options.threads) && options.threads >= 1)) {
      throw new RangeError(`handshake-pool: threads must be a positive integer, got ${options.threads}`);
    }
    const workers = Array.from({ length: options.threads }, () => new Worker(new URL('../workers/handshake-worker.ts', import.meta.url), {
      name: 'handshake',
      resourceLimits: { maxYoungGenerationSizeMb: HANDSHAKE_THREAD_YOUNG_GENERATION_MB },
    }));
    try {
      await Promise.all(workers.map((worker) => new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      })));
    } catch (error) {
      await Promise.all(workers.map((worker) => worker.terminate()));
      throw error;
    }
    return new HandshakePool(workers, options);
  }

  /** Queues a job; it leaves with the others of this turn. */
  submit(job: HandshakeJob): void {
    if (this.#closed) return;
    let target = 0;
    for (let k = 1; k < this.#workers.length; k++) {
      if (this.#load(k) < this.#load(target)) target = k;
    }
    this.#batches[target]!.push(job);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#workers.map((worker) => worker.terminate()));
  }

  #load(index: number): number {
    return this.#outstanding[index]! + this.#batches[index]!.length;
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed) return;
    for (let k = 0; k < this.#workers.length; k++) {
      const batch = this.#batches[k]!;
      if (batch.length === 0) continue;
      this.#outstanding[k]! += batch.length;
      const records = new Uint8Array(batch.length * JOB_RECORD_SIZE);
      for (let j = 0; j < batch.length; j++) encodeJob(batch[j]!, records, j);
      this.#workers[k]!.postMessage(records, [records.buffer]);
      this.#batches[k] = [];
    }
  }
}
