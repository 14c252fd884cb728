// Keeping a lightly used worker warm: short sleeps only within the window after its last data
// packet, and the command-line value that sets the window.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_KEEP_WARM_MS, KEEP_WARM_TICK_MS, MAX_KEEP_WARM_MS, idleWaitMs } from '../../src/workers/keep-warm.ts';
import { parseKeepWarm, UsageError } from '../../src/main/daemon.ts';

const IDLE_MS = 1_000;

test('a worker ticks while its last data packet is inside the window, and sleeps long after it', () => {
  const last = 50_000;
  assert.equal(idleWaitMs(last, last, 2_000, IDLE_MS), KEEP_WARM_TICK_MS);
  assert.equal(idleWaitMs(last + 1_999, last, 2_000, IDLE_MS), KEEP_WARM_TICK_MS);
  assert.equal(idleWaitMs(last + 2_000, last, 2_000, IDLE_MS), IDLE_MS);
  assert.equal(idleWaitMs(last + 60_000, last, 2_000, IDLE_MS), IDLE_MS);
});

test('a worker that never moved data, or has keep-warm off, never ticks', () => {
  assert.equal(idleWaitMs(10, Number.NEGATIVE_INFINITY, 2_000, IDLE_MS), IDLE_MS);
  assert.equal(idleWaitMs(10, 10, 0, IDLE_MS), IDLE_MS);
});

test('a tick never sleeps longer than the idle wait it replaces', () => {
  assert.equal(idleWaitMs(0, 0, 2_000, 1), 1);
});

test('--keep-warm-ms takes integers from 0 to the maximum, and defaults when absent', () => {
  assert.equal(parseKeepWarm(undefined), DEFAULT_KEEP_WARM_MS);
  assert.equal(parseKeepWarm('0'), 0);
  assert.equal(parseKeepWarm('1500'), 1_500);
  assert.equal(parseKeepWarm(String(MAX_KEEP_WARM_MS)), MAX_KEEP_WARM_MS);
  for (const bad of ['', ' ', '-1', '1.5', 'soon', '1e9', String(MAX_KEEP_WARM_MS + 1)]) {
    assert.throws(() => parseKeepWarm(bad), UsageError, bad);
  }
});
