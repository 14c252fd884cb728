// The per-peer WireGuard timers of whitepaper §6 as a sans-IO state machine: events arm and
// disarm deadlines, `expire(now)` reports what fired. Named after wireguard-go's timers.go: each
// `on*` method is "called after" the event in its name; each expiry names the timer that fired.
import {
  KEEPALIVE_TIMEOUT_MS,
  REJECT_AFTER_TIME_MS,
  REKEY_ATTEMPT_TIME_MS,
  REKEY_TIMEOUT_MS,
  REKEY_TIMEOUT_JITTER_MAX_MS,
} from './constants.ts';

export type TimerExpiry =
  | 'retransmitHandshake'
  | 'sendKeepalive'
  | 'newHandshake'
  | 'zeroKeyMaterial'
  | 'persistentKeepalive';

/** Handshake attempts before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT (wireguard-go MaxTimerHandshakes). */
export const MAX_HANDSHAKE_ATTEMPTS = REKEY_ATTEMPT_TIME_MS / REKEY_TIMEOUT_MS;

const NEVER = Number.POSITIVE_INFINITY;

// A peer's deadlines, in order, at `id * DEADLINES` in TimerStore#deadlines.
const RETRANSMIT_HANDSHAKE = 0;
const SEND_KEEPALIVE = 1;
const NEW_HANDSHAKE = 2;
const ZERO_KEY_MATERIAL = 3;
const PERSISTENT_KEEPALIVE = 4;
const DEADLINES = 5;
const INITIAL_CAPACITY = 64;

/** Every peer's timer state in flat arrays indexed by peer id; shared by the table and its views. */
class TimerStore {
  readonly random: () => number;
  deadlines = new Float64Array(INITIAL_CAPACITY * DEADLINES);
  /** Seconds between keepalives while no other authenticated packet flows; 0 = off. */
  keepaliveSeconds = new Int32Array(INITIAL_CAPACITY);
  handshakeAttempts = new Int32Array(INITIAL_CAPACITY);
  /** 1: a data packet arrived while a keepalive was already due, so one more follows it. */
  needAnotherKeepalive = new Uint8Array(INITIAL_CAPACITY);

  constructor(random: () => number) {
    this.random = random;
  }

  get capacity(): number {
    return this.keepaliveSeconds.length;
  }

  grow(capacity: number): void {
    const deadlines = new Float64Array(capacity * DEADLINES);
    deadlines.set(this.deadlines);
    this.deadlines = deadlines;
    this.keepaliveSeconds = grown(this.keepaliveSeconds, new Int32Array(capacity));
    this.handshakeAttempts = grown(this.handshakeAttempts, new Int32Array(capacity));
    this.needAnotherKeepalive = grown(this.needAnotherKeepalive, new Uint8Array(capacity));
  }
}

function grown<T extends Int32Array | Uint8Array>(old: T, bigger: T): T {
  bigger.set(old);
  return bigger;
}

/**
 * The timers of every peer of an engine. Each peer's state is a few numbers in shared typed arrays
 * rather than an object of its own (whose floating-point fields V8 would box one by one): with ten
 * thousand peers that was about 250 bytes a peer. Peer ids are dense (the device hands out the
 * lowest free one), so they index the arrays directly.
 */
export class TimerTable {
  readonly #store: TimerStore;

  /** `random` returns a float in [0, 1); injected so tests are deterministic. */
  constructor(random: () => number) {
    this.#store = new TimerStore(random);
  }

  /** The timers of peer `id`, all stopped (whatever an earlier peer with that id left). */
  forPeer(id: number): PeerTimers {
    if (!Number.isInteger(id) || id < 0 || id > 0x7fff_ffff) throw new RangeError(`timers: bad peer id ${id}`);
    const store = this.#store;
    if (id >= store.capacity) store.grow(Math.max(id + 1, store.capacity * 2));
    const timers = new PeerTimers(store, id);
    timers.stopAll();
    store.keepaliveSeconds[id] = 0;
    return timers;
  }
}

/** One peer's view of its timers in a TimerTable. */
export class PeerTimers {
  readonly #store: TimerStore;
  readonly #id: number;
  readonly #base: number;

  constructor(store: TimerStore, id: number) {
    this.#store = store;
    this.#id = id;
    this.#base = id * DEADLINES;
  }

  /** Seconds between keepalives while no other authenticated packet flows; 0 = off. */
  get persistentKeepaliveSeconds(): number {
    return this.#store.keepaliveSeconds[this.#id];
  }

  get handshakeAttempts(): number {
    return this.#store.handshakeAttempts[this.#id];
  }

  set handshakeAttempts(attempts: number) {
    this.#store.handshakeAttempts[this.#id] = attempts;
  }

  /** Should be called after an authenticated data packet (not a keepalive) is sent. */
  onDataSent(now: number): void {
    const d = this.#store.deadlines;
    const at = this.#base + NEW_HANDSHAKE;
    if (d[at] === NEVER) d[at] = now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + this.#jitter();
  }

  /** Should be called after an authenticated data packet (not a keepalive) is received. */
  onDataReceived(now: number): void {
    const d = this.#store.deadlines;
    const at = this.#base + SEND_KEEPALIVE;
    if (d[at] === NEVER) d[at] = now + KEEPALIVE_TIMEOUT_MS;
    else this.#store.needAnotherKeepalive[this.#id] = 1;
  }

  /** Should be called after any authenticated packet (handshake, data or keepalive) is sent. */
  onAnyAuthenticatedPacketSent(): void {
    this.#store.deadlines[this.#base + SEND_KEEPALIVE] = NEVER;
  }

  /** Should be called after any authenticated packet (handshake, data or keepalive) is received. */
  onAnyAuthenticatedPacketReceived(): void {
    this.#store.deadlines[this.#base + NEW_HANDSHAKE] = NEVER;
  }

  /** Should be called after any authenticated packet is sent or received. */
  onAnyAuthenticatedPacketTraversal(now: number): void {
    const seconds = this.persistentKeepaliveSeconds;
    if (seconds > 0) this.#store.deadlines[this.#base + PERSISTENT_KEEPALIVE] = now + seconds * 1000;
  }

  /** Should be called after a handshake initiation is sent. */
  onHandshakeInitiated(now: number): void {
    this.#store.deadlines[this.#base + RETRANSMIT_HANDSHAKE] = now + REKEY_TIMEOUT_MS + this.#jitter();
  }

  /** Should be called after a handshake response is received and the session is current. */
  onHandshakeComplete(): void {
    this.#store.deadlines[this.#base + RETRANSMIT_HANDSHAKE] = NEVER;
    this.handshakeAttempts = 0;
  }

  /** Should be called after a session key is derived (either role). */
  onSessionDerived(now: number): void {
    this.#store.deadlines[this.#base + ZERO_KEY_MATERIAL] = now + REJECT_AFTER_TIME_MS * 3;
  }

  /** Should be called when the persistent keepalive interval changes. */
  setPersistentKeepalive(seconds: number, now: number): void {
    this.#store.keepaliveSeconds[this.#id] = seconds;
    this.#store.deadlines[this.#base + PERSISTENT_KEEPALIVE] = seconds > 0 ? now + seconds * 1000 : NEVER;
  }

  isRetransmitPending(): boolean {
    return this.#store.deadlines[this.#base + RETRANSMIT_HANDSHAKE] !== NEVER;
  }

  isZeroKeyMaterialPending(): boolean {
    return this.#store.deadlines[this.#base + ZERO_KEY_MATERIAL] !== NEVER;
  }

  /** Disarms the keepalive after giving up on a handshake (nothing to keep alive). */
  stopSendKeepalive(): void {
    this.#store.deadlines[this.#base + SEND_KEEPALIVE] = NEVER;
  }

  armZeroKeyMaterial(now: number): void {
    this.#store.deadlines[this.#base + ZERO_KEY_MATERIAL] = now + REJECT_AFTER_TIME_MS * 3;
  }

  /** Stops every timer: the peer is removed or its keys are gone. */
  stopAll(): void {
    this.#store.deadlines.fill(NEVER, this.#base, this.#base + DEADLINES);
    this.#store.needAnotherKeepalive[this.#id] = 0;
    this.handshakeAttempts = 0;
  }

  /** The earliest armed deadline, or Infinity. */
  nextDeadline(): number {
    const d = this.#store.deadlines;
    const b = this.#base;
    return Math.min(d[b], d[b + 1], d[b + 2], d[b + 3], d[b + 4]);
  }

  /** Disarms and returns every timer whose deadline is at or before `now`. */
  expire(now: number): TimerExpiry[] {
    const d = this.#store.deadlines;
    const b = this.#base;
    const fired: TimerExpiry[] = [];
    if (d[b + RETRANSMIT_HANDSHAKE] <= now) {
      d[b + RETRANSMIT_HANDSHAKE] = NEVER;
      fired.push('retransmitHandshake');
    }
    if (d[b + SEND_KEEPALIVE] <= now) {
      d[b + SEND_KEEPALIVE] = NEVER;
      fired.push('sendKeepalive');
      if (this.#store.needAnotherKeepalive[this.#id] === 1) {
        this.#store.needAnotherKeepalive[this.#id] = 0;
        d[b + SEND_KEEPALIVE] = now + KEEPALIVE_TIMEOUT_MS;
      }
    }
    if (d[b + NEW_HANDSHAKE] <= now) {
      d[b + NEW_HANDSHAKE] = NEVER;
      fired.push('newHandshake');
    }
    if (d[b + ZERO_KEY_MATERIAL] <= now) {
      d[b + ZERO_KEY_MATERIAL] = NEVER;
      fired.push('zeroKeyMaterial');
    }
    if (d[b + PERSISTENT_KEEPALIVE] <= now) {
      d[b + PERSISTENT_KEEPALIVE] = NEVER;
      fired.push('persistentKeepalive');
    }
    return fired;
  }

  #jitter(): number {
    return Math.floor(this.#store.random() * REKEY_TIMEOUT_JITTER_MAX_MS);
  }
}
