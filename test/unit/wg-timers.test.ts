import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KEEPALIVE_TIMEOUT_MS, REJECT_AFTER_TIME_MS, REKEY_TIMEOUT_MS } from '../../src/wireguard/constants.ts';
import { TimerTable } from '../../src/wireguard/timers.ts';

test('peers of one timer table keep their own deadlines, across growth of the table', () => {
  const table = new TimerTable(() => 0);
  const first = table.forPeer(0);
  first.onHandshakeInitiated(1_000);
  first.setPersistentKeepalive(25, 1_000);
  // Far beyond the initial capacity: the arrays grow, views made before keep working.
  const far = table.forPeer(1_000);
  far.onDataReceived(2_000);
  far.onDataReceived(2_500);
  assert.equal(first.nextDeadline(), 1_000 + REKEY_TIMEOUT_MS);
  assert.equal(first.persistentKeepaliveSeconds, 25);
  assert.equal(far.nextDeadline(), 2_000 + KEEPALIVE_TIMEOUT_MS);
  assert.equal(far.persistentKeepaliveSeconds, 0);
  assert.deepEqual(far.expire(2_000 + KEEPALIVE_TIMEOUT_MS), ['sendKeepalive']);
  // The second data packet asked for one more keepalive after the first.
  assert.equal(far.nextDeadline(), 2_000 + 2 * KEEPALIVE_TIMEOUT_MS);
  assert.deepEqual(first.expire(1_000 + REKEY_TIMEOUT_MS), ['retransmitHandshake']);
  assert.equal(first.nextDeadline(), 1_000 + 25_000);
  first.handshakeAttempts++;
  assert.equal(first.handshakeAttempts, 1);
  assert.equal(far.handshakeAttempts, 0);
});

test('a reused peer id starts with every timer stopped', () => {
  const table = new TimerTable(() => 0.5);
  const old = table.forPeer(3);
  old.onSessionDerived(0);
  old.setPersistentKeepalive(10, 0);
  old.handshakeAttempts = 4;
  assert.equal(old.nextDeadline(), 10_000);
  const reused = table.forPeer(3);
  assert.equal(reused.nextDeadline(), Number.POSITIVE_INFINITY);
  assert.equal(reused.persistentKeepaliveSeconds, 0);
  assert.equal(reused.handshakeAttempts, 0);
  assert.equal(reused.isZeroKeyMaterialPending(), false);
  reused.onSessionDerived(5);
  assert.deepEqual(reused.expire(5 + REJECT_AFTER_TIME_MS * 3), ['zeroKeyMaterial']);
  assert.throws(() => table.forPeer(-1), RangeError);
  assert.throws(() => table.forPeer(1.5), RangeError);
});
