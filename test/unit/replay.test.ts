import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReplayWindow, REJECT_AFTER_MESSAGES_NUMBER } from '../../src/wireguard/replay.ts';
import { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE } from '../../src/wireguard/constants.ts';

/** The obvious filter: remember every counter, accept a new one unless it is too far behind the newest. */
class NaiveReplayWindow {
  readonly #seen = new Set<number>();
  #newest = 0;
  readonly #limit: number;
  constructor(limit: number) {
    this.#limit = limit;
  }
  check(counter: number): boolean {
    if (counter >= this.#limit || this.#seen.has(counter)) return false;
    return counter > this.#newest || this.#newest - counter <= REPLAY_WINDOW_SIZE;
  }
  accept(counter: number): boolean {
    if (!this.check(counter)) return false;
    this.#seen.add(counter);
    this.#newest = Math.max(this.#newest, counter);
    return true;
  }
}

test('in-order counters are all accepted once, and replays of each are refused', () => {
  const window = new ReplayWindow();
  for (let counter = 0; counter < 20_000; counter++) {
    assert.equal(window.check(counter), true, `check ${counter}`);
    assert.equal(window.accept(counter), true, `accept ${counter}`);
    assert.equal(window.check(counter), false, `recheck ${counter}`);
    assert.equal(window.accept(counter), false, `replay ${counter}`);
  }
});

test('counter 0 is accepted once on a fresh window', () => {
  const window = new ReplayWindow();
  assert.equal(window.accept(0), true);
  assert.equal(window.accept(0), false);
});

test('reordering inside the window is accepted; the window edge is exactly REPLAY_WINDOW_SIZE', () => {
  const window = new ReplayWindow();
  const newest = 100_000;
  assert.equal(window.accept(newest), true);
  assert.equal(window.accept(newest - 1), true);
  assert.equal(window.accept(newest - 500), true);
  assert.equal(window.check(newest - REPLAY_WINDOW_SIZE), true);
  assert.equal(window.accept(newest - REPLAY_WINDOW_SIZE), true);
  assert.equal(window.check(newest - REPLAY_WINDOW_SIZE - 1), false, 'one past the edge is too old');
  assert.equal(window.accept(newest - REPLAY_WINDOW_SIZE - 1), false);
  assert.equal(window.accept(newest - 500), false, 'duplicate');
  assert.equal(window.accept(newest - 2), true);
});

test('check never changes state', () => {
  const window = new ReplayWindow();
  for (let i = 0; i < 100; i++) assert.equal(window.check(5), true);
  assert.equal(window.check(1_000_000), true);
  assert.equal(window.accept(3), true, 'checking a far counter did not slide the window');
  assert.equal(window.accept(5), true);
});

test('a big jump clears the whole ring, and only the new window counts', () => {
  const window = new ReplayWindow();
  for (let counter = 0; counter < 9000; counter++) window.accept(counter);
  const far = 2 ** 40 + 17;
  assert.equal(window.accept(far), true);
  assert.equal(window.accept(far), false);
  assert.equal(window.accept(8999), false, 'far behind the new newest');
  // Counters just below the jump map to ring bits set before it: they must read as unseen.
  for (let back = 1; back <= REPLAY_WINDOW_SIZE; back++) assert.equal(window.check(far - back), true, `far - ${back}`);
  assert.equal(window.accept(far - REPLAY_WINDOW_SIZE), true);
});

test('jumps of exactly one ring, and of a window plus a bit, do not leave stale bits', () => {
  for (const jump of [8192, 8191, 8193, REPLAY_WINDOW_SIZE, REPLAY_WINDOW_SIZE + 1, 32, 31, 33]) {
    const window = new ReplayWindow();
    for (let counter = 0; counter < 8192; counter++) window.accept(counter);
    const newest = 8191 + jump;
    assert.equal(window.accept(newest), true);
    for (let counter = Math.max(0, newest - REPLAY_WINDOW_SIZE); counter < newest; counter++) {
      assert.equal(window.check(counter), counter > 8191, `jump ${jump}, counter ${counter}`);
    }
  }
});

test('counters at or above the limit are never accepted', () => {
  const window = new ReplayWindow(1000);
  assert.equal(window.accept(999), true);
  assert.equal(window.check(1000), false);
  assert.equal(window.accept(1000), false);
  assert.equal(window.accept(5000), false);
  assert.equal(window.accept(998), true, 'a refused counter did not slide the window');
});

test('the default limit is REJECT_AFTER_MESSAGES, and unsafe or malformed counters are refused', () => {
  assert.equal(REJECT_AFTER_MESSAGES_NUMBER, Number(REJECT_AFTER_MESSAGES));
  const window = new ReplayWindow();
  assert.equal(window.accept(Number.MAX_SAFE_INTEGER), true);
  for (const bad of [Number.MAX_SAFE_INTEGER + 1, 2 ** 60, -1, 1.5, Number.NaN, Infinity]) {
    assert.equal(window.check(bad), false, String(bad));
    assert.equal(window.accept(bad), false, String(bad));
  }
  assert.throws(() => new ReplayWindow(-1), RangeError);
  assert.throws(() => new ReplayWindow(Number.NaN), RangeError);
});

test('reset forgets everything', () => {
  const window = new ReplayWindow();
  for (let counter = 0; counter < 100; counter++) window.accept(counter * 3);
  window.accept(1_000_000);
  window.reset();
  for (let counter = 0; counter < 100; counter++) assert.equal(window.accept(counter * 3), true);
});

test('random sequences match a Set-based reference (fast-check)', () => {
  // Counters cluster around a moving base so that the sequences mix in-window reordering,
  // duplicates, too-old counters and jumps of every size.
  const step = fc.record({
    jump: fc.oneof(
      fc.integer({ min: -20_000, max: 20_000 }),
      fc.integer({ min: -40, max: 40 }),
      fc.constantFrom(REPLAY_WINDOW_SIZE, -REPLAY_WINDOW_SIZE, REPLAY_WINDOW_SIZE + 1, -REPLAY_WINDOW_SIZE - 1, 8192),
      fc.integer({ min: 0, max: 2 ** 45 }),
    ),
    checkOnly: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(step, { minLength: 1, maxLength: 400, size: 'max' }), fc.integer({ min: 1, max: 2 ** 46 }), (steps, limit) => {
      const fast = new ReplayWindow(limit);
      const naive = new NaiveReplayWindow(limit);
      let base = 0;
      for (const { jump, checkOnly } of steps) {
        const counter = Math.max(0, base + jump);
        if (checkOnly) {
          assert.equal(fast.check(counter), naive.check(counter), `check ${counter}`);
        } else {
          assert.equal(fast.check(counter), naive.check(counter), `check before accept ${counter}`);
          assert.equal(fast.accept(counter), naive.accept(counter), `accept ${counter}`);
          base = counter;
        }
      }
    }),
    { numRuns: 400, interruptAfterTimeLimit: 8000 },
  );
});

test('a long random sequence with reordering matches the reference', () => {
  // Deterministic xorshift so a failure reproduces.
  let state = 0x9e3779b9;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const fast = new ReplayWindow();
  const naive = new NaiveReplayWindow(REJECT_AFTER_MESSAGES_NUMBER);
  let sent = 0;
  for (let i = 0; i < 200_000; i++) {
    const roll = next();
    let counter: number;
    if (roll < 0.6) counter = sent++;
    else if (roll < 0.95) counter = Math.max(0, sent - Math.floor(next() * (REPLAY_WINDOW_SIZE + 200)));
    else counter = sent += Math.floor(next() * 20_000);
    assert.equal(fast.accept(counter), naive.accept(counter), `step ${i}, counter ${counter}`);
  }
});
