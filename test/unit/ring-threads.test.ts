// The ring and the doorbell between real threads: a million entries with nothing lost, duplicated
// or reordered, wake-ups that arrive, and an idle consumer that costs (almost) no CPU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Doorbell, RINGS_READY, waitForWorkAsync } from '../../src/ring/doorbell.ts';
import { Ring } from '../../src/ring/ring.ts';
import { READABLE_ALSO_FD, READABLE_FD, closeFd, createEventFd, signalEventFd } from '../../src/io/libc.ts';
import { runJob } from './ring-helpers.ts';

interface ConsumerResult {
  received: number;
  outOfOrder: number;
  sum: number;
  reasons: { work: number; rung: number; 'timed-out': number };
  leftOver: number;
}

test('1,000,000 indexes cross two worker threads in order, none lost or duplicated', async () => {
  const count = 1_000_000;
  const ring = Ring.create(256);
  const doorbell = Doorbell.create();
  const shared = {
    ring: ring.buffer,
    doorbell: doorbell.buffer,
    spaceDoorbell: Doorbell.create().buffer,
    count,
    deadlineMs: 20_000,
  };
  const started = performance.now();
  const [consumer, producer] = await Promise.all([
    runJob<ConsumerResult>({ kind: 'ring-consumer', ...shared }, 30_000),
    runJob<{ pushed: number }>({ kind: 'ring-producer', ...shared }, 30_000),
  ]);
  const elapsedMs = performance.now() - started;
  let expectedSum = 0;
  for (let i = 0; i < count; i++) expectedSum = (expectedSum + i) >>> 0;
  assert.equal(producer.pushed, count);
  assert.equal(consumer.received, count);
  assert.equal(consumer.outOfOrder, 0);
  assert.equal(consumer.sum, expectedSum);
  assert.equal(consumer.leftOver, 0);
  // A lost wake-up would show as a 2 s timeout while the producer still had entries to deliver.
  assert.equal(consumer.reasons['timed-out'], 0);
  console.log(`# 1e6 entries in ${elapsedMs.toFixed(0)} ms incl. worker start; waits: ${JSON.stringify(consumer.reasons)}`);
});

test('a sleeping worker wakes when a producer pushes and rings', async () => {
  const ring = Ring.create(8);
  const doorbell = Doorbell.create();
  const result = runJob<{ reason: string; elapsedMs: number; value: number; sleepingAfter: boolean }>(
    { kind: 'wake', ring: ring.buffer, doorbell: doorbell.buffer, timeoutMs: 10_000 },
    15_000,
  );
  const deadline = performance.now() + 5_000;
  while (!doorbell.sleeping && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(doorbell.sleeping, true, 'the worker announced that it sleeps');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(ring.push(1234), true);
  doorbell.ring();
  const woke = await result;
  assert.equal(woke.reason, 'rung');
  assert.equal(woke.value, 1234);
  assert.equal(woke.sleepingAfter, false);
  assert.ok(woke.elapsedMs < 5_000, `woke after ${woke.elapsedMs} ms, long before its 10 s timeout`);
  assert.equal(doorbell.rings, 1);
});

for (const wakeBy of ['a ring', 'its first descriptor', 'its second descriptor'] as const) {
  test(`a worker sleeping in poll(2) on two descriptors and its doorbell wakes on ${wakeBy}, and says which`, async () => {
    const ring = Ring.create(8);
    const doorbell = Doorbell.create();
    const pollFd = createEventFd();
    const alsoPollFd = createEventFd();
    try {
      const result = runJob<{ ready: number; elapsedMs: number; value: number | undefined; sleepingAfter: boolean }>(
        { kind: 'wake-in-poll', ring: ring.buffer, doorbell: doorbell.buffer, pollFd, alsoPollFd, timeoutMs: 10_000 },
        15_000,
      );
      const deadline = performance.now() + 5_000;
      while (!doorbell.sleeping && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      assert.equal(doorbell.sleeping, true, 'the worker announced that it sleeps');
      await new Promise((r) => setTimeout(r, 50));
      if (wakeBy === 'a ring') {
        assert.equal(ring.push(1234), true);
        doorbell.ring();
      } else signalEventFd(wakeBy === 'its first descriptor' ? pollFd : alsoPollFd);
      const woke = await result;
      const expected = { 'a ring': RINGS_READY, 'its first descriptor': READABLE_FD, 'its second descriptor': READABLE_ALSO_FD }[wakeBy];
      assert.equal(woke.ready, expected);
      if (wakeBy === 'a ring') assert.equal(woke.value, 1234);
      assert.equal(woke.sleepingAfter, false);
      assert.ok(woke.elapsedMs < 5_000, `woke after ${woke.elapsedMs} ms, long before its 10 s timeout`);
    } finally {
      closeFd(pollFd);
      closeFd(alsoPollFd);
    }
  });
}

test('ring() costs nothing while the consumer is awake: no counter change', () => {
  const doorbell = Doorbell.create();
  for (let i = 0; i < 10; i++) doorbell.ring();
  assert.equal(doorbell.rings, 0);
  doorbell.announceSleep();
  doorbell.ring();
  assert.equal(doorbell.rings, 1);
  doorbell.wake();
  doorbell.ring();
  assert.equal(doorbell.rings, 1);
});

test('an idle worker waiting on its doorbell uses almost no CPU', async () => {
  const ring = Ring.create(8);
  const doorbell = Doorbell.create();
  const result = await runJob<{ cpuMicros: number; wallMs: number; reasons: Record<string, number> }>(
    { kind: 'idle', ring: ring.buffer, doorbell: doorbell.buffer, durationMs: 1000, timeoutMs: 100 },
    10_000,
  );
  assert.ok(result.wallMs >= 1000);
  assert.ok(result.reasons['timed-out']! >= 5, 'it slept in timed waits, not in a spin');
  // Generous bound: a spinning thread would use ~1,000,000 µs here.
  assert.ok(result.cpuMicros < 100_000, `idle thread used ${result.cpuMicros} µs of CPU in ${result.wallMs} ms`);
  console.log(`# idle worker: ${result.cpuMicros} µs CPU over ${result.wallMs.toFixed(0)} ms`);
});

test('waitForWorkAsync: the main thread waits without blocking and wakes on a ring', async () => {
  const ring = Ring.create(8);
  const doorbell = Doorbell.create();
  const hasWork = (): boolean => !ring.isEmpty();
  // A pending Atomics.waitAsync does not keep the event loop alive; this timer does, and it also
  // proves the loop keeps running while we wait.
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 10);
  try {
    assert.equal(await waitForWorkAsync(doorbell, 50, hasWork), 'timed-out');
    const pusher = runJob<{ pushed: boolean }>(
      { kind: 'push-later', ring: ring.buffer, doorbell: doorbell.buffer, value: 77, delayMs: 300 },
      10_000,
    );
    const reason = await waitForWorkAsync(doorbell, 10_000, hasWork);
    assert.equal(reason, 'rung');
    assert.equal((await pusher).pushed, true);
    assert.equal(ring.pop(), 77);
    assert.equal(doorbell.sleeping, false);
    assert.ok(ticks >= 10, `the event loop ran ${ticks} timer ticks while waiting`);
    ring.push(1);
    assert.equal(await waitForWorkAsync(doorbell, 10_000, hasWork), 'work', 'work already there: no wait');
    assert.equal(doorbell.sleeping, false);
  } finally {
    clearInterval(ticker);
  }
});
