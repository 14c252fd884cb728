// STUN (RFC 8489) for the ICE agent and the TURN client: recognising STUN on the shared socket,
// parsing without ever throwing, building messages, and the short-/long-term integrity checks.
//
// werift-ice 0.2.3's codec does the attribute value encodings (XOR addresses, ERROR-CODE, the
// integers and strings) and the header/attribute serialisation. What it gets wrong for our use is
// worked around here rather than patched in node_modules:
// - its parser keeps the *last* copy of a repeated attribute and decodes attributes that follow
//   MESSAGE-INTEGRITY, so an on-path attacker could append an unauthenticated USERNAME or
//   XOR-MAPPED-ADDRESS that replaces the signed one. We walk the attributes ourselves: the first
//   occurrence wins (RFC 8489 §14) and nothing after MESSAGE-INTEGRITY except FINGERPRINT counts.
// - it compares HMACs with Buffer.equals (variable time) and cannot verify before it knows the
//   key, while ICE needs USERNAME first to pick the password. We compute and check
//   MESSAGE-INTEGRITY and FINGERPRINT here (timingSafeEqual), over the raw received bytes.
// - its serialiser appends attributes it does not know (DONT-FRAGMENT, say) after
//   MESSAGE-INTEGRITY and FINGERPRINT; we append those ourselves before signing.
// - it masks nothing in ERROR-CODE's class byte; we take the low 3 bits (RFC 8489 §14.8).
// The exact werift entry points relied on are exercised by test/unit/ice-stun.test.ts.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { Message } from 'werift-ice/lib/ice-server/src/stun/message.js';
import { unpackXorAddress, type AttributeKey, type AttributePair } from 'werift-ice/lib/ice-server/src/stun/attributes.js';
import type { classes, methods } from 'werift-ice/lib/ice-server/src/stun/const.js';
import { canonicalTransportAddress, type TransportAddress } from './address.ts';

export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_HEADER_SIZE = 20;
export const STUN_TRANSACTION_ID_SIZE = 12;
const ATTRIBUTE_HEADER_SIZE = 4;
const INTEGRITY_SIZE = 20; // HMAC-SHA1
const FINGERPRINT_XOR = 0x5354554e; // "STUN", RFC 8489 §14.7

/** Methods (RFC 8489 §18.2, RFC 8656 §17). */
export const StunMethod = {
  binding: 0x001,
  allocate: 0x003,
  refresh: 0x004,
  send: 0x006,
  data: 0x007,
  createPermission: 0x008,
  channelBind: 0x009,
} as const;

export type StunClass = 'request' | 'indication' | 'success' | 'error';
const CLASS_BITS: Readonly<Record<StunClass, number>> = { request: 0x000, indication: 0x010, success: 0x100, error: 0x110 };

/** Attribute types (RFC 8489 §18.3, RFC 8445 §16.1, RFC 8656 §18). */
export const StunAttribute = {
  mappedAddress: 0x0001,
  username: 0x0006,
  messageIntegrity: 0x0008,
  errorCode: 0x0009,
  unknownAttributes: 0x000a,
  channelNumber: 0x000c,
  lifetime: 0x000d,
  xorPeerAddress: 0x0012,
  data: 0x0013,
  realm: 0x0014,
  nonce: 0x0015,
  xorRelayedAddress: 0x0016,
  requestedAddressFamily: 0x0017,
  evenPort: 0x0018,
  requestedTransport: 0x0019,
  dontFragment: 0x001a,
  messageIntegritySha256: 0x001c,
  xorMappedAddress: 0x0020,
  priority: 0x0024,
  useCandidate: 0x0025,
  software: 0x8022,
  fingerprint: 0x8028,
  iceControlled: 0x8029,
  iceControlling: 0x802a,
} as const;

/** 24 lowercase hex digits: the 96-bit transaction id, usable as a map key. */
export type TransactionId = string & { readonly __brand: 'StunTransactionId' };

export function transactionIdFromBytes(bytes: Uint8Array): TransactionId {
  if (bytes.length !== STUN_TRANSACTION_ID_SIZE) throw new RangeError(`stun: a transaction id is 12 bytes, got ${bytes.length}`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('hex') as TransactionId;
}

export interface RawAttribute {
  readonly type: number;
  /** A view into the message bytes. */
  readonly value: Uint8Array;
}

export type FingerprintState = 'valid' | 'invalid' | 'absent';

export interface StunMessage {
  readonly method: number;
  readonly messageClass: StunClass;
  readonly transactionId: TransactionId;
  /** Attributes before MESSAGE-INTEGRITY (or all of them when it is absent), first occurrence of each type only. */
  readonly attributes: readonly RawAttribute[];
  /** Offset of the MESSAGE-INTEGRITY attribute header, or -1 when the message carries none. */
  readonly integrityOffset: number;
  readonly fingerprint: FingerprintState;
  /** The whole message; a view of the caller's buffer, valid while the caller keeps it. */
  readonly bytes: Uint8Array;
}

/**
 * Whether `buf[0..len)` is a STUN message by RFC 7983's first-byte rule (0–3) plus the magic
 * cookie, a length field that is a multiple of 4 and matches the datagram. WireGuard's type 1–3
 * messages start with bytes 1–3 too, but their reserved zeros give length 0 against sizes
 * 148/92/64, so they never pass.
 */
export function isStun(buf: Uint8Array, len: number): boolean {
  if (len < STUN_HEADER_SIZE || len > buf.length) return false;
  if (buf[0] > 3) return false;
  if (((buf[4] << 24) | (buf[5] << 16) | (buf[6] << 8) | buf[7]) >>> 0 !== STUN_MAGIC_COOKIE) return false;
  const length = (buf[2] << 8) | buf[3];
  return length % 4 === 0 && STUN_HEADER_SIZE + length === len;
}

function readU16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

function messageClassOf(type: number): StunClass {
  switch (type & 0x110) {
    case 0x000: return 'request';
    case 0x010: return 'indication';
    case 0x100: return 'success';
    default: return 'error';
  }
}

/** The method with the class bits squeezed out (RFC 8489 §5, figure 3). */
function methodOf(type: number): number {
  return (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
}

function typeOf(method: number, cls: StunClass): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | CLASS_BITS[cls];
}

/**
 * Parses a STUN message. Returns null for anything that is not one or whose attributes do not
 * fit (truncated, overrunning, FINGERPRINT not last): the caller counts and drops it. Never throws.
 */
export function parseStun(bytes: Uint8Array): StunMessage | null {
  if (!isStun(bytes, bytes.length)) return null;
  const attributes: RawAttribute[] = [];
  const seen = new Set<number>();
  let integrityOffset = -1;
  let fingerprint: FingerprintState = 'absent';
  let at = STUN_HEADER_SIZE;
  while (at < bytes.length) {
    if (at + ATTRIBUTE_HEADER_SIZE > bytes.length) return null;
    const type = readU16(bytes, at);
    const length = readU16(bytes, at + 2);
    const valueStart = at + ATTRIBUTE_HEADER_SIZE;
    const next = valueStart + length + ((4 - (length % 4)) % 4);
    if (next > bytes.length) return null;
    if (fingerprint !== 'absent') return null; // FINGERPRINT must be the last attribute (§14.7)
    if (type === StunAttribute.fingerprint) {
      if (length !== 4) return null;
      fingerprint = fingerprintOf(bytes, at) === readU32(bytes, valueStart) ? 'valid' : 'invalid';
    } else if (integrityOffset < 0) {
      if (type === StunAttribute.messageIntegrity) {
        if (length !== INTEGRITY_SIZE) return null;
        integrityOffset = at;
      } else if (!seen.has(type)) {
        seen.add(type);
        attributes.push({ type, value: bytes.subarray(valueStart, valueStart + length) });
      }
    }
    // Anything else after MESSAGE-INTEGRITY is outside its protection and ignored (§14.5).
    at = next;
  }
  const type = readU16(bytes, 0);
  return {
    method: methodOf(type),
    messageClass: messageClassOf(type),
    transactionId: transactionIdFromBytes(bytes.subarray(8, STUN_HEADER_SIZE)),
    attributes,
    integrityOffset,
    fingerprint,
    bytes,
  };
}

function readU32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
}

/** Copy of the first `end` bytes with the header length set as if the message ended `extra` bytes later. */
function prefixWithLength(bytes: Uint8Array, end: number, extra: number): Buffer {
  const copy = Buffer.from(bytes.subarray(0, end));
  copy.writeUInt16BE(end - STUN_HEADER_SIZE + extra, 2);
  return copy;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** FINGERPRINT value for a message whose FINGERPRINT attribute header starts at `end` (§14.7). */
function fingerprintOf(bytes: Uint8Array, end: number): number {
  return (crc32(prefixWithLength(bytes, end, ATTRIBUTE_HEADER_SIZE + 4)) ^ FINGERPRINT_XOR) >>> 0;
}

/** HMAC-SHA1 for a message whose MESSAGE-INTEGRITY attribute header starts at `end` (§14.5). */
function integrityOf(bytes: Uint8Array, end: number, key: Uint8Array): Buffer {
  return createHmac('sha1', key).update(prefixWithLength(bytes, end, ATTRIBUTE_HEADER_SIZE + INTEGRITY_SIZE)).digest();
}

/** Short-term credential key: the password itself (RFC 8489 §9.1.1; ICE passwords are ASCII). */
export function shortTermKey(password: string): Uint8Array {
  return Buffer.from(password, 'utf8');
}

/**
 * Long-term credential key MD5(username ":" realm ":" password) (RFC 8489 §9.2.2). The inputs
 * must already be OpaqueString-prepared; TURN relays hand out plain ASCII in practice.
 */
export function longTermKey(username: string, realm: string, password: string): Uint8Array {
  return createHash('md5').update(`${username}:${realm}:${password}`, 'utf8').digest();
}

/** Whether the message carries a MESSAGE-INTEGRITY that matches `key` (constant-time compare). */
export function verifyIntegrity(message: StunMessage, key: Uint8Array): boolean {
  if (message.integrityOffset < 0) return false;
  const at = message.integrityOffset + ATTRIBUTE_HEADER_SIZE;
  const received = message.bytes.subarray(at, at + INTEGRITY_SIZE);
  return timingSafeEqual(integrityOf(message.bytes, message.integrityOffset, key), received);
}

export function getAttribute(message: StunMessage, type: number): Uint8Array | undefined {
  for (const attribute of message.attributes) if (attribute.type === type) return attribute.value;
  return undefined;
}

function asBuffer(view: Uint8Array): Buffer {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

export function getString(message: StunMessage, type: number): string | undefined {
  const value = getAttribute(message, type);
  return value === undefined ? undefined : asBuffer(value).toString('utf8');
}

export function getUint32(message: StunMessage, type: number): number | undefined {
  const value = getAttribute(message, type);
  return value === undefined || value.length !== 4 ? undefined : readU32(value, 0);
}

export function getUint64(message: StunMessage, type: number): bigint | undefined {
  const value = getAttribute(message, type);
  return value === undefined || value.length !== 8 ? undefined : asBuffer(value).readBigUInt64BE(0);
}

/** XOR-MAPPED-ADDRESS, XOR-RELAYED-ADDRESS or XOR-PEER-ADDRESS; undefined when absent or malformed. */
export function getXorAddress(message: StunMessage, type: number): TransportAddress | undefined {
  const value = getAttribute(message, type);
  if (value === undefined) return undefined;
  try {
    const [address, port] = unpackXorAddress(asBuffer(value), asBuffer(message.bytes.subarray(8, STUN_HEADER_SIZE)));
    return canonicalTransportAddress(address, port) ?? undefined;
  } catch {
    return undefined;
  }
}

export interface StunErrorCode {
  readonly code: number;
  readonly reason: string;
}

export function getErrorCode(message: StunMessage): StunErrorCode | undefined {
  const value = getAttribute(message, StunAttribute.errorCode);
  if (value === undefined || value.length < 4) return undefined;
  const code = (value[2] & 0x07) * 100 + value[3];
  if (code < 300 || code > 699) return undefined;
  return { code, reason: asBuffer(value.subarray(4)).toString('utf8') };
}

/**
 * Comprehension-required attribute types (0x0000–0x7FFF) this message has that are not in
 * `understood` (RFC 8489 §6.3.1: answer a request with 420, ignore such a response).
 */
export function unknownRequiredAttributes(message: StunMessage, understood: ReadonlySet<number>): number[] {
  const unknown: number[] = [];
  for (const { type } of message.attributes) if (type < 0x8000 && !understood.has(type)) unknown.push(type);
  return unknown;
}

export interface StunEncodeOptions {
  /** Adds MESSAGE-INTEGRITY keyed with this (shortTermKey or longTermKey). */
  readonly integrityKey?: Uint8Array;
  /** Adds FINGERPRINT (always for ICE, RFC 8445 §7.2.2). */
  readonly fingerprint?: boolean;
}

/** Builds one STUN message; attributes go out in the order they are added. */
export class StunMessageBuilder {
  private readonly method: number;
  private readonly messageClass: StunClass;
  private readonly transactionId: Buffer;
  private readonly known: AttributePair[] = [];
  private readonly raw: RawAttribute[] = [];

  constructor(method: number, messageClass: StunClass, transactionId: TransactionId) {
    if (!/^[0-9a-f]{24}$/.test(transactionId)) throw new RangeError('stun: transaction id must be 24 lowercase hex digits');
    this.method = method;
    this.messageClass = messageClass;
    this.transactionId = Buffer.from(transactionId, 'hex');
  }

  private add(key: AttributeKey, value: unknown): this {
    if (this.raw.length > 0) throw new RangeError('stun: add werift-encoded attributes before raw ones');
    if (this.known.some(([k]) => k === key)) throw new RangeError(`stun: ${key} added twice`);
    this.known.push([key, value]);
    return this;
  }

  username(value: string): this { return this.add('USERNAME', value); }
  realm(value: string): this { return this.add('REALM', value); }
  nonce(value: Uint8Array): this { return this.add('NONCE', Buffer.from(value)); }
  software(value: string): this { return this.add('SOFTWARE', value); }
  priority(value: number): this { return this.add('PRIORITY', value >>> 0); }
  useCandidate(): this { return this.add('USE-CANDIDATE', null); }
  iceControlling(tieBreaker: bigint): this { return this.add('ICE-CONTROLLING', BigInt.asUintN(64, tieBreaker)); }
  iceControlled(tieBreaker: bigint): this { return this.add('ICE-CONTROLLED', BigInt.asUintN(64, tieBreaker)); }
  lifetime(seconds: number): this { return this.add('LIFETIME', seconds >>> 0); }
  /** REQUESTED-TRANSPORT: protocol number in the top byte (17 = UDP), RFC 8656 §18.7. */
  requestedTransport(protocol: number): this { return this.add('REQUESTED-TRANSPORT', (protocol & 0xff) << 24 >>> 0); }
  /** CHANNEL-NUMBER (RFC 8656 §18.1): the number in the top 16 bits, then RFFU zeros. */
  channelNumber(channel: number): this { return this.add('CHANNEL-NUMBER', channel & 0xffff); }
  data(value: Uint8Array): this { return this.add('DATA', Buffer.from(value)); }
  errorCode(code: number, reason: string): this { return this.add('ERROR-CODE', [code, reason]); }
  xorMappedAddress(address: TransportAddress): this { return this.add('XOR-MAPPED-ADDRESS', [address.address, address.port]); }
  xorRelayedAddress(address: TransportAddress): this { return this.add('XOR-RELAYED-ADDRESS', [address.address, address.port]); }
  xorPeerAddress(address: TransportAddress): this { return this.add('XOR-PEER-ADDRESS', [address.address, address.port]); }
  unknownAttributes(types: readonly number[]): this { return this.add('UNKNOWN-ATTRIBUTES', [...types]); }

  /** An attribute werift does not encode (DONT-FRAGMENT, say), as raw value bytes. */
  rawAttribute(type: number, value: Uint8Array): this {
    if (type === StunAttribute.messageIntegrity || type === StunAttribute.fingerprint) {
      throw new RangeError('stun: MESSAGE-INTEGRITY and FINGERPRINT come from the encode options');
    }
    this.raw.push({ type, value: value.slice() });
    return this;
  }

  encode(options: StunEncodeOptions = {}): Uint8Array {
    // werift's Message takes the combined type word and splits it back with the same masks, so
    // the method and class go in already interleaved.
    const type = typeOf(this.method, this.messageClass);
    const message = new Message((type & 0x3eef) as methods, (type & 0x0110) as classes, this.transactionId, this.known.map(([k, v]) => [k, v] as AttributePair));
    const parts: Uint8Array[] = [message.bytes];
    for (const { type: attributeType, value } of this.raw) parts.push(encodeAttribute(attributeType, value));
    let bytes: Buffer = Buffer.concat(parts);
    bytes.writeUInt16BE(bytes.length - STUN_HEADER_SIZE, 2);
    if (options.integrityKey !== undefined) {
      bytes = appendAttribute(bytes, StunAttribute.messageIntegrity, integrityOf(bytes, bytes.length, options.integrityKey));
    }
    if (options.fingerprint === true) {
      const value = Buffer.alloc(4);
      value.writeUInt32BE(fingerprintOf(bytes, bytes.length), 0);
      bytes = appendAttribute(bytes, StunAttribute.fingerprint, value);
    }
    return bytes;
  }
}

function encodeAttribute(type: number, value: Uint8Array): Buffer {
  const padded = Buffer.alloc(ATTRIBUTE_HEADER_SIZE + value.length + ((4 - (value.length % 4)) % 4));
  padded.writeUInt16BE(type, 0);
  padded.writeUInt16BE(value.length, 2);
  padded.set(value, ATTRIBUTE_HEADER_SIZE);
  return padded;
}

function appendAttribute(bytes: Uint8Array, type: number, value: Uint8Array): Buffer {
  const out = Buffer.concat([bytes, encodeAttribute(type, value)]);
  out.writeUInt16BE(out.length - STUN_HEADER_SIZE, 2);
  return out;
}
