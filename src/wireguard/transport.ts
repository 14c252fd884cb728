// Transport data messages (whitepaper §5.4.6), the per-packet hot path. Everything happens in the
// caller's buffer, in place, with no allocation:
//
//   buf: [0, 16) header | [16, 16 + ptLen) packet | zero padding | 16-byte Poly1305 tag
//   header: type 4, three zero bytes, receiver index (u32 LE), counter (u64 LE)
//
// The counter doubles as the AEAD nonce; the header itself is not authenticated (the AEAD has no
// associated data here), so receivers trust it only after the tag checks out.

import type { AeadBackend } from './aead.ts';
import { AEAD_TAG_SIZE, MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_MIN_SIZE, PADDING_MULTIPLE } from './constants.ts';
import {
  TRANSPORT_CONTENT, TRANSPORT_COUNTER, TRANSPORT_RECEIVER, readU32LE, readU64LE, writeMessageType,
  writeU32LE, writeU64LE,
} from './messages.ts';

/**
 * The padded length of a ptLen-byte packet: the next multiple of 16 (whitepaper §5.4.6), but, as
 * wireguard-go does (send.go calculatePaddingSize), never past the tunnel MTU, so a full-size
 * packet does not grow past what the outer path was sized for. mtu 0 means no cap.
 */
export function paddedLength(ptLen: number, mtu = 0): number {
  const rounded = (ptLen + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1);
  if (mtu > 0 && rounded > mtu) return Math.max(ptLen, mtu);
  return rounded;
}

/**
 * Encrypts the packet at buf[16, 16 + ptLen) in place and writes the header. Pads with zeros as
 * paddedLength(ptLen, mtu) says. Returns the datagram length: 16 + padded length + 16.
 * `receiverIndex` may be the u32 or its signed 32-bit form (`| 0`): the same bytes are written.
 */
export function sealTransport(
  aead: AeadBackend, key: Uint8Array, receiverIndex: number, counter: number, buf: Uint8Array, ptLen: number,
  mtu = 0,
): number {
  const padded = paddedLength(ptLen, mtu);
  const datagramLen = TRANSPORT_CONTENT + padded + AEAD_TAG_SIZE;
  if (!(ptLen >= 0) || datagramLen > buf.length) {
    throw new RangeError(`transport: a ${ptLen}-byte packet needs ${datagramLen} bytes of buffer, have ${buf.length}`);
  }
  // At most 15 bytes: a loop, because fill() is a C++ builtin whose call costs more than the stores.
  for (let i = TRANSPORT_CONTENT + ptLen; i < TRANSPORT_CONTENT + padded; i++) buf[i] = 0;
  writeMessageType(buf, MESSAGE_TRANSPORT);
  writeU32LE(buf, TRANSPORT_RECEIVER, receiverIndex);
  writeU64LE(buf, TRANSPORT_COUNTER, counter);
  aead.seal(key, counter, buf, TRANSPORT_CONTENT, padded, null, buf, TRANSPORT_CONTENT);
  return datagramLen;
}

/**
 * Decrypts the datagram buf[0, datagramLen) in place. The plaintext (with its padding) is left at
 * buf[16, 16 + result). Returns -1 when the datagram is too short, its counter is out of range or
 * it does not authenticate under `key`; on failure the content bytes may have been overwritten.
 * The caller has already checked the type (messageType) and found the key by receiver index, and
 * must check transportCounter(buf) against its replay window only after this succeeds. A caller
 * that has read the counter already (to check the window first) passes it as `counter`.
 */
export function openTransport(
  aead: AeadBackend, key: Uint8Array, buf: Uint8Array, datagramLen: number, counter: number = transportCounter(buf),
): number {
  if (!(datagramLen >= MESSAGE_TRANSPORT_MIN_SIZE && datagramLen <= buf.length)) return -1;
  if (counter < 0) return -1;
  return aead.open(key, counter, buf, TRANSPORT_CONTENT, datagramLen - TRANSPORT_CONTENT, null, buf, TRANSPORT_CONTENT);
}

/** The datagram's counter, or -1 when it is 2^53 or more (such datagrams are dropped). */
export function transportCounter(buf: Uint8Array): number {
  return readU64LE(buf, TRANSPORT_COUNTER);
}

/** The datagram's receiver index: the key slot the sender means, our local index. */
export function transportReceiverIndex(buf: Uint8Array): number {
  return readU32LE(buf, TRANSPORT_RECEIVER);
}

/**
 * The receiver index as a signed 32-bit integer (`transportReceiverIndex(buf) | 0`), for per-packet
 * lookups: it is always a small integer to V8, where half of all u32 indexes are boxed doubles.
 */
export function transportReceiverIndexInt32(buf: Uint8Array): number {
  const o = TRANSPORT_RECEIVER;
  return buf[o]! | (buf[o + 1]! << 8) | (buf[o + 2]! << 16) | (buf[o + 3]! << 24);
}
