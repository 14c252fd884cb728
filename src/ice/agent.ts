// A sans-IO ICE agent (RFC 8445) for one connection over one UDP component: the WireGuard socket.
// The caller owns every socket and TURN allocation and drives the agent with
//   handleInput(bytes, from, to, now)  a STUN datagram that arrived (relayed ones already unwrapped)
//   handleTimeout(now)                  when now ≥ pollTimeout()
//   pollTransmit() / pollEvent()        until they return undefined
// and time is always a parameter. The shape follows Firezone's snownet over str0m's agent.
//
// Deliberate departures from RFC 8445, all as Firezone/str0m do them:
// - Nomination never ends the checks: the controlling side keeps checking the rest of the
//   checklist and nominates again whenever a better pair succeeds, so a connection that starts
//   relayed moves to a direct path as soon as one works (emitted as `pathChanged`). The controlled
//   side follows the latest nomination.
// - Retransmissions use a 250 ms initial RTO doubling to a 1.5 s cap with 12 retransmits
//   (≈ 15 s per transaction), Firezone's figures, rather than RFC 8489's 500 ms × 7.
// - A peer-reflexive *local* candidate learnt from XOR-MAPPED-ADDRESS is not added to the valid
//   list as a separate pair; the pair that sent the check becomes valid. Only the base matters
//   for sending, and prflx locals are never signalled (§5.1.3).
// Consent freshness (RFC 7675) runs on the selected pair on both sides: an authenticated check
// every ~5 s (randomised 0.8–1.2×, every 1 s once responses are overdue), and `failed` once no
// response came for consentTimeoutMs.
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import { addressKey, sameTransportAddress, type TransportAddress } from './address.ts';
import {
  candidatePriority, computeFoundation, COMPONENT_ID, MAX_LOCAL_PREFERENCE, pairPriority,
  type Candidate, type CandidateType,
} from './candidates.ts';
import {
  getAttribute, getErrorCode, getString, getUint32, getUint64, getXorAddress, isStun, parseStun, shortTermKey, StunAttribute,
  StunMessageBuilder, StunMethod, transactionIdFromBytes, unknownRequiredAttributes, verifyIntegrity,
  type StunMessage, type TransactionId,
} from './stun.ts';

export type IceRole = 'controlling' | 'controlled';

export interface IceCredentials {
  /** At least 4 ice-chars (24 bits of randomness, RFC 8445 §5.3). */
  readonly ufrag: string;
  /** At least 22 ice-chars (128 bits). */
  readonly pwd: string;
}

export interface LocalCandidate extends Candidate {
  /** Where datagrams for this candidate leave from: the host socket, or the relayed address. */
  readonly base: TransportAddress;
  /** The caller's name for the TURN allocation of a relayed candidate; null otherwise. */
  readonly relay: string | null;
}

/** Where a datagram arrived: the local host address (socket address and pktinfo), or the relayed address and its relay. */
export interface IceArrival {
  readonly local: TransportAddress;
  readonly relay: string | null;
}

export interface IceTransmit {
  /** The local base to send from: a host address, or a relayed address when `relay` is set. */
  readonly from: TransportAddress;
  /** Non-null: send through this TURN allocation (ChannelData or a Send indication) to `to`. */
  readonly relay: string | null;
  readonly to: TransportAddress;
  readonly bytes: Uint8Array;
}

export interface IcePath {
  readonly local: LocalCandidate;
  readonly remote: Candidate;
  readonly priority: bigint;
}

export type IceFailure = 'noWorkingPair' | 'consentExpired';

export type IceEvent =
  | { readonly kind: 'connected'; readonly pair: IcePath }
  | { readonly kind: 'pathChanged'; readonly pair: IcePath; readonly previous: IcePath }
  | { readonly kind: 'roleChanged'; readonly role: IceRole }
  | { readonly kind: 'failed'; readonly reason: IceFailure };

export type PairState = 'frozen' | 'waiting' | 'inProgress' | 'succeeded' | 'failed';

export interface IcePairView extends IcePath {
  readonly state: PairState;
}

export interface IceTimings {
  /** Ta: pacing between new checks (RFC 8445 §14.2). */
  readonly checkPacingMs: number;
  readonly initialRtoMs: number;
  readonly maxRtoMs: number;
  /** Retransmissions after the first send before a transaction times out. */
  readonly maxRetransmits: number;
  /** Before the first nomination, how long to wait for a better pair still being checked. */
  readonly nominationWaitMs: number;
  /** No pair selected by then (from construction) → failed. */
  readonly connectTimeoutMs: number;
  readonly consentIntervalMs: number;
  /** No consent response on the selected pair for this long → failed (RFC 7675 §5.1 says 30 s; Firezone 15 s). */
  readonly consentTimeoutMs: number;
}

export const DEFAULT_ICE_TIMINGS: IceTimings = {
  checkPacingMs: 50,
  initialRtoMs: 250,
  maxRtoMs: 1_500,
  maxRetransmits: 12,
  nominationWaitMs: 300,
  connectTimeoutMs: 15_000,
  consentIntervalMs: 5_000,
  consentTimeoutMs: 15_000,
};

/** Checklist size limit (RFC 8445 §6.1.2.5 default) and a matching bound on remote candidates. */
export const MAX_CANDIDATE_PAIRS = 100;
export const MAX_REMOTE_CANDIDATES = 50;
/** Consent transactions allowed in flight at once on the selected pair. */
const MAX_CONSENT_TRANSACTIONS = 4;

export interface IceAgentConfig {
  readonly role: IceRole;
  readonly local: IceCredentials;
  /** Known at once when signalling delivers both sides' credentials together; else setRemoteCredentials. */
  readonly remote?: IceCredentials;
  /** Start of the connect timeout. */
  readonly now: number;
  readonly timings?: Partial<IceTimings>;
  /** Randomness for the tie-breaker, transaction ids and consent jitter; crypto by default. */
  readonly randomBytes?: (length: number) => Uint8Array;
}

/** Counters; every dropped or refused datagram lands in exactly one `dropped*`/`refused*` field. */
export interface IceStats {
  checksSent: number;
  retransmits: number;
  requestsAnswered: number;
  /** Not STUN, or STUN whose attributes do not parse. */
  droppedMalformed: number;
  /** FINGERPRINT absent or wrong (ICE requires it, RFC 8445 §7.2.2). */
  droppedFingerprint: number;
  /** Requests other than Binding, and indications. */
  droppedUnsupported: number;
  /** Responses to no transaction of ours. */
  droppedUnmatchedResponse: number;
  /** Responses without a MESSAGE-INTEGRITY that verifies with the remote password. */
  droppedResponseIntegrity: number;
  /** Anything after the agent failed. */
  droppedAfterFailure: number;
  /** 400: USERNAME, MESSAGE-INTEGRITY, PRIORITY or role attribute missing. */
  refusedBadRequest: number;
  /** 401: USERNAME not ours, or MESSAGE-INTEGRITY that does not verify. */
  refusedUnauthenticated: number;
  /** 420: comprehension-required attributes we do not know. */
  refusedUnknownAttribute: number;
  /** 487 sent or received, or a role switch on a request's tie-breaker. */
  roleConflicts: number;
}

type TransactionPurpose = 'check' | 'nominate' | 'consent';

interface Pair {
  readonly key: string;
  readonly local: LocalCandidate;
  readonly remote: Candidate;
  readonly foundation: string;
  priority: bigint;
  state: PairState;
  /** Controlled side: USE-CANDIDATE arrived before this pair's own check succeeded. */
  remoteNominated: boolean;
  lastResponseAt: number;
}

interface Transaction {
  readonly id: TransactionId;
  readonly pair: Pair;
  readonly purpose: TransactionPurpose;
  readonly bytes: Uint8Array;
  retransmits: number;
  rto: number;
  nextSendAt: number;
}

/** Attributes a Binding request may carry that we understand (others below 0x8000 earn a 420). */
const UNDERSTOOD_ATTRIBUTES: ReadonlySet<number> = new Set([
  StunAttribute.username, StunAttribute.priority, StunAttribute.useCandidate, StunAttribute.xorMappedAddress,
]);
const ICE_CHARS = /^[A-Za-z0-9+/]+$/;

function checkCredentials(credentials: IceCredentials, which: string): void {
  if (credentials.ufrag.length < 4 || credentials.ufrag.length > 256 || !ICE_CHARS.test(credentials.ufrag)) {
    throw new RangeError(`ice: ${which} ufrag must be 4–256 ice-chars`);
  }
  if (credentials.pwd.length < 22 || credentials.pwd.length > 256 || !ICE_CHARS.test(credentials.pwd)) {
    throw new RangeError(`ice: ${which} pwd must be 22–256 ice-chars`);
  }
}

function localKey(local: LocalCandidate): string {
  return `${local.relay === null ? 'host' : `relay:${local.relay}`}|${addressKey(local.base)}`;
}

function pathOf(pair: Pair): IcePath {
  return { local: pair.local, remote: pair.remote, priority: pair.priority };
}

export class IceAgent {
  private role: IceRole;
  private readonly localCredentials: IceCredentials;
  private remoteCredentials: IceCredentials | null = null;
  private readonly timings: IceTimings;
  private readonly randomBytes: (length: number) => Uint8Array;
  private readonly tieBreaker: bigint;
  private readonly connectDeadline: number;

  private readonly locals: LocalCandidate[] = [];
  private readonly remotes: Candidate[] = [];
  /** Highest priority first. */
  private pairs: Pair[] = [];
  private readonly triggered: Pair[] = [];
  private readonly transactions = new Map<TransactionId, Transaction>();
  private readonly transmits: IceTransmit[] = [];
  private readonly events: IceEvent[] = [];

  private nextCheckAt: number;
  private firstValidAt = -1;
  private selected: Pair | null = null;
  private nextConsentAt = Infinity;
  private failed = false;
  private readonly counters: IceStats = {
    checksSent: 0, retransmits: 0, requestsAnswered: 0, droppedMalformed: 0, droppedFingerprint: 0,
    droppedUnsupported: 0, droppedUnmatchedResponse: 0, droppedResponseIntegrity: 0, droppedAfterFailure: 0,
    refusedBadRequest: 0, refusedUnauthenticated: 0, refusedUnknownAttribute: 0, roleConflicts: 0,
  };

  constructor(config: IceAgentConfig) {
    checkCredentials(config.local, 'local');
    this.role = config.role;
    this.localCredentials = config.local;
    this.timings = { ...DEFAULT_ICE_TIMINGS, ...config.timings };
    this.randomBytes = config.randomBytes ?? ((length) => cryptoRandomBytes(length));
    this.tieBreaker = Buffer.from(this.randomBytes(8)).readBigUInt64BE(0);
    this.connectDeadline = config.now + this.timings.connectTimeoutMs;
    this.nextCheckAt = config.now;
    if (config.remote !== undefined) this.setRemoteCredentials(config.remote);
  }

  get currentRole(): IceRole { return this.role; }
  get localUfrag(): string { return this.localCredentials.ufrag; }
  get stats(): Readonly<IceStats> { return this.counters; }
  get hasFailed(): boolean { return this.failed; }

  /** The pair data should use now, or null before the first nomination. */
  selectedPath(): IcePath | null {
    return this.selected === null ? null : pathOf(this.selected);
  }

  localCandidates(): readonly LocalCandidate[] { return this.locals; }
  remoteCandidates(): readonly Candidate[] { return this.remotes; }

  /** The checklist, highest priority first (for diagnostics and tests). */
  checklist(): readonly IcePairView[] {
    return this.pairs.map((p) => ({ ...pathOf(p), state: p.state }));
  }

  /** Whether a response with this transaction id belongs to this agent (demultiplexing). */
  ownsTransaction(id: TransactionId): boolean {
    return this.transactions.has(id);
  }

  setRemoteCredentials(credentials: IceCredentials): void {
    checkCredentials(credentials, 'remote');
    if (this.remoteCredentials !== null) {
      if (this.remoteCredentials.ufrag === credentials.ufrag && this.remoteCredentials.pwd === credentials.pwd) return;
      throw new RangeError('ice: remote credentials are already set (an ICE restart needs a new agent)');
    }
    this.remoteCredentials = credentials;
  }

  /**
   * Adds a local candidate and returns it for signalling (formatCandidate). `host`: `address` is
   * the socket's address. `srflx`: `base` names the host candidate it maps. `relay`: `relay` names
   * the caller's TURN allocation and `related` its mapped address.
   */
  addLocalCandidate(input: {
    readonly type: Exclude<CandidateType, 'prflx'>;
    readonly address: TransportAddress;
    readonly base?: TransportAddress;
    readonly relay?: string;
    readonly related?: TransportAddress;
  }): LocalCandidate {
    const sameType = this.locals.filter((c) => c.type === input.type && c.address.family === input.address.family).length;
    // IPv6 above IPv4, then first-added first (RFC 8421's spirit, in one 16-bit preference).
    const localPreference = Math.max(0, (input.address.family === 6 ? MAX_LOCAL_PREFERENCE : 32_767) - sameType);
    let candidate: LocalCandidate;
    switch (input.type) {
      case 'host':
        candidate = {
          foundation: computeFoundation('host', input.address.address, null), componentId: COMPONENT_ID,
          priority: candidatePriority('host', localPreference), address: input.address, type: 'host', related: null,
          base: input.address, relay: null,
        };
        break;
      case 'srflx': {
        const base = input.base;
        if (base === undefined || !this.locals.some((c) => c.type === 'host' && sameTransportAddress(c.base, base))) {
          throw new RangeError('ice: a server-reflexive candidate needs the base of a host candidate added before it');
        }
        candidate = {
          foundation: computeFoundation('srflx', base.address, null), componentId: COMPONENT_ID,
          priority: candidatePriority('srflx', localPreference), address: input.address, type: 'srflx', related: base,
          base, relay: null,
        };
        break;
      }
      case 'relay': {
        const relay = input.relay;
        if (relay === undefined || relay.length === 0) throw new RangeError('ice: a relayed candidate needs its relay name');
        candidate = {
          foundation: computeFoundation('relay', input.address.address, relay), componentId: COMPONENT_ID,
          priority: candidatePriority('relay', localPreference), address: input.address, type: 'relay',
          related: input.related ?? null, base: input.address, relay,
        };
        break;
      }
    }
    if (this.locals.some((c) => c.type === candidate.type && c.relay === candidate.relay && sameTransportAddress(c.address, candidate.address))) {
      throw new RangeError('ice: that local candidate is already added');
    }
    this.locals.push(candidate);
    // Server-reflexive candidates pair as their base, which the host candidate already covers (§6.1.2.4).
    if (candidate.type !== 'srflx') for (const remote of this.remotes) this.formPair(candidate, remote);
    this.sortAndPrune();
    return candidate;
  }

  /**
   * Adds a remote candidate from signalling (trickle). Returns false, and changes nothing, when
   * it is a duplicate or the remote-candidate limit is reached.
   */
  addRemoteCandidate(candidate: Candidate): boolean {
    if (this.failed) return false;
    if (candidate.componentId !== COMPONENT_ID) return false;
    if (this.remotes.some((r) => sameTransportAddress(r.address, candidate.address))) return false;
    if (this.remotes.length >= MAX_REMOTE_CANDIDATES) return false;
    this.remotes.push(candidate);
    for (const local of this.locals) if (local.type !== 'srflx') this.formPair(local, candidate);
    this.sortAndPrune();
    return true;
  }

  pollTransmit(): IceTransmit | undefined {
    return this.transmits.shift();
  }

  pollEvent(): IceEvent | undefined {
    return this.events.shift();
  }

  /** When handleTimeout should next run; Infinity once failed. */
  pollTimeout(): number {
    if (this.failed) return Infinity;
    let at = this.selected === null ? this.connectDeadline : Math.min(this.nextConsentAt, this.selected.lastResponseAt + this.timings.consentTimeoutMs);
    for (const transaction of this.transactions.values()) at = Math.min(at, transaction.nextSendAt);
    if (this.remoteCredentials !== null && this.peekPairToCheck() !== null) at = Math.min(at, this.nextCheckAt);
    if (this.role === 'controlling' && this.selected === null && !this.nominationInFlight() && this.pairs.some((p) => p.state === 'succeeded')) {
      at = Math.min(at, this.firstValidAt + this.timings.nominationWaitMs);
    }
    return at;
  }

  handleTimeout(now: number): void {
    if (this.failed) return;
    if (this.selected === null && now >= this.connectDeadline) {
      this.fail('noWorkingPair');
      return;
    }
    if (this.selected !== null && now >= this.selected.lastResponseAt + this.timings.consentTimeoutMs) {
      this.fail('consentExpired');
      return;
    }
    for (const transaction of [...this.transactions.values()]) {
      if (now < transaction.nextSendAt) continue;
      if (transaction.retransmits >= this.timings.maxRetransmits) {
        this.transactionTimedOut(transaction);
        continue;
      }
      transaction.retransmits++;
      transaction.rto = Math.min(transaction.rto * 2, this.timings.maxRtoMs);
      transaction.nextSendAt = now + transaction.rto;
      this.counters.retransmits++;
      this.queueTransmit(transaction.pair, transaction.bytes);
    }
    if (now >= this.nextCheckAt && this.remoteCredentials !== null) {
      const pair = this.peekPairToCheck();
      if (pair !== null) {
        const queued = this.triggered.indexOf(pair);
        if (queued >= 0) this.triggered.splice(queued, 1);
        this.startTransaction(pair, 'check', now);
        this.nextCheckAt = now + this.timings.checkPacingMs;
      }
    }
    this.maybeNominate(now);
    if (this.selected !== null && now >= this.nextConsentAt) {
      const selected = this.selected;
      let inFlight = 0;
      for (const t of this.transactions.values()) if (t.pair === selected && t.purpose === 'consent') inFlight++;
      if (inFlight < MAX_CONSENT_TRANSACTIONS) this.startTransaction(selected, 'consent', now);
      // Once consent is a third of the way to expiring, probe five times as often: under heavy
      // loss one transaction's retransmissions alone leave a few-in-a-thousand chance per round
      // of losing a path that works (str0m likewise probes faster as a binding ages).
      const stale = now - selected.lastResponseAt > this.timings.consentTimeoutMs / 3;
      this.nextConsentAt = now + (stale ? this.timings.consentIntervalMs / 5 : this.consentInterval());
    }
  }

  /**
   * A datagram that arrived for this connection. Returns false when it is not STUN at all (the
   * caller hands it to the next demultiplexer); every STUN datagram is consumed, answered or
   * counted. Addresses must be canonical (see transportAddress()). Never throws on bad bytes.
   */
  handleInput(bytes: Uint8Array, from: TransportAddress, to: IceArrival, now: number): boolean {
    if (!isStun(bytes, bytes.length)) {
      this.counters.droppedMalformed++;
      return false;
    }
    const message = parseStun(bytes);
    if (message === null) {
      this.counters.droppedMalformed++;
      return true;
    }
    if (this.failed) {
      this.counters.droppedAfterFailure++;
      return true;
    }
    if (message.fingerprint !== 'valid') {
      this.counters.droppedFingerprint++;
      return true;
    }
    if (message.method !== StunMethod.binding || message.messageClass === 'indication') {
      this.counters.droppedUnsupported++;
      return true;
    }
    if (message.messageClass === 'request') this.handleRequest(message, from, to, now);
    else this.handleResponse(message, from, to, now);
    this.maybeNominate(now);
    return true;
  }

  // ---- requests (RFC 8445 §7.3) ----

  private handleRequest(request: StunMessage, from: TransportAddress, to: IceArrival, now: number): void {
    const username = getString(request, StunAttribute.username);
    if (username === undefined || request.integrityOffset < 0) {
      this.counters.refusedBadRequest++;
      this.respondError(request, from, to, 400, 'Bad Request', false);
      return;
    }
    const colon = username.indexOf(':');
    const ours = colon > 0 ? username.slice(0, colon) : '';
    const theirs = colon > 0 ? username.slice(colon + 1) : '';
    if (ours !== this.localCredentials.ufrag || (this.remoteCredentials !== null && theirs !== this.remoteCredentials.ufrag)
      || !verifyIntegrity(request, shortTermKey(this.localCredentials.pwd))) {
      this.counters.refusedUnauthenticated++;
      this.respondError(request, from, to, 401, 'Unauthenticated', false);
      return;
    }
    // Authenticated from here on: errors are signed so the peer can trust them.
    const unknown = unknownRequiredAttributes(request, UNDERSTOOD_ATTRIBUTES);
    if (unknown.length > 0) {
      this.counters.refusedUnknownAttribute++;
      this.respondError(request, from, to, 420, 'Unknown Attribute', true, unknown);
      return;
    }
    const priority = getUint32(request, StunAttribute.priority);
    const controlling = getUint64(request, StunAttribute.iceControlling);
    const controlled = getUint64(request, StunAttribute.iceControlled);
    if (priority === undefined || priority === 0 || (controlling === undefined) === (controlled === undefined)) {
      this.counters.refusedBadRequest++;
      this.respondError(request, from, to, 400, 'Bad Request', true);
      return;
    }
    // Role conflict (§7.3.1.1): the larger tie-breaker keeps (or takes) the controlling role.
    if (this.role === 'controlling' && controlling !== undefined) {
      this.counters.roleConflicts++;
      if (this.tieBreaker >= controlling) {
        this.respondError(request, from, to, 487, 'Role Conflict', true);
        return;
      }
      this.switchRole();
    } else if (this.role === 'controlled' && controlled !== undefined) {
      this.counters.roleConflicts++;
      if (this.tieBreaker >= controlled) {
        this.switchRole();
      } else {
        this.respondError(request, from, to, 487, 'Role Conflict', true);
        return;
      }
    }
    const response = new StunMessageBuilder(StunMethod.binding, 'success', request.transactionId)
      .xorMappedAddress(from)
      .encode({ integrityKey: shortTermKey(this.localCredentials.pwd), fingerprint: true });
    this.transmits.push({ from: to.local, relay: to.relay, to: from, bytes: response });
    this.counters.requestsAnswered++;

    const local = this.localFor(to);
    if (local === null) return; // answered, but an address we were not told about cannot pair
    let remote = this.remotes.find((r) => sameTransportAddress(r.address, from));
    if (remote === undefined) {
      if (this.remotes.length >= MAX_REMOTE_CANDIDATES) return;
      // Peer-reflexive remote candidate (§7.3.1.3), priority from the request.
      remote = {
        foundation: computeFoundation('prflx', from.address, null), componentId: COMPONENT_ID, priority,
        address: from, type: 'prflx', related: null,
      };
      this.remotes.push(remote);
      for (const l of this.locals) if (l.type !== 'srflx') this.formPair(l, remote);
      this.sortAndPrune();
    }
    const pair = this.pairs.find((p) => p.key === `${localKey(local)}>${addressKey(from)}`);
    if (pair === undefined) return;
    // Triggered check (§7.3.1.4): a request from there suggests the path works both ways.
    if (pair.state === 'waiting' || pair.state === 'frozen' || pair.state === 'failed') {
      pair.state = 'waiting';
      if (!this.triggered.includes(pair)) this.triggered.push(pair);
    }
    // USE-CANDIDATE (§7.3.1.5): the controlled side selects what the controlling side nominates.
    if (this.role === 'controlled' && getAttribute(request, StunAttribute.useCandidate) !== undefined) {
      if (pair.state === 'succeeded') this.select(pair, now);
      else pair.remoteNominated = true;
    }
  }

  private respondError(request: StunMessage, from: TransportAddress, to: IceArrival, code: number, reason: string, signed: boolean, unknown?: readonly number[]): void {
    const builder = new StunMessageBuilder(StunMethod.binding, 'error', request.transactionId).errorCode(code, reason);
    if (unknown !== undefined) builder.unknownAttributes(unknown);
    const bytes = builder.encode({ integrityKey: signed ? shortTermKey(this.localCredentials.pwd) : undefined, fingerprint: true });
    this.transmits.push({ from: to.local, relay: to.relay, to: from, bytes });
  }

  // ---- responses (§7.2.5) ----

  private handleResponse(response: StunMessage, from: TransportAddress, to: IceArrival, now: number): void {
    const transaction = this.transactions.get(response.transactionId);
    if (transaction === undefined) {
      this.counters.droppedUnmatchedResponse++;
      return;
    }
    // Only a response signed with the peer's password moves state; unsigned 400/401s and forgeries
    // leave the transaction retransmitting until it times out.
    if (this.remoteCredentials === null || !verifyIntegrity(response, shortTermKey(this.remoteCredentials.pwd))) {
      this.counters.droppedResponseIntegrity++;
      return;
    }
    this.transactions.delete(transaction.id);
    const pair = transaction.pair;
    if (response.messageClass === 'error') {
      if (getErrorCode(response)?.code === 487) {
        // §7.2.5.1: switch role and check the pair again.
        this.counters.roleConflicts++;
        this.switchRole();
        if (pair.state !== 'succeeded') {
          pair.state = 'waiting';
          if (!this.triggered.includes(pair)) this.triggered.push(pair);
        }
        return;
      }
      if (pair !== this.selected) pair.state = 'failed';
      return;
    }
    // Non-symmetric addresses fail the check (§7.2.5.2.1).
    if (!sameTransportAddress(from, pair.remote.address) || to.relay !== pair.local.relay || !sameTransportAddress(to.local, pair.local.base)) {
      if (pair !== this.selected) pair.state = 'failed';
      return;
    }
    if (getXorAddress(response, StunAttribute.xorMappedAddress) === undefined) {
      if (pair !== this.selected) pair.state = 'failed';
      return;
    }
    pair.lastResponseAt = now;
    if (pair.state !== 'succeeded') {
      pair.state = 'succeeded';
      if (this.firstValidAt < 0) this.firstValidAt = now;
      // §7.2.5.3.3: a success unfreezes the pairs sharing its foundation.
      for (const other of this.pairs) if (other.state === 'frozen' && other.foundation === pair.foundation) other.state = 'waiting';
    }
    if (transaction.purpose === 'nominate' || (this.role === 'controlled' && pair.remoteNominated)) this.select(pair, now);
  }

  private transactionTimedOut(transaction: Transaction): void {
    this.transactions.delete(transaction.id);
    // A consent check that times out changes nothing by itself: consent expiry decides.
    if (transaction.purpose !== 'consent' && transaction.pair !== this.selected) transaction.pair.state = 'failed';
  }

  // ---- checks and nomination ----

  private formPair(local: LocalCandidate, remote: Candidate): void {
    if (local.address.family !== remote.address.family) return;
    const key = `${localKey(local)}>${addressKey(remote.address)}`;
    if (this.pairs.some((p) => p.key === key)) return;
    const foundation = `${local.foundation}:${remote.foundation}`;
    // §6.1.2.6: the first pair of a foundation waits, the rest start frozen.
    const state: PairState = this.pairs.some((p) => p.foundation === foundation) ? 'frozen' : 'waiting';
    this.pairs.push({ key, local, remote, foundation, priority: this.priorityOf(local, remote), state, remoteNominated: false, lastResponseAt: -Infinity });
  }

  private priorityOf(local: Candidate, remote: Candidate): bigint {
    return this.role === 'controlling' ? pairPriority(local.priority, remote.priority) : pairPriority(remote.priority, local.priority);
  }

  private sortAndPrune(): void {
    this.pairs.sort((a, b) => (a.priority === b.priority ? (a.key < b.key ? -1 : 1) : a.priority > b.priority ? -1 : 1));
    while (this.pairs.length > MAX_CANDIDATE_PAIRS) {
      // Drop the lowest-priority pair that is not in use (§6.1.2.5).
      const index = this.pairs.findLastIndex((p) => p.state === 'waiting' || p.state === 'frozen' || p.state === 'failed');
      if (index < 0) break;
      const [removed] = this.pairs.splice(index, 1);
      const queued = this.triggered.indexOf(removed);
      if (queued >= 0) this.triggered.splice(queued, 1);
    }
  }

  /** The pair the next paced check goes to, without taking it off the triggered queue. */
  private peekPairToCheck(): Pair | null {
    for (const pair of this.triggered) if (pair.state === 'waiting') return pair;
    const waiting = this.pairs.find((p) => p.state === 'waiting');
    if (waiting !== undefined) return waiting;
    // §6.1.4.2: with nothing waiting, unfreeze the best frozen pair whose foundation is idle.
    for (const pair of this.pairs) {
      if (pair.state !== 'frozen') continue;
      if (this.pairs.some((p) => p.foundation === pair.foundation && (p.state === 'waiting' || p.state === 'inProgress'))) continue;
      return pair;
    }
    return null;
  }

  private startTransaction(pair: Pair, purpose: TransactionPurpose, now: number): void {
    const remote = this.remoteCredentials;
    if (remote === null) return;
    const id = transactionIdFromBytes(this.randomBytes(12));
    // PRIORITY is what a peer-reflexive candidate learnt from this check would get (§7.1.1).
    const localPreference = (pair.local.priority >>> 8) & 0xffff;
    const builder = new StunMessageBuilder(StunMethod.binding, 'request', id)
      .username(`${remote.ufrag}:${this.localCredentials.ufrag}`)
      .priority(candidatePriority('prflx', localPreference));
    if (this.role === 'controlling') builder.iceControlling(this.tieBreaker);
    else builder.iceControlled(this.tieBreaker);
    if (purpose === 'nominate') builder.useCandidate();
    const bytes = builder.encode({ integrityKey: shortTermKey(remote.pwd), fingerprint: true });
    this.transactions.set(id, { id, pair, purpose, bytes, retransmits: 0, rto: this.timings.initialRtoMs, nextSendAt: now + this.timings.initialRtoMs });
    if (purpose === 'check') pair.state = 'inProgress';
    this.counters.checksSent++;
    this.queueTransmit(pair, bytes);
  }

  private queueTransmit(pair: Pair, bytes: Uint8Array): void {
    this.transmits.push({ from: pair.local.base, relay: pair.local.relay, to: pair.remote.address, bytes });
  }

  private nominationInFlight(): boolean {
    for (const t of this.transactions.values()) if (t.purpose === 'nominate') return true;
    return false;
  }

  /**
   * Regular nomination (§8.1.1) that never stops: nominate the best succeeded pair when it beats
   * the selected one. Before the first selection, wait up to nominationWaitMs for better pairs
   * still being checked so that a host pair a few milliseconds behind a relay pair wins at once.
   */
  private maybeNominate(now: number): void {
    if (this.role !== 'controlling' || this.failed || this.nominationInFlight()) return;
    const best = this.pairs.find((p) => p.state === 'succeeded');
    if (best === undefined || best === this.selected) return;
    if (this.selected !== null && best.priority <= this.selected.priority) return;
    if (this.selected === null && now < this.firstValidAt + this.timings.nominationWaitMs) {
      const betterPending = this.pairs.some((p) => p.priority > best.priority && (p.state === 'waiting' || p.state === 'inProgress' || p.state === 'frozen'));
      if (betterPending) return;
    }
    this.startTransaction(best, 'nominate', now);
  }

  private select(pair: Pair, now: number): void {
    if (pair === this.selected) return;
    const previous = this.selected;
    this.selected = pair;
    // The controlled side may be told to use a pair whose own check succeeded long ago; the
    // nomination just arrived over it, so consent is counted from now (RFC 7675 §5.1 starts the
    // timer when ICE selects) and checked at once if its last response is old.
    if (now - pair.lastResponseAt > this.timings.consentIntervalMs) {
      pair.lastResponseAt = now;
      this.startTransaction(pair, 'consent', now);
    }
    if (previous === null) {
      this.nextConsentAt = now + this.consentInterval();
      this.events.push({ kind: 'connected', pair: pathOf(pair) });
    } else {
      this.events.push({ kind: 'pathChanged', pair: pathOf(pair), previous: pathOf(previous) });
    }
  }

  private switchRole(): void {
    this.role = this.role === 'controlling' ? 'controlled' : 'controlling';
    for (const pair of this.pairs) pair.priority = this.priorityOf(pair.local, pair.remote);
    this.sortAndPrune();
    this.events.push({ kind: 'roleChanged', role: this.role });
  }

  /** RFC 7675 §5.1: uniformly 0.8–1.2 × the interval, so consent checks of many agents do not align. */
  private consentInterval(): number {
    const r = Buffer.from(this.randomBytes(4)).readUInt32BE(0) / 2 ** 32;
    return Math.round(this.timings.consentIntervalMs * (0.8 + 0.4 * r));
  }

  private localFor(arrival: IceArrival): LocalCandidate | null {
    for (const local of this.locals) {
      if (local.type === 'srflx') continue;
      if (local.relay === arrival.relay && sameTransportAddress(local.base, arrival.local)) return local;
    }
    return null;
  }

  private fail(reason: IceFailure): void {
    this.failed = true;
    this.transactions.clear();
    this.triggered.length = 0;
    this.events.push({ kind: 'failed', reason });
  }
}
