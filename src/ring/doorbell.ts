// A consumer's doorbell (layout.ts, "Doorbell"): how a consumer thread sleeps when its rings are
// empty and how producers wake it, at no cost to producers while the consumer is busy.
//
// The protocol (a Dekker-style handshake over sequentially consistent Atomics):
//   consumer: sleeping := 1; look at the rings once more; if still empty, Atomics.wait(counter, c)
//             where c was read after raising `sleeping`; sleeping := 0.
//   producer: publish into a ring; if sleeping = 1 then counter += 1 and Atomics.notify.
// Either the consumer's second look sees the producer's publication, or the producer's load sees
// `sleeping` = 1 and bumps the counter after the consumer read it, in which case Atomics.wait
// returns at once (value changed) or is woken by the notify. No wake-up is lost, and a consumer that
// never sleeps costs its producers one shared load per ring() and no syscall.
//
// A producer rings once per batch it publishes, not once per entry.

import { DOORBELL_COUNTER_WORD, DOORBELL_EVENT_FD_WORD, DOORBELL_SIZE, DOORBELL_SLEEPING_WORD } from './layout.ts';
import { pollReadable, signalEventFd } from '../io/libc.ts';

/** `sleeping` values: awake, waiting on the counter (Atomics.wait), waiting in poll(2). */
const SLEEPING_ON_COUNTER = 1;
const SLEEPING_IN_POLL = 2;

/** How a wait ended: work was seen without sleeping, a producer rang, or the timeout passed. */
export type WakeReason = 'work' | 'rung' | 'timed-out';

/**
 * How long a consumer keeps looking before it sleeps. Waking a sleeper costs the producer a futex
 * syscall and the consumer tens of µs of wake-up latency, so a consumer that sleeps between two
 * batches of a steady stream ends up ping-ponging through the kernel; a short spin bridges the gap
 * between batches. Bounded, so an idle consumer still goes to sleep at once in human terms.
 */
export const DEFAULT_SPIN_MICROS = 20;

const SPIN_LOOKS_PER_CLOCK_READ = 16;

export class Doorbell {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;

  /** Views over an existing doorbell buffer (possibly created in another thread). */
  constructor(buffer: SharedArrayBuffer) {
    if (buffer.byteLength !== DOORBELL_SIZE) {
      throw new RangeError(`doorbell: a buffer of ${buffer.byteLength} bytes is not a doorbell`);
    }
    this.buffer = buffer;
    this.#words = new Int32Array(buffer);
  }

  static create(): Doorbell {
    return new Doorbell(new SharedArrayBuffer(DOORBELL_SIZE));
  }

  /** Producer, after publishing into one of the consumer's rings: wake the consumer if it sleeps. */
  ring(): void {
    const sleeping = Atomics.load(this.#words, DOORBELL_SLEEPING_WORD);
    if (sleeping === 0) return;
    Atomics.add(this.#words, DOORBELL_COUNTER_WORD, 1);
    if (sleeping === SLEEPING_IN_POLL) signalEventFd(Atomics.load(this.#words, DOORBELL_EVENT_FD_WORD));
    else Atomics.notify(this.#words, DOORBELL_COUNTER_WORD, 1);
  }

  /** Consumer only, once: the eventfd producers write while it waits in poll(2). */
  useEventFd(fd: number): void {
    Atomics.store(this.#words, DOORBELL_EVENT_FD_WORD, fd);
  }

  /** How many times a producer found the consumer asleep and rang (wraps at 2^32). */
  get rings(): number {
    return Atomics.load(this.#words, DOORBELL_COUNTER_WORD);
  }

  /** True while the consumer has announced that it is (about to be) waiting. */
  get sleeping(): boolean {
    return Atomics.load(this.#words, DOORBELL_SLEEPING_WORD) !== 0;
  }

  /**
   * Consumer only: raise `sleeping` and return the counter to wait on. The caller must look at its
   * rings once more after this and call `wake()` if it finds work instead of waiting.
   */
  announceSleep(inPoll = false): number {
    Atomics.store(this.#words, DOORBELL_SLEEPING_WORD, inPoll ? SLEEPING_IN_POLL : SLEEPING_ON_COUNTER);
    return Atomics.load(this.#words, DOORBELL_COUNTER_WORD);
  }

  /** Consumer only: lower `sleeping` (it runs again; producers stop notifying). */
  wake(): void {
    Atomics.store(this.#words, DOORBELL_SLEEPING_WORD, 0);
  }

  /** The counter view, for Atomics.wait/waitAsync by the waiting helpers below. */
  get counterView(): Int32Array {
    return this.#words;
  }
}

/** Looks at the rings for up to `spinMicros`; true as soon as `hasWork` says they hold an entry. */
function spinForWork(hasWork: () => boolean, spinMicros: number): boolean {
  if (spinMicros <= 0) return false;
  const spinUntil = performance.now() + spinMicros / 1000;
  do {
    // Several cheap looks per clock read: performance.now() costs more than a look at a ring.
    for (let i = 0; i < SPIN_LOOKS_PER_CLOCK_READ; i++) if (hasWork()) return true;
  } while (performance.now() < spinUntil);
  return false;
}

/**
 * Consumer thread (a Worker: Atomics.wait blocks the calling thread). Call when a drain of every
 * ring found nothing. Polls `hasWork` for up to `spinMicros`, then sleeps until a producer rings or
 * `timeoutMs` passes. `hasWork` must report whether any of the consumer's rings holds an entry
 * (e.g. `() => !a.isEmpty() || !b.isEmpty()`, built once, not per call).
 */
export function waitForWork(
  doorbell: Doorbell,
  timeoutMs: number,
  hasWork: () => boolean,
  spinMicros: number = DEFAULT_SPIN_MICROS,
): WakeReason {
  if (spinForWork(hasWork, spinMicros)) return 'work';
  const seen = doorbell.announceSleep();
  if (hasWork()) {
    doorbell.wake();
    return 'work';
  }
  const result = Atomics.wait(doorbell.counterView, DOORBELL_COUNTER_WORD, seen, timeoutMs);
  doorbell.wake();
  return result === 'timed-out' ? 'timed-out' : 'rung';
}

/** waitForWorkOrReadable's result when no descriptor is ready but the rings hold work. */
export const RINGS_READY = 4;

/**
 * waitForWork for a consumer that also reads descriptors of its own (`fd` and `alsoFd`, -1 for
 * none): after the spin it sleeps in poll(2) on them and the doorbell's eventfd (set with
 * `useEventFd`), so a datagram, a packet or a producer's ring wakes it. The same Dekker handshake
 * as above, with the eventfd in place of the futex; an eventfd write that lands after the consumer
 * woke only makes its next poll return early. Returns what is ready, as bits: READABLE_FD and
 * READABLE_ALSO_FD (libc.ts) for the descriptors; when neither is, RINGS_READY if the rings hold
 * work (a caller woken by a descriptor looks at its rings anyway, so they are not looked at twice);
 * 0 when the timeout passed (also after a ring that brought no work, e.g. a wake-up to poll a
 * rebound socket).
 */
export function waitForWorkOrReadable(
  doorbell: Doorbell,
  eventFd: number,
  fd: number,
  alsoFd: number,
  timeoutMs: number,
  hasWork: () => boolean,
  spinMicros: number = DEFAULT_SPIN_MICROS,
): number {
  if (spinForWork(hasWork, spinMicros)) return RINGS_READY;
  doorbell.announceSleep(true);
  if (hasWork()) {
    doorbell.wake();
    return RINGS_READY;
  }
  const readable = pollReadable(fd, timeoutMs, eventFd, alsoFd);
  doorbell.wake();
  if (readable !== 0) return readable;
  // poll(2) does not tell a timeout from an eventfd write that raced it: the rings decide.
  return hasWork() ? RINGS_READY : 0;
}

/**
 * The same without blocking, for the control (main) thread, which must never block: it does not
 * spin and resolves when a producer rings or `timeoutMs` passes. At most one wait per doorbell may
 * be pending. A pending Atomics.waitAsync does not keep Node's event loop alive by itself.
 */
export async function waitForWorkAsync(
  doorbell: Doorbell,
  timeoutMs: number,
  hasWork: () => boolean,
): Promise<WakeReason> {
  const seen = doorbell.announceSleep();
  if (hasWork()) {
    doorbell.wake();
    return 'work';
  }
  const waiting = Atomics.waitAsync(doorbell.counterView, DOORBELL_COUNTER_WORD, seen, timeoutMs);
  const result = waiting.async ? await waiting.value : waiting.value;
  doorbell.wake();
  return result === 'timed-out' ? 'timed-out' : 'rung';
}
