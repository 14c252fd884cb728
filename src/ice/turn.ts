// A sans-IO TURN client (RFC 8656) for one relay server, speaking over a UDP socket the caller owns
// (the same socket WireGuard uses: the caller routes every datagram from the server's address here).
//
// Contract (the poll style of Firezone's connlib): `allocate(now)`, `createPermission(peer, now)`,
// `bindChannel(peer, now)` and `close(now)` queue requests; `handleInput(bytes, from, now)` takes
// what the server sent; `handleTimeout(now)` retransmits and refreshes; `pollTransmit()` yields
// datagrams for the server, `pollEvent()` what happened, `pollTimeout()` when to call again.
// Time is always a parameter (milliseconds on any monotonic clock); the client never touches a
// socket or a clock. Messages go through the STUN layer in ./stun.ts (werift-ice's codec underneath).
//
// Data path: `encapsulate(peer, payload)` wraps a datagram for a peer (ChannelData once a channel
// is bound, RFC 8656 §12; a Send indication while only the permission exists, §10), and
// `decapsulate(bytes)` unwraps ChannelData or a Data indication from the server. Malformed input
// never throws: it is counted in `drops` and ignored.
import { createHmac, randomBytes } from 'node:crypto';
import { addressKey, canonicalTransportAddress, sameTransportAddress, type TransportAddress } from './address.ts';
import {
  StunAttribute, StunMessageBuilder, StunMethod, getAttribute, getErrorCode, getString, getUint32, getXorAddress,
  longTermKey, parseStun, transactionIdFromBytes, verifyIntegrity, type StunMessage, type TransactionId,
} from './stun.ts';

// ---------------------------------------------------------------------------------------------
// Credentials

/** Long-term credentials (RFC 8489 §9.2). */
export type TurnCredentials = { readonly username: string; readonly password: string };

/**
 * Time-limited credentials of the "TURN REST API" scheme coturn implements as `use-auth-secret`:
 * the username is `expiry:user` (expiry in Unix seconds) and the password is
 * base64(HMAC-SHA1(secret, username)); the server recomputes it from its shared secret.
 */
export function turnRestCredentials(secret: string, user: string, expiresAtUnixS: number): TurnCredentials {
  if (!Number.isInteger(expiresAtUnixS) || expiresAtUnixS <= 0) {
    throw new RangeError(`turn: REST credential expiry must be a positive integer of Unix seconds, got ${expiresAtUnixS}`);
  }
  if (user.includes(':')) throw new RangeError('turn: REST credential user must not contain ":"');
  const username = user === '' ? String(expiresAtUnixS) : `${expiresAtUnixS}:${user}`;
  return { username, password: createHmac('sha1', secret).update(username).digest('base64') };
}

// ---------------------------------------------------------------------------------------------
// Protocol constants

/** RFC 8656 §18: the TURN port over UDP and TCP. */
export const TURN_DEFAULT_PORT = 3478;
/** RFC 8656 §12: channel numbers a client may bind (0x5000–0x7FFF are reserved since RFC 8656). */
export const CHANNEL_NUMBER_MIN = 0x4000;
export const CHANNEL_NUMBER_MAX = 0x4fff;
/** RFC 8656 §12.4: channel number (2 bytes) and length (2 bytes) before the application data. */
export const CHANNEL_DATA_HEADER_BYTES = 4;
/** RFC 8656 §14.7: REQUESTED-TRANSPORT carries the IP protocol number in its first byte; 17 is UDP. */
const UDP_PROTOCOL = 17;
/** Lifetime we ask for (Firezone uses the RFC's default of 10 minutes, RFC 8656 §7.2). */
const REQUESTED_LIFETIME_S = 600;
/** RFC 8656 §9: a permission lasts 300 s; refresh it a minute early so it never lapses. */
const PERMISSION_REFRESH_MS = 240_000;
/** RFC 8656 §12: a binding lasts 600 s; re-bind after 5 minutes, as Firezone does. */
const CHANNEL_REBIND_MS = 300_000;
/** Refresh the allocation this long before it would expire (or at half its lifetime if shorter). */
const ALLOCATION_REFRESH_MARGIN_MS = 60_000;
/** 438 Stale Nonce answers in a row before we stop believing the server (RFC 8489 §9.2.5). */
const MAX_STALE_NONCE_RETRIES = 3;

const ERROR_UNAUTHORIZED = 401;
const ERROR_ALLOCATION_MISMATCH = 437;
const ERROR_STALE_NONCE = 438;

// ---------------------------------------------------------------------------------------------
// Public types

export type TurnFailureReason =
  /** The server refused our credentials (401 after we had answered its challenge). */
  | 'unauthorized'
  /** No answer within the retransmission schedule. */
  | 'timeout'
  /** Any other error response (the detail names the code and reason phrase). */
  | 'rejected'
  /** A success response without the attributes it must carry. */
  | 'malformed';

export type TurnEvent =
  | { readonly kind: 'allocated'; readonly relayedAddress: TransportAddress; readonly mappedAddress: TransportAddress | null; readonly lifetimeS: number }
  /** The allocation could not be made, or (after `allocated`) could not be refreshed: it is gone. */
  | { readonly kind: 'allocationFailed'; readonly reason: TurnFailureReason; readonly code: number | null; readonly detail: string }
  | { readonly kind: 'permissionCreated'; readonly peer: TransportAddress }
  | { readonly kind: 'permissionFailed'; readonly peer: TransportAddress; readonly reason: TurnFailureReason; readonly detail: string }
  | { readonly kind: 'channelBound'; readonly peer: TransportAddress; readonly channel: number }
  | { readonly kind: 'channelBindFailed'; readonly peer: TransportAddress; readonly reason: TurnFailureReason; readonly detail: string }
  /** Relayed data that `handleInput` received (ChannelData or a Data indication); `bytes` is a copy. */
  | { readonly kind: 'data'; readonly peer: TransportAddress; readonly bytes: Uint8Array }
  /** `close()` finished: the server confirmed (or we gave up waiting); nothing more will be sent. */
  | { readonly kind: 'deallocated'; readonly confirmed: boolean };

export type TurnTransmit = { readonly to: TransportAddress; readonly bytes: Uint8Array };

export type TurnDecapsulated = { readonly peer: TransportAddress; readonly payload: Uint8Array };

export type TurnState = 'idle' | 'allocating' | 'allocated' | 'closing' | 'closed' | 'failed';

/** Datagrams from the server that were ignored, by cause. */
export type TurnDropCounters = {
  /** Neither a STUN message nor ChannelData, or truncated/garbled. */
  malformed: number;
  /** A response to no transaction of ours (late retransmission answers included). */
  unknownTransaction: number;
  /** A success response whose MESSAGE-INTEGRITY did not verify. */
  badIntegrity: number;
  /** ChannelData on a channel we have not bound, or a Data indication without a peer/data. */
  unknownChannel: number;
  /** Sent from an address other than the server's. */
  wrongSource: number;
};

export type TurnRetransmitOptions = {
  /** First retransmission after this long (Firezone: 1 s). */
  readonly initialRtoMs?: number;
  /** Doubling stops here (Firezone: 8 s). */
  readonly maxRtoMs?: number;
  /** Transmissions of one request before it times out (default 4: sent at 0, 1, 3, 7 s; fails at 15 s). */
  readonly maxTransmissions?: number;
};

export type TurnClientOptions = TurnRetransmitOptions & {
  readonly server: TransportAddress;
  readonly credentials: TurnCredentials;
  /** SOFTWARE attribute (RFC 8489 §14.14); omitted when undefined. */
  readonly software?: string;
};

// ---------------------------------------------------------------------------------------------
// Internal state

type RequestKind = 'allocate' | 'refresh' | 'deallocate' | 'permission' | 'channelBind';

type Transaction = {
  readonly kind: RequestKind;
  readonly peer: PeerState | null;
  readonly bytes: Uint8Array;
  /** Whether it carried MESSAGE-INTEGRITY (so a 401 means wrong credentials, not a challenge). */
  readonly authenticated: boolean;
  /** 438 answers already followed for this request's lineage. */
  readonly staleRetries: number;
  transmissions: number;
  rtoMs: number;
  nextSendAt: number;
};

type PeerState = {
  readonly peer: TransportAddress;
  permissionRequested: boolean;
  permissionConfirmed: boolean;
  permissionRefreshAt: number;
  permissionPending: boolean;
  /** 0 when no channel was asked for. */
  channel: number;
  channelConfirmed: boolean;
  channelRebindAt: number;
  channelPending: boolean;
};

type Auth = { readonly realm: string; nonce: Uint8Array; readonly key: Uint8Array };

const NEVER = Number.POSITIVE_INFINITY;

/** Writes the ChannelData header (RFC 8656 §12.4) for `length` bytes of data at `offset`. */
export function writeChannelDataHeader(out: Uint8Array, offset: number, channel: number, length: number): void {
  if (channel < CHANNEL_NUMBER_MIN || channel > CHANNEL_NUMBER_MAX) throw new RangeError(`turn: channel ${channel} out of range`);
  if (!Number.isInteger(length) || length < 0 || length > 0xffff) throw new RangeError(`turn: ChannelData length ${length} out of range`);
  if (offset < 0 || offset + CHANNEL_DATA_HEADER_BYTES > out.length) throw new RangeError('turn: no room for the ChannelData header');
  out[offset] = channel >>> 8;
  out[offset + 1] = channel & 0xff;
  out[offset + 2] = length >>> 8;
  out[offset + 3] = length & 0xff;
}

/** RFC 7983 §7 / RFC 8656 §12: ChannelData starts with a byte in 64–79 (channel 0x4000–0x4FFF). */
export function isChannelData(bytes: Uint8Array): boolean {
  return bytes.length >= CHANNEL_DATA_HEADER_BYTES && (bytes[0] ?? 0) >= 0x40 && (bytes[0] ?? 0) <= 0x4f;
}

// ---------------------------------------------------------------------------------------------
// The client

export class TurnClient {
  readonly server: TransportAddress;
  readonly drops: TurnDropCounters = { malformed: 0, unknownTransaction: 0, badIntegrity: 0, unknownChannel: 0, wrongSource: 0 };
  #credentials: TurnCredentials;
  #software: string | undefined;
  #initialRtoMs: number;
  #maxRtoMs: number;
  #maxTransmissions: number;

  #state: TurnState = 'idle';
  #auth: Auth | null = null;
  #relayedAddress: TransportAddress | null = null;
  #mappedAddress: TransportAddress | null = null;
  #refreshAt = NEVER;
  #allocationMismatchRetried = false;

  #transactions = new Map<string, Transaction>();
  #transmits: TurnTransmit[] = [];
  #events: TurnEvent[] = [];
  #peers = new Map<string, PeerState>();
  /** Index: channel number − CHANNEL_NUMBER_MIN → peer. */
  #channels: (PeerState | undefined)[] = [];
  #nextChannel = CHANNEL_NUMBER_MIN;

  constructor(options: TurnClientOptions) {
    this.server = canonicalOrThrow(options.server);
    this.#credentials = options.credentials;
    this.#software = options.software;
    this.#initialRtoMs = options.initialRtoMs ?? 1000;
    this.#maxRtoMs = options.maxRtoMs ?? 8000;
    this.#maxTransmissions = options.maxTransmissions ?? 4;
    if (!(this.#initialRtoMs > 0) || !(this.#maxRtoMs >= this.#initialRtoMs) || !Number.isInteger(this.#maxTransmissions) || this.#maxTransmissions < 1) {
      throw new RangeError('turn: retransmission options must satisfy 0 < initialRtoMs ≤ maxRtoMs and maxTransmissions ≥ 1');
    }
  }

  get state(): TurnState {
    return this.#state;
  }

  get relayedAddress(): TransportAddress | null {
    return this.#relayedAddress;
  }

  get mappedAddress(): TransportAddress | null {
    return this.#mappedAddress;
  }

  /** Starts the allocation (RFC 8656 §7.1): first without credentials, to learn realm and nonce. */
  allocate(now: number): void {
    if (this.#state !== 'idle') throw new Error(`turn: allocate() in state ${this.#state}`);
    this.#state = 'allocating';
    this.#sendAllocate(now, 0);
  }

  /**
   * Asks for a permission for `peer` (RFC 8656 §9), kept refreshed until the client closes. Queued
   * until the allocation exists. Only the IP matters to the server; the port is kept for `encapsulate`.
   */
  createPermission(peer: TransportAddress, now: number): void {
    const state = this.#peerState(peer);
    if (state.permissionRequested) return;
    state.permissionRequested = true;
    if (this.#state === 'allocated') this.#sendPermission(state, now);
  }

  /**
   * Binds a channel to `peer` (RFC 8656 §11), which also installs its permission; re-bound every
   * 5 minutes. Returns the channel number (usable by `encapsulate` once `channelBound` is reported).
   */
  bindChannel(peer: TransportAddress, now: number): number {
    const state = this.#peerState(peer);
    state.permissionRequested = true;
    if (state.channel === 0) {
      if (this.#nextChannel > CHANNEL_NUMBER_MAX) throw new RangeError('turn: all 4096 channel numbers are in use');
      state.channel = this.#nextChannel++;
      this.#channels[state.channel - CHANNEL_NUMBER_MIN] = state;
      if (this.#state === 'allocated') this.#sendChannelBind(state, now);
    }
    return state.channel;
  }

  /** The channel bound (and confirmed) for `peer`, or null. */
  channelOf(peer: TransportAddress): number | null {
    const state = this.#peers.get(addressKey(peer));
    return state !== undefined && state.channelConfirmed ? state.channel : null;
  }

  /**
   * Deallocates (RFC 8656 §8: Refresh with LIFETIME 0); `deallocated` follows. Idempotent; a client
   * that never got an allocation closes at once.
   */
  close(now: number): void {
    if (this.#state === 'closing' || this.#state === 'closed') return;
    const hadAllocation = this.#state === 'allocated';
    this.#transactions.clear();
    this.#refreshAt = NEVER;
    this.#forgetPeers();
    if (!hadAllocation || this.#auth === null) {
      this.#state = 'closed';
      this.#events.push({ kind: 'deallocated', confirmed: false });
      return;
    }
    this.#state = 'closing';
    this.#sendRefresh(now, 0, 'deallocate', 0);
  }

  /**
   * Takes one datagram that came from the server. Returns false when it was not from the server
   * (counted); everything else is consumed, and what cannot be used is counted in `drops`.
   */
  handleInput(bytes: Uint8Array, from: TransportAddress, now: number): boolean {
    if (!this.#fromServer(from)) {
      this.drops.wrongSource++;
      return false;
    }
    if (isChannelData(bytes)) {
      const unwrapped = this.#unwrapChannelData(bytes);
      if (unwrapped !== null) this.#events.push({ kind: 'data', peer: unwrapped.peer, bytes: Uint8Array.from(unwrapped.payload) });
      return true;
    }
    const message = parseStun(bytes);
    if (message === null) {
      this.drops.malformed++;
      return true;
    }
    if (message.messageClass === 'indication') {
      const data = this.#dataIndication(message);
      if (data !== null) this.#events.push({ kind: 'data', peer: data.peer, bytes: Uint8Array.from(data.payload) });
      return true;
    }
    if (message.messageClass === 'request') {
      this.drops.malformed++;
      return true;
    }
    const id = message.transactionId;
    const transaction = this.#transactions.get(id);
    if (transaction === undefined || message.method !== methodOf(transaction.kind)) {
      this.drops.unknownTransaction++;
      return true;
    }
    if (message.messageClass === 'success') {
      // RFC 8489 §9.2.5: a success response to an authenticated request must verify.
      if (transaction.authenticated && (this.#auth === null || !verifyIntegrity(message, this.#auth.key))) {
        this.drops.badIntegrity++;
        return true;
      }
      this.#transactions.delete(id);
      this.#onSuccess(transaction, message, now);
    } else {
      this.#transactions.delete(id);
      this.#onError(transaction, message, now);
    }
    return true;
  }

  /** Retransmits what is due, fails what ran out of transmissions, refreshes what is about to lapse. */
  handleTimeout(now: number): void {
    for (const [id, transaction] of this.#transactions) {
      if (transaction.nextSendAt > now) continue;
      if (transaction.transmissions >= this.#maxTransmissions) {
        this.#transactions.delete(id);
        this.#onTimeout(transaction);
        continue;
      }
      transaction.transmissions++;
      transaction.rtoMs = Math.min(transaction.rtoMs * 2, this.#maxRtoMs);
      transaction.nextSendAt = now + transaction.rtoMs;
      this.#transmits.push({ to: this.server, bytes: transaction.bytes });
    }
    if (this.#state !== 'allocated') return;
    if (this.#refreshAt <= now) {
      this.#refreshAt = NEVER;
      this.#sendRefresh(now, REQUESTED_LIFETIME_S, 'refresh', 0);
    }
    for (const peer of this.#peers.values()) {
      if (peer.permissionConfirmed && !peer.permissionPending && peer.permissionRefreshAt <= now) this.#sendPermission(peer, now);
      if (peer.channelConfirmed && !peer.channelPending && peer.channelRebindAt <= now) this.#sendChannelBind(peer, now);
    }
  }

  /** The next time `handleTimeout` has work, or null when nothing is scheduled. */
  pollTimeout(): number | null {
    let next = NEVER;
    for (const transaction of this.#transactions.values()) next = Math.min(next, transaction.nextSendAt);
    if (this.#state === 'allocated') {
      next = Math.min(next, this.#refreshAt);
      for (const peer of this.#peers.values()) {
        if (peer.permissionConfirmed && !peer.permissionPending) next = Math.min(next, peer.permissionRefreshAt);
        if (peer.channelConfirmed && !peer.channelPending) next = Math.min(next, peer.channelRebindAt);
      }
    }
    return next === NEVER ? null : next;
  }

  pollTransmit(): TurnTransmit | null {
    return this.#transmits.shift() ?? null;
  }

  pollEvent(): TurnEvent | null {
    return this.#events.shift() ?? null;
  }

  /**
   * Wraps `payload` for `peer`: ChannelData once its channel is confirmed, else a Send indication
   * (RFC 8656 §10) once its permission is; null when neither exists yet. Send to `server`.
   */
  encapsulate(peer: TransportAddress, payload: Uint8Array): Uint8Array | null {
    if (this.#state !== 'allocated') return null;
    const state = this.#peers.get(addressKey(peer));
    if (state === undefined) return null;
    if (state.channelConfirmed) {
      const out = new Uint8Array(CHANNEL_DATA_HEADER_BYTES + payload.length);
      writeChannelDataHeader(out, 0, state.channel, payload.length);
      out.set(payload, CHANNEL_DATA_HEADER_BYTES);
      return out;
    }
    if (!state.permissionConfirmed) return null;
    return new StunMessageBuilder(StunMethod.send, 'indication', newTransactionId())
      .xorPeerAddress(state.peer).data(payload).encode();
  }

  /**
   * Unwraps ChannelData or a Data indication (RFC 8656 §10.4, §12.6) from the server. Returns null
   * for anything else: counted when malformed, silently for a STUN response (that goes to
   * handleInput). `payload` is a view into `bytes` (copy it to keep it).
   */
  decapsulate(bytes: Uint8Array): TurnDecapsulated | null {
    if (isChannelData(bytes)) return this.#unwrapChannelData(bytes);
    const message = parseStun(bytes);
    if (message === null) {
      this.drops.malformed++;
      return null;
    }
    // A response is not data: the caller hands it to handleInput instead; nothing to count.
    return message.messageClass === 'indication' ? this.#dataIndication(message) : null;
  }

  // -------------------------------------------------------------------------------------------

  #fromServer(from: TransportAddress): boolean {
    if (sameTransportAddress(from, this.server)) return true;
    // A dual-stack socket (node:dgram's udp6) reports IPv4 sources v4-mapped: fold them back.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(from.address)?.[1];
    return mapped !== undefined && this.server.family === 4 && from.port === this.server.port && mapped === this.server.address;
  }

  #unwrapChannelData(bytes: Uint8Array): TurnDecapsulated | null {
    const channel = ((bytes[0] ?? 0) << 8) | (bytes[1] ?? 0);
    const length = ((bytes[2] ?? 0) << 8) | (bytes[3] ?? 0);
    if (CHANNEL_DATA_HEADER_BYTES + length > bytes.length) {
      this.drops.malformed++;
      return null;
    }
    const state = this.#channels[channel - CHANNEL_NUMBER_MIN];
    if (state === undefined || !state.channelConfirmed) {
      this.drops.unknownChannel++;
      return null;
    }
    return { peer: state.peer, payload: bytes.subarray(CHANNEL_DATA_HEADER_BYTES, CHANNEL_DATA_HEADER_BYTES + length) };
  }

  #dataIndication(message: StunMessage): TurnDecapsulated | null {
    const peer = getXorAddress(message, StunAttribute.xorPeerAddress);
    const data = getAttribute(message, StunAttribute.data);
    if (message.method !== StunMethod.data || peer === undefined || data === undefined) {
      this.drops.unknownChannel++;
      return null;
    }
    return { peer, payload: data };
  }

  #peerState(peer: TransportAddress): PeerState {
    const canonical = canonicalOrThrow(peer);
    if (this.#state === 'closing' || this.#state === 'closed' || this.#state === 'failed') {
      throw new Error(`turn: no peers can be added in state ${this.#state}`);
    }
    const key = addressKey(canonical);
    let state = this.#peers.get(key);
    if (state === undefined) {
      state = {
        peer: canonical, permissionRequested: false, permissionConfirmed: false, permissionRefreshAt: NEVER,
        permissionPending: false, channel: 0, channelConfirmed: false, channelRebindAt: NEVER, channelPending: false,
      };
      this.#peers.set(key, state);
    }
    return state;
  }

  #forgetPeers(): void {
    this.#peers.clear();
    this.#channels = [];
  }

  /**
   * Builds and sends one request: `attributes` adds the method's own; then SOFTWARE, and the
   * long-term credentials (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY, RFC 8489 §9.2.4) once the
   * server has told us its realm and nonce.
   */
  #request(kind: RequestKind, attributes: (builder: StunMessageBuilder) => void, staleRetries: number, now: number,
    peer: PeerState | null = null): void {
    const id = newTransactionId();
    const builder = new StunMessageBuilder(methodOf(kind), 'request', id);
    attributes(builder);
    if (this.#software !== undefined) builder.software(this.#software);
    const auth = this.#auth;
    if (auth !== null) builder.username(this.#credentials.username).realm(auth.realm).nonce(auth.nonce);
    const bytes = builder.encode(auth === null ? {} : { integrityKey: auth.key });
    this.#transactions.set(id, {
      kind, peer, bytes, authenticated: auth !== null, staleRetries, transmissions: 1, rtoMs: this.#initialRtoMs,
      nextSendAt: now + this.#initialRtoMs,
    });
    this.#transmits.push({ to: this.server, bytes });
  }

  #sendAllocate(now: number, staleRetries: number): void {
    this.#request('allocate', (b) => b.requestedTransport(UDP_PROTOCOL).lifetime(REQUESTED_LIFETIME_S), staleRetries, now);
  }

  #sendRefresh(now: number, lifetimeS: number, kind: 'refresh' | 'deallocate', staleRetries: number): void {
    this.#request(kind, (b) => b.lifetime(lifetimeS), staleRetries, now);
  }

  #sendPermission(peer: PeerState, now: number, staleRetries = 0): void {
    peer.permissionPending = true;
    this.#request('permission', (b) => b.xorPeerAddress(peer.peer), staleRetries, now, peer);
  }

  #sendChannelBind(peer: PeerState, now: number, staleRetries = 0): void {
    peer.channelPending = true;
    this.#request('channelBind', (b) => b.channelNumber(peer.channel).xorPeerAddress(peer.peer), staleRetries, now, peer);
  }

  /** Sends a fresh copy of `transaction`'s request (new transaction id, current nonce). */
  #resend(transaction: Transaction, now: number, staleRetries: number): void {
    switch (transaction.kind) {
      case 'allocate':
        this.#sendAllocate(now, staleRetries);
        return;
      case 'refresh':
        this.#sendRefresh(now, REQUESTED_LIFETIME_S, 'refresh', staleRetries);
        return;
      case 'deallocate':
        this.#sendRefresh(now, 0, 'deallocate', staleRetries);
        return;
      case 'permission':
        if (transaction.peer !== null) this.#sendPermission(transaction.peer, now, staleRetries);
        return;
      case 'channelBind':
        if (transaction.peer !== null) this.#sendChannelBind(transaction.peer, now, staleRetries);
        return;
    }
  }

  #onSuccess(transaction: Transaction, message: StunMessage, now: number): void {
    switch (transaction.kind) {
      case 'allocate': {
        const relayed = getXorAddress(message, StunAttribute.xorRelayedAddress);
        const lifetimeS = getUint32(message, StunAttribute.lifetime);
        if (relayed === undefined || lifetimeS === undefined || lifetimeS <= 0) {
          this.#fail('malformed', null, 'Allocate success response without XOR-RELAYED-ADDRESS or LIFETIME');
          return;
        }
        this.#state = 'allocated';
        this.#relayedAddress = relayed;
        this.#mappedAddress = getXorAddress(message, StunAttribute.xorMappedAddress) ?? null;
        this.#scheduleRefresh(now, lifetimeS);
        this.#events.push({ kind: 'allocated', relayedAddress: relayed, mappedAddress: this.#mappedAddress, lifetimeS });
        for (const peer of this.#peers.values()) {
          if (peer.channel !== 0) this.#sendChannelBind(peer, now);
          else if (peer.permissionRequested) this.#sendPermission(peer, now);
        }
        return;
      }
      case 'refresh': {
        const lifetimeS = getUint32(message, StunAttribute.lifetime) ?? REQUESTED_LIFETIME_S;
        this.#scheduleRefresh(now, lifetimeS);
        return;
      }
      case 'deallocate':
        this.#finishClose(true);
        return;
      case 'permission': {
        const peer = transaction.peer;
        if (peer === null) return;
        peer.permissionPending = false;
        peer.permissionRefreshAt = now + PERMISSION_REFRESH_MS;
        if (!peer.permissionConfirmed) {
          peer.permissionConfirmed = true;
          this.#events.push({ kind: 'permissionCreated', peer: peer.peer });
        }
        return;
      }
      case 'channelBind': {
        const peer = transaction.peer;
        if (peer === null) return;
        peer.channelPending = false;
        peer.channelRebindAt = now + CHANNEL_REBIND_MS;
        // RFC 8656 §11.3: a successful ChannelBind also installs or refreshes the permission.
        peer.permissionRefreshAt = Math.max(peer.permissionRefreshAt === NEVER ? 0 : peer.permissionRefreshAt, now + PERMISSION_REFRESH_MS);
        if (!peer.permissionConfirmed) {
          peer.permissionConfirmed = true;
          this.#events.push({ kind: 'permissionCreated', peer: peer.peer });
        }
        if (!peer.channelConfirmed) {
          peer.channelConfirmed = true;
          this.#events.push({ kind: 'channelBound', peer: peer.peer, channel: peer.channel });
        }
        return;
      }
    }
  }

  #onError(transaction: Transaction, message: StunMessage, now: number): void {
    const error = getErrorCode(message);
    const code = error?.code ?? 0;
    const detail = error === undefined ? 'error response without a valid ERROR-CODE' : `${error.code} ${error.reason}`.trim();
    // RFC 8489 §9.2.5: 401 to an unauthenticated request is the challenge; 438 brings a new nonce.
    if ((code === ERROR_UNAUTHORIZED && !transaction.authenticated) || code === ERROR_STALE_NONCE) {
      const realm = getString(message, StunAttribute.realm);
      const nonce = getAttribute(message, StunAttribute.nonce);
      const staleRetries = code === ERROR_STALE_NONCE ? transaction.staleRetries + 1 : transaction.staleRetries;
      if (realm !== undefined && nonce !== undefined && staleRetries <= MAX_STALE_NONCE_RETRIES) {
        if (this.#auth === null || this.#auth.realm !== realm) {
          this.#auth = { realm, nonce: Uint8Array.from(nonce), key: longTermKey(this.#credentials.username, realm, this.#credentials.password) };
        } else {
          this.#auth.nonce = Uint8Array.from(nonce);
        }
        this.#resend(transaction, now, staleRetries);
        return;
      }
    }
    if (transaction.kind === 'allocate' && code === ERROR_ALLOCATION_MISMATCH && !this.#allocationMismatchRetried && this.#auth !== null) {
      // RFC 8656 §7.2: this 5-tuple still holds an allocation (ours, from before a restart on the
      // same port). Delete it, then ask again once.
      this.#allocationMismatchRetried = true;
      this.#request('deallocate', (b) => b.lifetime(0), 0, now);
      this.#sendAllocate(now, 0);
      return;
    }
    const reason: TurnFailureReason = code === ERROR_UNAUTHORIZED ? 'unauthorized' : 'rejected';
    switch (transaction.kind) {
      case 'allocate':
      case 'refresh':
        this.#fail(reason, code, detail);
        return;
      case 'deallocate':
        // 437: the allocation is already gone, which is what we wanted.
        this.#finishClose(code === ERROR_ALLOCATION_MISMATCH);
        return;
      case 'permission':
        if (transaction.peer !== null) this.#peerRequestFailed(transaction.peer, 'permission', reason, detail);
        return;
      case 'channelBind':
        if (transaction.peer !== null) this.#peerRequestFailed(transaction.peer, 'channelBind', reason, detail);
        return;
    }
  }

  #onTimeout(transaction: Transaction): void {
    const detail = `no response after ${this.#maxTransmissions} transmissions`;
    switch (transaction.kind) {
      case 'allocate':
      case 'refresh':
        this.#fail('timeout', null, detail);
        return;
      case 'deallocate':
        this.#finishClose(false);
        return;
      case 'permission':
      case 'channelBind':
        if (transaction.peer !== null) this.#peerRequestFailed(transaction.peer, transaction.kind, 'timeout', detail);
        return;
    }
  }

  #peerRequestFailed(peer: PeerState, kind: 'permission' | 'channelBind', reason: TurnFailureReason, detail: string): void {
    if (kind === 'permission') {
      peer.permissionPending = false;
      peer.permissionConfirmed = false;
      peer.permissionRequested = false;
      peer.permissionRefreshAt = NEVER;
      this.#events.push({ kind: 'permissionFailed', peer: peer.peer, reason, detail });
    } else {
      peer.channelPending = false;
      peer.channelConfirmed = false;
      peer.channelRebindAt = NEVER;
      // The number stays reserved for this peer: RFC 8656 §12 forbids rebinding it to another
      // peer while a binding may still exist at the server.
      this.#events.push({ kind: 'channelBindFailed', peer: peer.peer, reason, detail });
    }
  }

  #scheduleRefresh(now: number, lifetimeS: number): void {
    const lifetimeMs = lifetimeS * 1000;
    this.#refreshAt = now + Math.max(lifetimeMs / 2, lifetimeMs - ALLOCATION_REFRESH_MARGIN_MS);
  }

  #fail(reason: TurnFailureReason, code: number | null, detail: string): void {
    this.#state = 'failed';
    this.#refreshAt = NEVER;
    this.#relayedAddress = null;
    this.#transactions.clear();
    this.#forgetPeers();
    this.#events.push({ kind: 'allocationFailed', reason, code, detail });
  }

  #finishClose(confirmed: boolean): void {
    this.#state = 'closed';
    this.#relayedAddress = null;
    this.#transactions.clear();
    this.#events.push({ kind: 'deallocated', confirmed });
  }
}

function methodOf(kind: RequestKind): number {
  switch (kind) {
    case 'allocate':
      return StunMethod.allocate;
    case 'refresh':
    case 'deallocate':
      return StunMethod.refresh;
    case 'permission':
      return StunMethod.createPermission;
    case 'channelBind':
      return StunMethod.channelBind;
  }
}

function newTransactionId(): TransactionId {
  return transactionIdFromBytes(randomBytes(12));
}

function canonicalOrThrow(address: TransportAddress): TransportAddress {
  const canonical = canonicalTransportAddress(address.address, address.port);
  if (canonical === null) throw new RangeError(`turn: ${JSON.stringify(address)} is not a valid transport address`);
  return canonical;
}
