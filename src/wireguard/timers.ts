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

export class PeerTimers {
  /** Seconds between keepalives while no other authenticated packet flows; 0 = off. */
  persistentKeepaliveSeconds = 0;
  handshakeAttempts = 0;
  private retransmitHandshakeAt = NEVER;
  private sendKeepaliveAt = NEVER;
  private newHandshakeAt = NEVER;
  private zeroKeyMaterialAt = NEVER;
  private persistentKeepaliveAt = NEVER;
  /** A data packet arrived while a keepalive was already due: send one more after it. */
  private needAnotherKeepalive = false;
  private readonly jitter: () => number;

  /** `random` returns a float in [0, 1); injected so tests are deterministic. */
  constructor(random: () => number) {
    this.jitter = () => Math.floor(random() * REKEY_TIMEOUT_JITTER_MAX_MS);
  }

  /** Should be called after an authenticated data packet (not a keepalive) is sent. */
  onDataSent(now: number): void {
    if (this.newHandshakeAt === NEVER) this.newHandshakeAt = now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + this.jitter();
  }

  /** Should be called after an authenticated data packet (not a keepalive) is received. */
  onDataReceived(now: number): void {
    if (this.sendKeepaliveAt === NEVER) this.sendKeepaliveAt = now + KEEPALIVE_TIMEOUT_MS;
    else this.needAnotherKeepalive = true;
  }

  /** Should be called after any authenticated packet (handshake, data or keepalive) is sent. */
  onAnyAuthenticatedPacketSent(): void {
    this.sendKeepaliveAt = NEVER;
  }

  /** Should be called after any authenticated packet (handshake, data or keepalive) is received. */
  onAnyAuthenticatedPacketReceived(): void {
    this.newHandshakeAt = NEVER;
  }

  /** Should be called after any authenticated packet is sent or received. */
  onAnyAuthenticatedPacketTraversal(now: number): void {
    if (this.persistentKeepaliveSeconds > 0) this.persistentKeepaliveAt = now + this.persistentKeepaliveSeconds * 1000;
  }

  /** Should be called after a handshake initiation is sent. */
  onHandshakeInitiated(now: number): void {
    this.retransmitHandshakeAt = now + REKEY_TIMEOUT_MS + this.jitter();
  }

  /** Should be called after a handshake response is received and the session is current. */
  onHandshakeComplete(): void {
    this.retransmitHandshakeAt = NEVER;
    this.handshakeAttempts = 0;
  }

  /** Should be called after a session key is derived (either role). */
  onSessionDerived(now: number): void {
    this.zeroKeyMaterialAt = now + REJECT_AFTER_TIME_MS * 3;
  }

  /** Should be called when the persistent keepalive interval changes. */
  setPersistentKeepalive(seconds: number, now: number): void {
    this.persistentKeepaliveSeconds = seconds;
    this.persistentKeepaliveAt = seconds > 0 ? now + seconds * 1000 : NEVER;
  }

  isRetransmitPending(): boolean {
    return this.retransmitHandshakeAt !== NEVER;
  }

  isZeroKeyMaterialPending(): boolean {
    return this.zeroKeyMaterialAt !== NEVER;
  }

  /** Disarms the keepalive after giving up on a handshake (nothing to keep alive). */
  stopSendKeepalive(): void {
    this.sendKeepaliveAt = NEVER;
  }

  armZeroKeyMaterial(now: number): void {
    this.zeroKeyMaterialAt = now + REJECT_AFTER_TIME_MS * 3;
  }

  /** Stops every timer: the peer is removed or its keys are gone. */
  stopAll(): void {
    this.retransmitHandshakeAt = NEVER;
    this.sendKeepaliveAt = NEVER;
    this.newHandshakeAt = NEVER;
    this.zeroKeyMaterialAt = NEVER;
    this.persistentKeepaliveAt = NEVER;
    this.needAnotherKeepalive = false;
    this.handshakeAttempts = 0;
  }

  /** The earliest armed deadline, or Infinity. */
  nextDeadline(): number {
    return Math.min(
      this.retransmitHandshakeAt,
      this.sendKeepaliveAt,
      this.newHandshakeAt,
      this.zeroKeyMaterialAt,
      this.persistentKeepaliveAt,
    );
  }

  /** Disarms and returns every timer whose deadline is at or before `now`. */
  expire(now: number): TimerExpiry[] {
    const fired: TimerExpiry[] = [];
    if (this.retransmitHandshakeAt <= now) {
      this.retransmitHandshakeAt = NEVER;
      fired.push('retransmitHandshake');
    }
    if (this.sendKeepaliveAt <= now) {
      this.sendKeepaliveAt = NEVER;
      fired.push('sendKeepalive');
      if (this.needAnotherKeepalive) {
        this.needAnotherKeepalive = false;
        this.sendKeepaliveAt = now + KEEPALIVE_TIMEOUT_MS;
      }
    }
    if (this.newHandshakeAt <= now) {
      this.newHandshakeAt = NEVER;
      fired.push('newHandshake');
    }
    if (this.zeroKeyMaterialAt <= now) {
      this.zeroKeyMaterialAt = NEVER;
      fired.push('zeroKeyMaterial');
    }
    if (this.persistentKeepaliveAt <= now) {
      this.persistentKeepaliveAt = NEVER;
      fired.push('persistentKeepalive');
    }
    return fired;
  }
}
