// The byte layout of WireGuard's four messages (whitepaper §5.4.2–§5.4.7). Every field is little
// endian; the first byte is the type and the next three are zero.
//
//  initiation (148)  | type 0 | sender 4 | ephemeral 8 | static 40 (32+16) | timestamp 88 (12+16) | mac1 116 | mac2 132 |
//  response (92)     | type 0 | sender 4 | receiver 8 | ephemeral 12 | empty 44 (0+16) | mac1 60 | mac2 76 |
//  cookie reply (64) | type 0 | receiver 4 | nonce 8 (24) | cookie 32 (16+16) |
//  transport (≥32)   | type 0 | receiver 4 | counter 8 (u64) | encrypted packet 16 ... ‖ tag (16) |

import {
  AEAD_TAG_SIZE, KEY_SIZE, MAC_SIZE, MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION,
  MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE, MESSAGE_TRANSPORT,
  MESSAGE_TRANSPORT_MIN_SIZE, COOKIE_NONCE_SIZE, TIMESTAMP_SIZE,
} from './constants.ts';

export const OFFSET_TYPE = 0;
/** Three bytes that must be zero. */
export const OFFSET_RESERVED = 1;

export const INITIATION_SENDER = 4;
export const INITIATION_EPHEMERAL = 8;
export const INITIATION_STATIC = INITIATION_EPHEMERAL + KEY_SIZE; // 40
export const INITIATION_STATIC_SIZE = KEY_SIZE + AEAD_TAG_SIZE; // 48
export const INITIATION_TIMESTAMP = INITIATION_STATIC + INITIATION_STATIC_SIZE; // 88
export const INITIATION_TIMESTAMP_SIZE = TIMESTAMP_SIZE + AEAD_TAG_SIZE; // 28
export const INITIATION_MAC1 = INITIATION_TIMESTAMP + INITIATION_TIMESTAMP_SIZE; // 116
export const INITIATION_MAC2 = INITIATION_MAC1 + MAC_SIZE; // 132

export const RESPONSE_SENDER = 4;
export const RESPONSE_RECEIVER = 8;
export const RESPONSE_EPHEMERAL = 12;
export const RESPONSE_EMPTY = RESPONSE_EPHEMERAL + KEY_SIZE; // 44
export const RESPONSE_EMPTY_SIZE = AEAD_TAG_SIZE; // 16
export const RESPONSE_MAC1 = RESPONSE_EMPTY + RESPONSE_EMPTY_SIZE; // 60
export const RESPONSE_MAC2 = RESPONSE_MAC1 + MAC_SIZE; // 76

export const COOKIE_REPLY_RECEIVER = 4;
export const COOKIE_REPLY_NONCE = 8;
export const COOKIE_REPLY_COOKIE = COOKIE_REPLY_NONCE + COOKIE_NONCE_SIZE; // 32
export const COOKIE_REPLY_COOKIE_SIZE = MAC_SIZE + AEAD_TAG_SIZE; // 32

export const TRANSPORT_RECEIVER = 4;
export const TRANSPORT_COUNTER = 8;
export const TRANSPORT_CONTENT = 16;

/** In any handshake message mac1 starts 32 bytes and mac2 16 bytes before its end (§5.4.4). */
export const MAC1_FROM_END = 2 * MAC_SIZE;
export const MAC2_FROM_END = MAC_SIZE;

/**
 * The WireGuard message type of datagram buf[0, len), or 0 when it is not a well-formed WireGuard
 * message: unknown type, non-zero reserved bytes, or a size that type never has.
 */
export function messageType(buf: Uint8Array, len: number): number {
  if (!(len >= 4 && len <= buf.length)) return 0;
  if ((buf[1]! | buf[2]! | buf[3]!) !== 0) return 0;
  const type = buf[0]!;
  switch (type) {
    case MESSAGE_INITIATION:
      return len === MESSAGE_INITIATION_SIZE ? type : 0;
    case MESSAGE_RESPONSE:
      return len === MESSAGE_RESPONSE_SIZE ? type : 0;
    case MESSAGE_COOKIE_REPLY:
      return len === MESSAGE_COOKIE_REPLY_SIZE ? type : 0;
    case MESSAGE_TRANSPORT:
      return len >= MESSAGE_TRANSPORT_MIN_SIZE ? type : 0;
    default:
      return 0;
  }
}

/** Writes the type byte and the three zero bytes that follow it. */
export function writeMessageType(buf: Uint8Array, type: number): void {
  buf[0] = type;
  buf[1] = 0;
  buf[2] = 0;
  buf[3] = 0;
}

export function readU32LE(buf: Uint8Array, offset: number): number {
  return (buf[offset]! | (buf[offset + 1]! << 8) | (buf[offset + 2]! << 16) | (buf[offset + 3]! << 24)) >>> 0;
}

export function writeU32LE(buf: Uint8Array, offset: number, value: number): void {
  buf[offset] = value;
  buf[offset + 1] = value >>> 8;
  buf[offset + 2] = value >>> 16;
  buf[offset + 3] = value >>> 24;
}

/**
 * Reads a little-endian u64 as a number, or -1 when it is 2^53 or more (not exactly representable
 * as a number). Honest peers never get there: they rekey every REKEY_AFTER_TIME (2 minutes), and
 * 2^53 packets would take centuries at any real packet rate.
 */
export function readU64LE(buf: Uint8Array, offset: number): number {
  const high = readU32LE(buf, offset + 4);
  if (high >= 0x200000) return -1;
  return high * 2 ** 32 + readU32LE(buf, offset);
}

/** Writes 0 ≤ value < 2^53 as a little-endian u64. */
export function writeU64LE(buf: Uint8Array, offset: number, value: number): void {
  const low = value >>> 0;
  writeU32LE(buf, offset, low);
  writeU32LE(buf, offset + 4, (value - low) / 2 ** 32);
}
