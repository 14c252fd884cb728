// The control thread's WireGuard core (sans-IO): the device identity, every peer's handshake state,
// cookies and timers. It consumes handshake datagrams (types 1–3), counter observations from the
// workers and timer deadlines, and produces datagrams to send (`pollTransmit`) and commands for the
// worker that owns each peer (`pollEvent`). Transport data never passes through here.
// Whitepaper §5.4 (messages), §5.4.7 and §5.3 (cookies under load), §6 (timers).
import {
  HANDSHAKE_INITIATION_RATE_MS,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_COOKIE_REPLY_SIZE,
  MESSAGE_INITIATION,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_RESPONSE,
  MESSAGE_RESPONSE_SIZE,
  REKEY_TIMEOUT_MS,
} from './constants.ts';
import { CookieChecker, CookieGenerator } from './cookie.ts';
import { endpointCookieSource, endpointsIdentical, type Endpoint } from './endpoint.ts';
import { IndexTable } from './indexes.ts';
import type { PresharedKey, PrivateKey, PublicKey } from './keys.ts';
import { keyToHex, parseKeyHex, publicKeyOf, toPublicKey } from './keys.ts';
import { messageType, readU32LE, RESPONSE_SENDER, writeU32LE } from './messages.ts';
import {
  consumeResponse,
  createInitiation,
  createResponse,
  finishInitiation,
  openInitiation,
  peerCrypto,
  type ConsumedInitiation,
  type HandshakeJob,
  type HandshakeJobResult,
  type InitiatorState,
  type LocalIdentity,
  type OpenedInitiation,
  type PeerCrypto,
  type SessionKeys,
} from './noise.ts';
import type { KeypairMaterial } from './session.ts';
import { compareTimestamps, tai64nNow } from './tai64n.ts';
import { MAX_HANDSHAKE_ATTEMPTS, TimerTable, type PeerTimers, type TimerExpiry } from './timers.ts';

/** What the control thread must tell the worker that owns `peer`. */
export type EngineEvent =
  | { readonly kind: 'installKeypair'; readonly peer: number; readonly keypair: KeypairMaterial }
  | { readonly kind: 'sendKeepalive'; readonly peer: number }
  | { readonly kind: 'clearStaged'; readonly peer: number }
  | { readonly kind: 'zeroKeys'; readonly peer: number }
  | { readonly kind: 'endpoint'; readonly peer: number; readonly endpoint: Endpoint }
  | { readonly kind: 'handshakeComplete'; readonly peer: number; readonly wallMs: number };

export interface Transmit {
  readonly to: Endpoint;
  readonly bytes: Uint8Array;
}

/** Why a handshake datagram was dropped; each is counted. */
export type HandshakeDrop =
  | 'malformed'
  | 'noPrivateKey'
  | 'badMac1'
  | 'cookieSent'
  | 'badInitiation'
  | 'replayedInitiation'
  | 'floodedInitiation'
  | 'unknownIndex'
  | 'badResponse'
  | 'badCookieReply'
  /** The private key, the peer or its preshared key changed while the handshake's crypto ran. */
  | 'staleHandshake';

/** Transport counters a worker publishes for a peer (monotonic; the engine diffs them). */
export interface PeerCounters {
  readonly txData: number;
  readonly txAny: number;
  readonly rxData: number;
  readonly rxAny: number;
}

export interface EngineOptions {
  /** Worker shards: a peer's receiver indexes are chosen so that index % shardCount is its shard. */
  readonly shardCount: number;
  /** Float in [0, 1); injected for deterministic tests. */
  readonly random: () => number;
  /** Wall-clock milliseconds since the epoch, for TAI64N timestamps and `wg show`. */
  readonly wallClock: () => number;
  /**
   * Whether an authenticated handshake moves the peer's endpoint to its source (WireGuard's
   * roaming; default true). Off when ICE chooses the path, which may run through a relay.
   */
  readonly roaming?: boolean;
  /**
   * Whether the responder's X25519 work leaves the engine as jobs (`pollHandshakeJob`, answered by
   * `completeHandshakeJob`) for a pool of threads to run, instead of running inline (default false;
   * `setOffloadHandshakeCrypto` changes it).
   */
  readonly offloadHandshakeCrypto?: boolean;
}

/** What the engine remembers about a job it handed out, to finish the handshake when it returns. */
type PendingJob =
  | { readonly kind: 'openInitiation'; readonly identity: LocalIdentity; readonly from: Endpoint }
  | { readonly kind: 'respond'; readonly peer: number; readonly crypto: PeerCrypto; readonly senderIndex: number; readonly from: Endpoint };

interface EnginePeer {
  readonly id: number;
  readonly shard: number;
  /**
   * The public key in hex, which is also its key in peersByKey. The bytes are not kept: a 32-byte
   * array of its own costs about 500 bytes of resident memory (measured), and only handshakes need
   * them, which get them from peerPublicKey once (their crypto and cookies keep them from then on).
   */
  readonly keyHex: string;
  presharedKey: PresharedKey;
  /**
   * Derived on first use (see cryptoOf), undefined until then; null when the key can never
   * handshake. With ten thousand configured peers, most never handshake: deriving up front cost a
   * Curve25519 operation and two small key arrays per peer.
   */
  crypto: PeerCrypto | null | undefined;
  /** Made on first use (see cookiesOf), for the same reason. */
  cookies: CookieGenerator | null;
  readonly timers: PeerTimers;
  endpoint: Endpoint | null;
  pending: { readonly state: InitiatorState; readonly localIndex: number } | null;
  lastInitiationSentAt: number;
  lastTimestamp: Uint8Array | null;
  lastInitiationConsumedAt: number;
  /** Local indexes of the (at most three) sessions a worker may still hold, oldest first. */
  readonly sessionIndexes: number[];
}

/** Which peer a local index belongs to; whether it is the in-flight handshake is `pending`'s business. */
type IndexOwner = { readonly peer: number };

const SESSIONS_KEPT = 3;
const SEEN_TX_DATA = 0;
const SEEN_TX_ANY = 1;
const SEEN_RX_DATA = 2;
const SEEN_RX_ANY = 3;

export class WireGuardEngine {
  private identity: LocalIdentity | null = null;
  private checker: CookieChecker | null = null;
  private readonly peers = new Map<number, EnginePeer>();
  private readonly peersByKey = new Map<string, EnginePeer>();
  private readonly indexes = new IndexTable<IndexOwner>();
  private readonly transmits: Transmit[] = [];
  private readonly events: EngineEvent[] = [];
  readonly drops: Record<HandshakeDrop, number> = {
    malformed: 0,
    noPrivateKey: 0,
    badMac1: 0,
    cookieSent: 0,
    badInitiation: 0,
    replayedInitiation: 0,
    floodedInitiation: 0,
    unknownIndex: 0,
    badResponse: 0,
    badCookieReply: 0,
    staleHandshake: 0,
  };
  private readonly jobs: HandshakeJob[] = [];
  private readonly pendingJobs = new Map<number, PendingJob>();
  private nextJobId = 0;
  private offload: boolean;
  private readonly options: EngineOptions;
  /** Every peer's timers (whitepaper §6), by peer id. */
  private readonly timers: TimerTable;
  /**
   * The transport counters as last observed, four per peer id (SEEN_*): in one array rather than
   * an object per peer, whose floating-point fields V8 would box one by one.
   */
  private seen = new Float64Array(4 * 64);

  constructor(options: EngineOptions) {
    this.options = options;
    this.timers = new TimerTable(options.random);
    this.offload = options.offloadHandshakeCrypto === true;
  }

  /**
   * Hands the responder's crypto out as jobs from now on, or runs it inline again. Jobs already out
   * still complete through completeHandshakeJob either way.
   */
  setOffloadHandshakeCrypto(on: boolean): void {
    this.offload = on;
  }

  // ---- configuration -------------------------------------------------------------------------

  get publicKey(): PublicKey | null {
    return this.identity?.publicKey ?? null;
  }

  /** Sets (or clears, with null) the device's static private key; every session is re-keyed. */
  setPrivateKey(privateKey: PrivateKey | null): void {
    this.identity = privateKey === null ? null : { privateKey, publicKey: publicKeyOf(privateKey) };
    this.checker = this.identity === null ? null : new CookieChecker(this.identity.publicKey);
    for (const peer of this.peers.values()) {
      peer.crypto = undefined;
      this.forgetSessions(peer);
    }
  }

  addPeer(id: number, shard: number, publicKey: PublicKey, presharedKey: PresharedKey): void {
    if (this.peers.has(id)) throw new RangeError(`engine: peer id ${id} already in use`);
    const keyHex = keyToHex(publicKey);
    const peer: EnginePeer = {
      id,
      shard,
      keyHex,
      presharedKey,
      crypto: undefined,
      cookies: null,
      timers: this.timers.forPeer(id),
      endpoint: null,
      pending: null,
      lastInitiationSentAt: Number.NEGATIVE_INFINITY,
      lastTimestamp: null,
      lastInitiationConsumedAt: Number.NEGATIVE_INFINITY,
      sessionIndexes: [],
    };
    if (4 * (id + 1) > this.seen.length) {
      const grown = new Float64Array(Math.max(4 * (id + 1), 2 * this.seen.length));
      grown.set(this.seen);
      this.seen = grown;
    }
    this.seen.fill(0, 4 * id, 4 * (id + 1));
    this.peers.set(id, peer);
    this.peersByKey.set(keyHex, peer);
  }

  /** Forgets a peer's sessions and handshake (its connection failed); its configuration stays. */
  resetPeer(id: number): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    peer.timers.stopAll();
    this.forgetSessions(peer);
  }

  removePeer(id: number): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    this.releaseIndexes(peer);
    peer.timers.stopAll();
    this.peers.delete(id);
    this.peersByKey.delete(peer.keyHex);
  }

  setPresharedKey(id: number, presharedKey: PresharedKey): void {
    const peer = this.requirePeer(id);
    peer.presharedKey = presharedKey;
    peer.crypto = undefined;
  }

  setEndpoint(id: number, endpoint: Endpoint): void {
    this.requirePeer(id).endpoint = endpoint;
  }

  /** A fresh copy of peer `id`'s public key. */
  peerPublicKey(id: number): PublicKey {
    return toPublicKey(parseKeyHex(this.requirePeer(id).keyHex, 'a public key'));
  }

  /** The id of the configured peer with this public key, if any. */
  peerIdOf(publicKey: Uint8Array): number | undefined {
    return this.peersByKey.get(keyToHex(publicKey))?.id;
  }

  endpointOf(id: number): Endpoint | null {
    return this.peers.get(id)?.endpoint ?? null;
  }

  /** wireguard-go sends a keepalive at once when the interval is set on a running device. */
  setPersistentKeepalive(id: number, seconds: number, now: number): void {
    const peer = this.requirePeer(id);
    peer.timers.setPersistentKeepalive(seconds, now);
    if (seconds > 0) this.events.push({ kind: 'sendKeepalive', peer: id });
  }

  // ---- inputs ----------------------------------------------------------------------------------

  /**
   * A handshake-class datagram (types 1–3) from `from`. `underLoad` is the shell's verdict that
   * handshakes are queueing up: initiations and responses then need a valid MAC2, and get a cookie
   * reply otherwise (whitepaper §5.3).
   */
  handleHandshakeDatagram(buf: Uint8Array, len: number, from: Endpoint, now: number, underLoad: boolean): void {
    const type = messageType(buf, len);
    if (type === MESSAGE_INITIATION && len === MESSAGE_INITIATION_SIZE) this.handleInitiation(buf, len, from, now, underLoad);
    else if (type === MESSAGE_RESPONSE && len === MESSAGE_RESPONSE_SIZE) this.handleResponse(buf, len, from, now, underLoad);
    else if (type === MESSAGE_COOKIE_REPLY && len === MESSAGE_COOKIE_REPLY_SIZE) this.handleCookieReply(buf, len, now);
    else this.drops.malformed++;
  }

  /** A worker has packets for `id` but no usable session, or its session wants refreshing. */
  requestHandshake(id: number, now: number): void {
    const peer = this.peers.get(id);
    if (peer !== undefined) this.sendInitiation(peer, now, false);
  }

  /**
   * The responder's session was confirmed by the initiator's first transport packet: for this side
   * that is when the handshake completes (wireguard-go calls timersHandshakeComplete there).
   */
  sessionConfirmed(id: number): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    peer.timers.onHandshakeComplete();
    this.events.push({ kind: 'handshakeComplete', peer: id, wallMs: this.options.wallClock() });
  }

  /**
   * The worker's transport counters for `id`, read from the shared peer table. Returns whether any
   * of them moved since the last observation (the shell observes more often while traffic flows).
   */
  observeCounters(id: number, counters: PeerCounters, now: number): boolean {
    const peer = this.peers.get(id);
    if (peer === undefined) return false;
    const seen = this.seen;
    const at = 4 * id;
    const moved = counters.rxAny !== seen[at + SEEN_RX_ANY] || counters.txAny !== seen[at + SEEN_TX_ANY];
    const timers = peer.timers;
    // Received first, then sent: within one observation interval we cannot know the order, and a
    // send after a receive is what makes a keepalive unnecessary.
    if (counters.rxAny !== seen[at + SEEN_RX_ANY]) {
      timers.onAnyAuthenticatedPacketReceived();
      timers.onAnyAuthenticatedPacketTraversal(now);
    }
    if (counters.rxData !== seen[at + SEEN_RX_DATA]) timers.onDataReceived(now);
    if (counters.txAny !== seen[at + SEEN_TX_ANY]) {
      timers.onAnyAuthenticatedPacketSent();
      timers.onAnyAuthenticatedPacketTraversal(now);
    }
    if (counters.txData !== seen[at + SEEN_TX_DATA]) timers.onDataSent(now);
    // Copied, not kept: the caller may reuse or rebuild its object every tick.
    seen[at + SEEN_TX_DATA] = counters.txData;
    seen[at + SEEN_TX_ANY] = counters.txAny;
    seen[at + SEEN_RX_DATA] = counters.rxData;
    seen[at + SEEN_RX_ANY] = counters.rxAny;
    return moved;
  }

  handleTimeout(now: number): void {
    for (const peer of this.peers.values()) {
      if (peer.timers.nextDeadline() > now) continue;
      for (const expiry of peer.timers.expire(now)) this.onTimerExpired(peer, expiry, now);
    }
  }

  // ---- outputs ---------------------------------------------------------------------------------

  pollTimeout(): number {
    let earliest = Number.POSITIVE_INFINITY;
    for (const peer of this.peers.values()) earliest = Math.min(earliest, peer.timers.nextDeadline());
    return earliest;
  }

  pollTransmit(): Transmit | undefined {
    return this.transmits.shift();
  }

  pollEvent(): EngineEvent | undefined {
    return this.events.shift();
  }

  /** The next crypto job to run (offloadHandshakeCrypto only); its result goes to completeHandshakeJob. */
  pollHandshakeJob(): HandshakeJob | undefined {
    return this.jobs.shift();
  }

  /** Jobs handed out or waiting to be, whose results have not come back: the handshake backlog. */
  get handshakeJobsInFlight(): number {
    return this.pendingJobs.size;
  }

  /**
   * The result of a job from pollHandshakeJob, in any order. Everything that depends on state is
   * decided here, on the engine's thread: which peer, whether the timestamp is new, whether that
   * peer and our key are still the ones the job was computed for.
   */
  completeHandshakeJob(result: HandshakeJobResult, now: number): void {
    const pending = this.pendingJobs.get(result.id);
    if (pending === undefined) return;
    this.pendingJobs.delete(result.id);
    if (result.kind === 'openInitiation' && pending.kind === 'openInitiation') {
      if (pending.identity !== this.identity) {
        this.drops.staleHandshake++;
        return;
      }
      const accepted = this.acceptInitiation(result.opened, pending.from, now);
      if (accepted === null) return;
      const { peer, crypto, consumed } = accepted;
      this.submitJob(
        { kind: 'respond', id: this.nextJobId, consumed, remoteStatic: crypto.remoteStatic, presharedKey: crypto.presharedKey },
        { kind: 'respond', peer: peer.id, crypto, senderIndex: consumed.senderIndex, from: pending.from },
      );
    } else if (result.kind === 'respond' && pending.kind === 'respond') {
      const peer = this.peers.get(pending.peer);
      if (peer === undefined || peer.crypto !== pending.crypto) {
        this.drops.staleHandshake++;
        return;
      }
      this.commitResponse(peer, pending.senderIndex, result.response, result.keys, pending.from, now);
    }
  }

  // ---- internals -------------------------------------------------------------------------------

  private onTimerExpired(peer: EnginePeer, expiry: TimerExpiry, now: number): void {
    switch (expiry) {
      case 'retransmitHandshake':
        if (peer.timers.handshakeAttempts > MAX_HANDSHAKE_ATTEMPTS) {
          // Give up (wireguard-go expiredRetransmitHandshake): drop what waits for this handshake.
          peer.timers.stopSendKeepalive();
          this.events.push({ kind: 'clearStaged', peer: peer.id });
          if (!peer.timers.isZeroKeyMaterialPending()) peer.timers.armZeroKeyMaterial(now);
          this.dropPending(peer);
        } else {
          peer.timers.handshakeAttempts++;
          this.sendInitiation(peer, now, true);
        }
        return;
      case 'newHandshake':
        this.sendInitiation(peer, now, false);
        return;
      case 'sendKeepalive':
      case 'persistentKeepalive':
        this.events.push({ kind: 'sendKeepalive', peer: peer.id });
        return;
      case 'zeroKeyMaterial':
        this.forgetSessions(peer);
        return;
    }
  }

  private sendInitiation(peer: EnginePeer, now: number, isRetry: boolean): void {
    if (!isRetry) {
      // One initiation per REKEY_TIMEOUT unless it is the retransmission timer's own retry.
      if (now - peer.lastInitiationSentAt < REKEY_TIMEOUT_MS) return;
      peer.timers.handshakeAttempts = 0;
    }
    const identity = this.identity;
    const crypto = identity === null ? null : this.cryptoOf(peer);
    if (identity === null || crypto === null) return;
    peer.lastInitiationSentAt = now;
    this.dropPending(peer);
    const localIndex = this.indexes.allocate(peer.shard, this.options.shardCount, { peer: peer.id }, this.randomU32);
    const message = new Uint8Array(MESSAGE_INITIATION_SIZE);
    const timestamp = new Uint8Array(12);
    tai64nNow(this.options.wallClock(), timestamp);
    const state = createInitiation(identity, crypto, localIndex, timestamp, message);
    this.cookiesOf(peer).addMacs(message, MESSAGE_INITIATION_SIZE, now);
    peer.pending = { state, localIndex };
    peer.timers.onAnyAuthenticatedPacketTraversal(now);
    peer.timers.onAnyAuthenticatedPacketSent();
    if (peer.endpoint !== null) this.transmits.push({ to: peer.endpoint, bytes: message });
    peer.timers.onHandshakeInitiated(now);
  }

  private handleInitiation(buf: Uint8Array, len: number, from: Endpoint, now: number, underLoad: boolean): void {
    const identity = this.admit(buf, len, from, now, underLoad);
    if (identity === null) return;
    if (this.offload) {
      this.submitJob({ kind: 'openInitiation', id: this.nextJobId, local: identity, message: buf.slice(0, len) }, { kind: 'openInitiation', identity, from });
      return;
    }
    const accepted = this.acceptInitiation(openInitiation(identity, buf), from, now);
    if (accepted === null) return;
    const response = new Uint8Array(MESSAGE_RESPONSE_SIZE);
    const keys = createResponse(accepted.consumed, accepted.crypto, 0, response);
    this.commitResponse(accepted.peer, accepted.consumed.senderIndex, response, keys, from, now);
  }

  private submitJob(job: HandshakeJob, pending: PendingJob): void {
    // u32 ids (the pool's records carry 32 bits): far more than are ever out at once.
    this.nextJobId = (this.nextJobId + 1) >>> 0;
    this.jobs.push(job);
    this.pendingJobs.set(job.id, pending);
  }

  /**
   * An initiation whose static key has been opened (or null): finds its peer, authenticates the
   * timestamp and applies the replay and flood rules. Returns what the response needs, or null
   * when the initiation was dropped (and counted).
   */
  private acceptInitiation(
    opened: OpenedInitiation | null, from: Endpoint, now: number,
  ): { peer: EnginePeer; crypto: PeerCrypto; consumed: ConsumedInitiation } | null {
    const peer = opened === null ? undefined : this.peersByKey.get(keyToHex(opened.remoteStatic));
    const crypto = peer === undefined ? null : this.cryptoOf(peer);
    const consumed = opened === null || crypto === null ? null : finishInitiation(opened, crypto);
    if (peer === undefined || crypto === null || consumed === null) {
      this.drops.badInitiation++;
      return null;
    }
    // Whitepaper §5.1: a TAI64N timestamp no newer than the last accepted one is a replay.
    if (peer.lastTimestamp !== null && compareTimestamps(consumed.timestamp, peer.lastTimestamp) <= 0) {
      this.drops.replayedInitiation++;
      return null;
    }
    if (now - peer.lastInitiationConsumedAt <= HANDSHAKE_INITIATION_RATE_MS) {
      this.drops.floodedInitiation++;
      return null;
    }
    peer.lastTimestamp = consumed.timestamp.slice();
    peer.lastInitiationConsumedAt = now;
    this.learnEndpoint(peer, from);
    peer.timers.onAnyAuthenticatedPacketTraversal(now);
    peer.timers.onAnyAuthenticatedPacketReceived();
    return { peer, crypto, consumed };
  }

  /** A response built by createResponse (sender index still open): index, macs, session, send. */
  private commitResponse(peer: EnginePeer, remoteIndex: number, response: Uint8Array, keys: SessionKeys, from: Endpoint, now: number): void {
    const localIndex = this.indexes.allocate(peer.shard, this.options.shardCount, { peer: peer.id }, this.randomU32);
    writeU32LE(response, RESPONSE_SENDER, localIndex);
    this.cookiesOf(peer).addMacs(response, MESSAGE_RESPONSE_SIZE, now);
    this.rememberSession(peer, localIndex);
    this.events.push({
      kind: 'installKeypair',
      peer: peer.id,
      keypair: {
        localIndex,
        remoteIndex,
        sendKey: keys.sendKey,
        receiveKey: keys.receiveKey,
        isInitiator: false,
        createdAt: now,
      },
    });
    peer.timers.onSessionDerived(now);
    peer.timers.onAnyAuthenticatedPacketTraversal(now);
    peer.timers.onAnyAuthenticatedPacketSent();
    this.transmits.push({ to: peer.endpoint ?? from, bytes: response });
  }

  private handleResponse(buf: Uint8Array, len: number, from: Endpoint, now: number, underLoad: boolean): void {
    const identity = this.admit(buf, len, from, now, underLoad);
    if (identity === null) return;
    const peer = this.pendingPeerFor(readU32LE(buf, 8));
    const crypto = peer === undefined ? null : this.cryptoOf(peer);
    if (peer === undefined || peer.pending === null || crypto === null) {
      this.drops.unknownIndex++;
      return;
    }
    const result = consumeResponse(peer.pending.state, identity, crypto, buf);
    if (result === null) {
      this.drops.badResponse++;
      return;
    }
    const localIndex = peer.pending.localIndex;
    // The handshake's index lives on as the session's receiver index.
    peer.pending = null;
    this.rememberSession(peer, localIndex);
    this.learnEndpoint(peer, from);
    peer.timers.onAnyAuthenticatedPacketTraversal(now);
    peer.timers.onAnyAuthenticatedPacketReceived();
    peer.timers.onSessionDerived(now);
    peer.timers.onHandshakeComplete();
    this.events.push({
      kind: 'installKeypair',
      peer: peer.id,
      keypair: {
        localIndex,
        remoteIndex: result.senderIndex,
        sendKey: result.keys.sendKey,
        receiveKey: result.keys.receiveKey,
        isInitiator: true,
        createdAt: now,
      },
    });
    this.events.push({ kind: 'handshakeComplete', peer: peer.id, wallMs: this.options.wallClock() });
  }

  /**
   * What initiations and responses must pass before any Curve25519 work (whitepaper §5.3): a
   * private key, a valid mac1 and, under load, a valid mac2 (else a cookie reply goes back).
   * Returns our identity, or null when the message was dropped (and counted) or answered.
   */
  private admit(buf: Uint8Array, len: number, from: Endpoint, now: number, underLoad: boolean): LocalIdentity | null {
    const identity = this.identity;
    const checker = this.checker;
    if (identity === null || checker === null) {
      this.drops.noPrivateKey++;
      return null;
    }
    if (!checker.checkMac1(buf, len)) {
      this.drops.badMac1++;
      return null;
    }
    if (underLoad && !checker.checkMac2(buf, len, endpointCookieSource(from), now)) {
      this.sendCookieReply(checker, buf, len, readU32LE(buf, 4), from, now);
      return null;
    }
    return identity;
  }

  private handleCookieReply(buf: Uint8Array, len: number, now: number): void {
    const peer = this.pendingPeerFor(readU32LE(buf, 4));
    if (peer === undefined) {
      this.drops.unknownIndex++;
      return;
    }
    if (!this.cookiesOf(peer).consumeReply(buf, len, now)) this.drops.badCookieReply++;
  }

  private sendCookieReply(checker: CookieChecker, buf: Uint8Array, len: number, senderIndex: number, to: Endpoint, now: number): void {
    const reply = new Uint8Array(MESSAGE_COOKIE_REPLY_SIZE);
    checker.createReply(buf, len, senderIndex, endpointCookieSource(to), now, reply);
    this.transmits.push({ to, bytes: reply });
    this.drops.cookieSent++;
  }

  /** The peer whose in-flight initiation used `index` as its sender index. */
  private pendingPeerFor(index: number): EnginePeer | undefined {
    const owner = this.indexes.get(index);
    if (owner === undefined) return undefined;
    const peer = this.peers.get(owner.peer);
    return peer?.pending?.localIndex === index ? peer : undefined;
  }

  /** wireguard-go SetEndpointFromPacket: an authenticated handshake moves the peer's endpoint. */
  private learnEndpoint(peer: EnginePeer, from: Endpoint): void {
    if (this.options.roaming === false || endpointsIdentical(peer.endpoint, from)) return;
    peer.endpoint = from;
    this.events.push({ kind: 'endpoint', peer: peer.id, endpoint: from });
  }

  private rememberSession(peer: EnginePeer, localIndex: number): void {
    peer.sessionIndexes.push(localIndex);
    while (peer.sessionIndexes.length > SESSIONS_KEPT) {
      const oldest = peer.sessionIndexes.shift();
      if (oldest !== undefined) this.indexes.delete(oldest);
    }
  }

  private dropPending(peer: EnginePeer): void {
    if (peer.pending === null) return;
    this.indexes.delete(peer.pending.localIndex);
    peer.pending = null;
  }

  private forgetSessions(peer: EnginePeer): void {
    this.releaseIndexes(peer);
    peer.lastInitiationSentAt = Number.NEGATIVE_INFINITY;
    peer.timers.onHandshakeComplete();
    this.events.push({ kind: 'zeroKeys', peer: peer.id });
  }

  private releaseIndexes(peer: EnginePeer): void {
    this.dropPending(peer);
    for (const index of peer.sessionIndexes) this.indexes.delete(index);
    peer.sessionIndexes.length = 0;
  }

  /** The peer's handshake precomputation (whitepaper §5.4.2), derived when first needed. */
  private cryptoOf(peer: EnginePeer): PeerCrypto | null {
    if (peer.crypto === undefined) {
      // Without a private key there is nothing to derive yet; setPrivateKey resets it to undefined.
      if (this.identity === null) return null;
      peer.crypto = this.deriveCrypto(this.identity, this.peerPublicKey(peer.id), peer.presharedKey);
    }
    return peer.crypto;
  }

  private cookiesOf(peer: EnginePeer): CookieGenerator {
    peer.cookies ??= new CookieGenerator(this.peerPublicKey(peer.id));
    return peer.cookies;
  }

  private deriveCrypto(identity: LocalIdentity, publicKey: PublicKey, presharedKey: PresharedKey): PeerCrypto | null {
    try {
      return peerCrypto(identity, publicKey, presharedKey);
    } catch {
      // A public key whose DH with ours is all zeros (a low-order point) can never handshake.
      return null;
    }
  }

  private requirePeer(id: number): EnginePeer {
    const peer = this.peers.get(id);
    if (peer === undefined) throw new RangeError(`engine: no peer with id ${id}`);
    return peer;
  }

  private readonly randomU32 = (): number => Math.floor(this.options.random() * 2 ** 32);
}
