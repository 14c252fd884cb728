// The control thread's handshake warm-up (src/wireguard/engine-warmup.ts): two scratch engines
// really complete their handshakes, so the warm-up runs the whole path and not an early exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { warmHandshakePaths } from '../../src/wireguard/engine-warmup.ts';

test('warmHandshakePaths completes every scratch handshake on both sides', () => {
  assert.equal(warmHandshakePaths(1_000, 12), 12);
});
