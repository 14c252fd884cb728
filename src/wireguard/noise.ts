// The Noise_IKpsk2 handshake as WireGuard frames it (whitepaper §5.4.2–§5.4.5), as pure functions
// over plain state objects. Nothing here touches sockets, clocks or peer tables: the caller supplies
// indexes and timestamps, looks peers up, checks mac1/mac2 (cookie.ts) and replay/flood rules.
//
//   initiator                                  responder
//   createInitiation ── initiation (148) ─────► consumeInitiation
//   consumeResponse  ◄──── response (92) ───── createResponse
//
// Both ends finish with the same pair of transport keys (whitepaper §5.4.5), crossed over.

import { aeadBackend } from './aead.ts';
import { AEAD_TAG_SIZE, CONSTRUCTION, IDENTIFIER, KEY_SIZE, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE,
  MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE, TIMESTAMP_SIZE } from './constants.ts';
import { constantTimeIsZero, hash, kdf1, kdf2, kdf3, x25519 } from './crypto.ts';
import { ProtocolError } from '../errors.ts';
import { generatePrivateKey, publicKeyOf } from './keys.ts';
import type { PresharedKey, PrivateKey, PublicKey } from './keys.ts';
import {
  INITIATION_EPHEMERAL, INITIATION_MAC1, INITIATION_SENDER, INITIATION_STATIC, INITIATION_STATIC_SIZE,
  INITIATION_TIMESTAMP, INITIATION_TIMESTAMP_SIZE, RESPONSE_EMPTY, RESPONSE_EMPTY_SIZE, RESPONSE_EPHEMERAL,
  RESPONSE_MAC1, RESPONSE_RECEIVER, RESPONSE_SENDER, readU32LE, writeMessageType, writeU32LE,
} from './messages.ts';

export interface LocalIdentity {
  readonly privateKey: PrivateKey;
  readonly publicKey: PublicKey;
}

export interface PeerCrypto {
  readonly remoteStatic: PublicKey;
  readonly presharedKey: PresharedKey;
  /** DH(local private, remote static), computed once per peer; all zero when the remote key is low order. */
  readonly precomputedStaticStatic: Uint8Array;
}

/** The initiator's state between createInitiation and consumeResponse. Treat as opaque. */
export interface InitiatorState {
  readonly localIndex: number;
  readonly hash: Uint8Array;
  readonly chainingKey: Uint8Array;
  /** Wiped (all zero) once a response has been consumed, which marks the state as spent. */
  readonly ephemeralPrivate: Uint8Array;
}

/** An authenticated initiation, ready for createResponse. */
export interface ConsumedInitiation {
  readonly remoteStatic: PublicKey;
  readonly senderIndex: number;
  /** The decrypted TAI64N timestamp; the caller rejects it unless newer than the peer's last one. */
  readonly timestamp: Uint8Array;
  readonly hash: Uint8Array;
  /** Wiped (all zero) once a response has been created, which marks the state as spent. */
  readonly chainingKey: Uint8Array;
  readonly remoteEphemeral: Uint8Array;
}

export interface SessionKeys {
  readonly sendKey: Uint8Array;
  readonly receiveKey: Uint8Array;
}

const encoder = new TextEncoder();
/** Ci = HASH(CONSTRUCTION), Hi = HASH(Ci ‖ IDENTIFIER) (whitepaper §5.4.2). */
const INITIAL_CHAINING_KEY = hash(encoder.encode(CONSTRUCTION));
const INITIAL_HASH = hash(INITIAL_CHAINING_KEY, encoder.encode(IDENTIFIER));
const EMPTY = new Uint8Array(0);

// The handshake honours the same off switch as the data path (ZTGATE_AEAD).
const aead = aeadBackend();

function checkIndex(index: number): void {
  if (!(Number.isInteger(index) && index >= 0 && index <= 0xffffffff)) {
    throw new RangeError(`noise: index must be a u32, got ${index}`);
  }
}

// The AEAD backends keep views per buffer they see (aead.ts ViewCache), which pays off for the
// long-lived packet slots; every handshake message is a fresh buffer, and a cache made for each
// cost more than the AEAD itself. So handshake AEAD runs on two fixed scratch buffers (at most a
// 32-byte key plus the tag passes through), copied in and out.
const SCRATCH_SIZE = KEY_SIZE + AEAD_TAG_SIZE;
const scratchIn = new Uint8Array(SCRATCH_SIZE);
const scratchOut = new Uint8Array(SCRATCH_SIZE);

/** AEAD(key, 0, plaintext, ad) into out[off, ...): every handshake key is used once, with counter 0. */
function sealOnce(key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array, out: Uint8Array, off: number): void {
  const len = plaintext.length;
  scratchIn.set(plaintext);
  aead.seal(key, 0, scratchIn, 0, len, ad, scratchOut, 0);
  out.set(scratchOut.subarray(0, len + AEAD_TAG_SIZE), off);
}

function openOnce(key: Uint8Array, msg: Uint8Array, off: number, len: number, ad: Uint8Array): Uint8Array | null {
  scratchIn.set(msg.subarray(off, off + len));
  const plaintextLength = len - AEAD_TAG_SIZE;
  return aead.open(key, 0, scratchIn, 0, len, ad, scratchOut, 0) === plaintextLength ? scratchOut.slice(0, plaintextLength) : null;
}

/** Everything the handshake needs to know about one peer; do this once when the peer is configured. */
export function peerCrypto(local: LocalIdentity, remoteStatic: PublicKey, psk: PresharedKey): PeerCrypto {
  if (remoteStatic.length !== KEY_SIZE || psk.length !== KEY_SIZE) throw new RangeError('noise: keys must be 32 bytes');
  // A low-order remote key gives an all-zero secret: keep the peer (wg(8) accepts any key), but no
  // handshake with it can succeed, as in wireguard-go.
  const precomputedStaticStatic = x25519(local.privateKey, remoteStatic) ?? new Uint8Array(KEY_SIZE);
  return { remoteStatic, presharedKey: psk, precomputedStaticStatic };
}

/**
 * Writes a handshake initiation (whitepaper §5.4.2) into out[0, 148), with mac1/mac2 left zero for
 * CookieGenerator.addMacs. `timestamp` is 12 TAI64N bytes (tai64n.ts). `ephemeralPrivate` is for
 * known-answer tests only; normally a fresh key is drawn. Throws ProtocolError when the peer's
 * public key is unusable (low order).
 */
export function createInitiation(
  local: LocalIdentity, peer: PeerCrypto, localIndex: number, timestamp: Uint8Array, out: Uint8Array,
  ephemeralPrivate: PrivateKey = generatePrivateKey(),
): InitiatorState {
  checkIndex(localIndex);
  if (out.length < MESSAGE_INITIATION_SIZE) throw new RangeError('noise: initiation buffer must hold 148 bytes');
  if (timestamp.length !== TIMESTAMP_SIZE) throw new RangeError('noise: timestamp must be 12 bytes');
  if (constantTimeIsZero(peer.precomputedStaticStatic)) {
    throw new ProtocolError('noise: cannot start a handshake: the peer public key is a low-order point');
  }

  writeMessageType(out, MESSAGE_INITIATION);
  writeU32LE(out, INITIATION_SENDER, localIndex);

  const ephemeralPublic = publicKeyOf(ephemeralPrivate);
  out.set(ephemeralPublic, INITIATION_EPHEMERAL);
  let h = hash(INITIAL_HASH, peer.remoteStatic);
  let ck = kdf1(INITIAL_CHAINING_KEY, ephemeralPublic);
  h = hash(h, ephemeralPublic);

  // es: encrypt our static public key.
  const es = x25519(ephemeralPrivate, peer.remoteStatic);
  if (es === null) throw new ProtocolError('noise: cannot start a handshake: the peer public key is a low-order point');
  let key: Uint8Array;
  [ck, key] = kdf2(ck, es);
  sealOnce(key, local.publicKey, h, out, INITIATION_STATIC);
  h = hash(h, out.subarray(INITIATION_STATIC, INITIATION_STATIC + INITIATION_STATIC_SIZE));

  // ss: encrypt the timestamp.
  [ck, key] = kdf2(ck, peer.precomputedStaticStatic);
  sealOnce(key, timestamp, h, out, INITIATION_TIMESTAMP);
  h = hash(h, out.subarray(INITIATION_TIMESTAMP, INITIATION_TIMESTAMP + INITIATION_TIMESTAMP_SIZE));

  out.fill(0, INITIATION_MAC1, MESSAGE_INITIATION_SIZE);
  return { localIndex, hash: h, chainingKey: ck, ephemeralPrivate: Uint8Array.from(ephemeralPrivate) };
}

/**
 * An initiation whose sender's static key has been decrypted (the `es` step, one X25519), not yet
 * matched to a peer nor its timestamp authenticated. Plain data, so it can cross threads.
 */
export interface OpenedInitiation {
  readonly remoteStatic: PublicKey;
  readonly senderIndex: number;
  readonly hash: Uint8Array;
  readonly chainingKey: Uint8Array;
  readonly remoteEphemeral: Uint8Array;
  /** The encrypted timestamp as it came, for finishInitiation. */
  readonly sealedTimestamp: Uint8Array;
}

/**
 * The first half of consumeInitiation (whitepaper §5.4.2, responder side): the costly part, which
 * needs only our identity and the message. Returns null for anything invalid; never throws on bad
 * bytes. Only msg[0, 148) is read.
 */
export function openInitiation(local: LocalIdentity, msg: Uint8Array): OpenedInitiation | null {
  if (msg.length < MESSAGE_INITIATION_SIZE) return null;
  if (msg[0] !== MESSAGE_INITIATION || (msg[1]! | msg[2]! | msg[3]!) !== 0) return null;

  const remoteEphemeral = msg.slice(INITIATION_EPHEMERAL, INITIATION_EPHEMERAL + KEY_SIZE);
  let h = hash(INITIAL_HASH, local.publicKey);
  h = hash(h, remoteEphemeral);
  const es = x25519(local.privateKey, remoteEphemeral);
  if (es === null) return null;
  const [ck, key] = kdf2(kdf1(INITIAL_CHAINING_KEY, remoteEphemeral), es);
  const remoteStatic = openOnce(key, msg, INITIATION_STATIC, INITIATION_STATIC_SIZE, h);
  if (remoteStatic === null) return null;
  h = hash(h, msg.subarray(INITIATION_STATIC, INITIATION_STATIC + INITIATION_STATIC_SIZE));
  return {
    remoteStatic: remoteStatic as PublicKey,
    senderIndex: readU32LE(msg, INITIATION_SENDER),
    hash: h,
    chainingKey: ck,
    remoteEphemeral,
    sealedTimestamp: msg.slice(INITIATION_TIMESTAMP, INITIATION_TIMESTAMP + INITIATION_TIMESTAMP_SIZE),
  };
}

/**
 * The second half (the `ss` step with the peer's precomputed DH, then the timestamp): cheap, and
 * needs the peer that `opened.remoteStatic` names. Returns null when the timestamp does not open.
 */
export function finishInitiation(opened: OpenedInitiation, peer: PeerCrypto): ConsumedInitiation | null {
  if (constantTimeIsZero(peer.precomputedStaticStatic)) return null;
  const [ck, key] = kdf2(opened.chainingKey, peer.precomputedStaticStatic);
  const sealed = opened.sealedTimestamp;
  const timestamp = openOnce(key, sealed, 0, sealed.length, opened.hash);
  if (timestamp === null) return null;
  return {
    remoteStatic: peer.remoteStatic,
    senderIndex: opened.senderIndex,
    timestamp,
    hash: hash(opened.hash, sealed),
    chainingKey: ck,
    remoteEphemeral: opened.remoteEphemeral,
  };
}

/**
 * Processes an initiation addressed to `local` (whitepaper §5.4.2, responder side): decrypts the
 * sender's static key, finds its peer with `lookup`, and authenticates the timestamp. Returns null
 * for anything invalid; never throws on bad bytes. Only msg[0, 148) is read; mac1/mac2 are not
 * checked here (cookie.ts), nor is the timestamp compared with earlier ones.
 */
export function consumeInitiation(
  local: LocalIdentity, msg: Uint8Array, lookup: (remoteStatic: PublicKey) => PeerCrypto | undefined,
): ConsumedInitiation | null {
  const opened = openInitiation(local, msg);
  if (opened === null) return null;
  const peer = lookup(opened.remoteStatic);
  return peer === undefined ? null : finishInitiation(opened, peer);
}

/** The ee, se and psk steps both sides run on the response (whitepaper §5.4.3). */
function mixResponseKeys(
  h: Uint8Array, ck: Uint8Array, responderEphemeral: Uint8Array, ee: Uint8Array, se: Uint8Array, psk: Uint8Array,
): { h: Uint8Array; ck: Uint8Array; key: Uint8Array } {
  h = hash(h, responderEphemeral);
  ck = kdf1(ck, responderEphemeral);
  ck = kdf1(ck, ee);
  ck = kdf1(ck, se);
  let tau: Uint8Array;
  let key: Uint8Array;
  [ck, tau, key] = kdf3(ck, psk);
  h = hash(h, tau);
  return { h, ck, key };
}

/**
 * Writes the response to a consumed initiation (whitepaper §5.4.3) into out[0, 92), mac1/mac2 left
 * zero for CookieGenerator.addMacs, and returns the responder's transport keys (§5.4.5). `peer` is
 * the one the initiation was matched to. A consumed initiation answers once: reusing it throws.
 * The sender index is not part of the transcript (§5.4.3 hashes neither index), so a caller that
 * only knows it later may write it over `localIndex` before adding the macs.
 */
export function createResponse(
  consumed: ConsumedInitiation, peer: PeerCrypto, localIndex: number, out: Uint8Array,
  ephemeralPrivate: PrivateKey = generatePrivateKey(),
): SessionKeys {
  checkIndex(localIndex);
  if (out.length < MESSAGE_RESPONSE_SIZE) throw new RangeError('noise: response buffer must hold 92 bytes');
  if (constantTimeIsZero(consumed.chainingKey)) throw new TypeError('noise: this initiation was already answered');

  writeMessageType(out, MESSAGE_RESPONSE);
  writeU32LE(out, RESPONSE_SENDER, localIndex);
  writeU32LE(out, RESPONSE_RECEIVER, consumed.senderIndex);
  const ephemeralPublic = publicKeyOf(ephemeralPrivate);
  out.set(ephemeralPublic, RESPONSE_EPHEMERAL);

  // consumeInitiation already showed both remote keys are not low order, so these cannot be zero.
  const ee = x25519(ephemeralPrivate, consumed.remoteEphemeral);
  const se = x25519(ephemeralPrivate, peer.remoteStatic);
  if (ee === null || se === null) throw new ProtocolError('noise: low-order key in a consumed initiation');
  const { h, ck, key } = mixResponseKeys(
    consumed.hash, consumed.chainingKey, ephemeralPublic, ee, se, peer.presharedKey,
  );
  sealOnce(key, EMPTY, h, out, RESPONSE_EMPTY);
  out.fill(0, RESPONSE_MAC1, MESSAGE_RESPONSE_SIZE);

  const [receiveKey, sendKey] = kdf2(ck, EMPTY);
  consumed.chainingKey.fill(0);
  return { sendKey, receiveKey };
}

/**
 * Processes a response (whitepaper §5.4.3, initiator side) to the initiation `initiator` made.
 * Checks the receiver index and authenticates the whole transcript; returns the responder's index
 * and the initiator's transport keys, or null for anything invalid (never throws on bad bytes).
 * Only msg[0, 92) is read; mac1/mac2 are checked elsewhere. On success the state is spent.
 */
export function consumeResponse(
  initiator: InitiatorState, local: LocalIdentity, peer: PeerCrypto, msg: Uint8Array,
): { senderIndex: number; keys: SessionKeys } | null {
  if (msg.length < MESSAGE_RESPONSE_SIZE) return null;
  if (msg[0] !== MESSAGE_RESPONSE || (msg[1]! | msg[2]! | msg[3]!) !== 0) return null;
  if (readU32LE(msg, RESPONSE_RECEIVER) !== initiator.localIndex) return null;
  // A clamped private key always has bit 254 set, so all zero can only mean "already used".
  if (constantTimeIsZero(initiator.ephemeralPrivate)) return null;

  const responderEphemeral = msg.subarray(RESPONSE_EPHEMERAL, RESPONSE_EPHEMERAL + KEY_SIZE);
  const ee = x25519(initiator.ephemeralPrivate, responderEphemeral);
  const se = x25519(local.privateKey, responderEphemeral);
  if (ee === null || se === null) return null;
  const { h, ck, key } = mixResponseKeys(
    initiator.hash, initiator.chainingKey, responderEphemeral, ee, se, peer.presharedKey,
  );
  if (openOnce(key, msg, RESPONSE_EMPTY, RESPONSE_EMPTY_SIZE, h) === null) return null;

  const [sendKey, receiveKey] = kdf2(ck, EMPTY);
  initiator.ephemeralPrivate.fill(0);
  return { senderIndex: readU32LE(msg, RESPONSE_SENDER), keys: { sendKey, receiveKey } };
}

/**
 * The responder's costly steps as plain-data jobs, so that a pool of threads can run them while
 * the control thread keeps the peer table, the replay checks and the indexes (engine.ts):
 * `openInitiation` is the `es` X25519, `respond` the ephemeral key and the `ee` and `se` X25519s.
 * Everything in a job or a result survives a structured clone.
 */
export type HandshakeJob =
  | { readonly kind: 'openInitiation'; readonly id: number; readonly local: LocalIdentity; readonly message: Uint8Array }
  | {
    readonly kind: 'respond'; readonly id: number; readonly consumed: ConsumedInitiation;
    readonly remoteStatic: PublicKey; readonly presharedKey: PresharedKey;
  };

export type HandshakeJobResult =
  | { readonly kind: 'openInitiation'; readonly id: number; readonly opened: OpenedInitiation | null }
  | { readonly kind: 'respond'; readonly id: number; readonly response: Uint8Array; readonly keys: SessionKeys };

/** Runs one job; pure apart from drawing the response's ephemeral key. Never throws on bad bytes. */
export function runHandshakeJob(job: HandshakeJob): HandshakeJobResult {
  if (job.kind === 'openInitiation') return { kind: 'openInitiation', id: job.id, opened: openInitiation(job.local, job.message) };
  const response = new Uint8Array(MESSAGE_RESPONSE_SIZE);
  // createResponse reads only the remote static key and the preshared key of the peer.
  const peer: PeerCrypto = { remoteStatic: job.remoteStatic, presharedKey: job.presharedKey, precomputedStaticStatic: EMPTY };
  const keys = createResponse(job.consumed, peer, 0, response);
  return { kind: 'respond', id: job.id, response, keys };
}
