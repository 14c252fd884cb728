// Ring handoff between two threads, as the packet path uses it: this thread pushes slot indexes on
// a forward ring and rings the consumer's doorbell; an echo Worker pops them and pushes them back on
// the return ring (the slot's trip home). One task moves 65,536 descriptors there and back; the
// report is descriptors/s one way, single entries vs batches of 32, with and without the consumer's
// spin before sleeping. Every descriptor is checked to come back exactly once before timing.
// Run alone: node bench/ring.bench.ts (or as part of npm run bench).
import type { BenchCase } from './harness.ts';
import { runStandalone } from './harness.ts';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Doorbell, waitForWork } from '../src/ring/doorbell.ts';
import { Ring } from '../src/ring/ring.ts';

interface EchoConfig {
  readonly forward: SharedArrayBuffer;
  readonly back: SharedArrayBuffer;
  readonly doorbell: SharedArrayBuffer;
  /** [0]: stop flag, set by the main thread. */
  readonly control: SharedArrayBuffer;
  readonly batch: number;
  readonly spinMicros: number;
}

const DESCRIPTORS_PER_TASK = 65_536;
const IN_FLIGHT = 1024;
const FORWARD_CAPACITY = 256;

function echo(config: EchoConfig): void {
  const forward = new Ring(config.forward);
  const back = new Ring(config.back);
  const doorbell = new Doorbell(config.doorbell);
  const stop = new Int32Array(config.control);
  const out = new Uint32Array(config.batch);
  const hasWork = (): boolean => !forward.isEmpty();
  while (Atomics.load(stop, 0) === 0) {
    let n = 0;
    if (config.batch === 1) {
      const value = forward.pop();
      if (value !== -1 && !back.push(value)) throw new Error('bench: the return ring holds every descriptor in flight');
      n = value === -1 ? 0 : 1;
    } else {
      n = forward.popBatch(out);
      if (back.pushBatch(out, n) !== n) throw new Error('bench: the return ring holds every descriptor in flight');
    }
    if (n === 0) waitForWork(doorbell, 100, hasWork, config.spinMicros);
  }
}

if (!isMainThread) {
  echo(workerData as EchoConfig);
  parentPort?.postMessage('stopped');
}

interface Pair {
  readonly forward: Ring;
  readonly back: Ring;
  readonly doorbell: Doorbell;
  readonly stop: () => Promise<void>;
}

function startEcho(batch: number, spinMicros: number): Pair {
  const forward = Ring.create(FORWARD_CAPACITY);
  const back = Ring.create(IN_FLIGHT);
  const doorbell = Doorbell.create();
  const control = new SharedArrayBuffer(4);
  const config: EchoConfig = { forward: forward.buffer, back: back.buffer, doorbell: doorbell.buffer, control, batch, spinMicros };
  const worker = new Worker(new URL(import.meta.url), { workerData: config });
  return {
    forward,
    back,
    doorbell,
    stop: async () => {
      Atomics.store(new Int32Array(control), 0, 1);
      await new Promise((resolve) => worker.once('exit', resolve));
    },
  };
}

/** Moves DESCRIPTORS_PER_TASK descriptors there and back; returns the sum of what came back. */
function roundTrip(pair: Pair, batch: number, values: Uint32Array, out: Uint32Array): number {
  let sent = 0;
  let returned = 0;
  let sum = 0;
  while (returned < DESCRIPTORS_PER_TASK) {
    const room = Math.min(batch, DESCRIPTORS_PER_TASK - sent, IN_FLIGHT - (sent - returned));
    if (room > 0) {
      for (let i = 0; i < room; i++) values[i] = sent + i;
      const pushed = batch === 1 ? (pair.forward.push(values[0]!) ? 1 : 0) : pair.forward.pushBatch(values, room);
      if (pushed > 0) pair.doorbell.ring();
      sent += pushed;
    }
    const n = pair.back.popBatch(out);
    for (let i = 0; i < n; i++) sum += out[i]!;
    returned += n;
  }
  return sum;
}

/** Single entries vs batches of 32, consumer spin 0 vs 20 µs; `close` stops the echo threads. */
export function ringCases(): { cases: BenchCase[]; close: () => Promise<void> } {
  const pairs: Pair[] = [];
  const cases: BenchCase[] = [];
  for (const batch of [1, 32]) {
    for (const spinMicros of [0, 20]) {
      const pair = startEcho(batch, spinMicros);
      pairs.push(pair);
      const values = new Uint32Array(batch);
      const out = new Uint32Array(IN_FLIGHT);
      const expected = (DESCRIPTORS_PER_TASK * (DESCRIPTORS_PER_TASK - 1)) / 2;
      cases.push({
        group: 'ring handoff',
        name: `2 threads, batch ${batch}, spin ${spinMicros} µs`,
        unit: 'descriptor',
        opsPerRun: DESCRIPTORS_PER_TASK,
        check() {
          const got = roundTrip(pair, batch, values, out);
          if (got !== expected) throw new Error(`descriptors lost or duplicated (sum ${got}, expected ${expected})`);
        },
        run() {
          roundTrip(pair, batch, values, out);
        },
      });
    }
  }
  return { cases, close: async () => void (await Promise.all(pairs.map((p) => p.stop()))) };
}

if (isMainThread && import.meta.main) {
  const { cases, close } = ringCases();
  try {
    await runStandalone(cases);
  } finally {
    await close();
  }
}
