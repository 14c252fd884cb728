// Curve25519 keys as WireGuard uses them (whitepaper §5.4, wg(8)): 32 bytes, branded so a private
// key can never be passed where a public or preshared key is expected, with the two text forms the
// tools use (lowercase hex on the UAPI socket, base64 in wg(8) configuration).

import { Buffer } from 'node:buffer';
import { ConfigError } from '../errors.ts';
import { constantTimeIsZero, randomBytes, x25519Base } from './crypto.ts';
import { KEY_SIZE } from './constants.ts';

export type PrivateKey = Uint8Array & { readonly __brand: 'PrivateKey' };
export type PublicKey = Uint8Array & { readonly __brand: 'PublicKey' };
export type PresharedKey = Uint8Array & { readonly __brand: 'PresharedKey' };

/** Clamps a Curve25519 scalar in place (RFC 7748 §5), exactly as `wg genkey` does. */
function clamp(key: Uint8Array): void {
  key[0]! &= 248;
  key[31] = (key[31]! & 127) | 64;
}

/** A fresh private key from the system CSPRNG, clamped. */
export function generatePrivateKey(): PrivateKey {
  const key = randomBytes(new Uint8Array(KEY_SIZE));
  clamp(key);
  return key as PrivateKey;
}

/** The public key of a private key (X25519 with the base point; the scalar is clamped inside). */
export function publicKeyOf(privateKey: PrivateKey): PublicKey {
  return x25519Base(privateKey) as PublicKey;
}

function copyKey(bytes: Uint8Array, what: string): Uint8Array {
  if (bytes.length !== KEY_SIZE) throw new RangeError(`keys: ${what} must be ${KEY_SIZE} bytes, got ${bytes.length}`);
  return Uint8Array.from(bytes);
}

/** Brands a copy of 32 bytes as a private key (the bytes are used as given, as wg(8) does). */
export function toPrivateKey(bytes: Uint8Array): PrivateKey {
  return copyKey(bytes, 'a private key') as PrivateKey;
}

export function toPublicKey(bytes: Uint8Array): PublicKey {
  return copyKey(bytes, 'a public key') as PublicKey;
}

export function toPresharedKey(bytes: Uint8Array): PresharedKey {
  return copyKey(bytes, 'a preshared key') as PresharedKey;
}

/** The all-zero preshared key, which WireGuard uses when none is configured (whitepaper §5.4.2). */
export function zeroPresharedKey(): PresharedKey {
  return new Uint8Array(KEY_SIZE) as PresharedKey;
}

const HEX_KEY = /^[0-9a-fA-F]{64}$/;
// 43 base64 characters carry 258 bits, so the last one must leave its low two bits zero (wg(8)
// rejects any other spelling of the same key), followed by one '=' of padding.
const BASE64_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/**
 * Parses a key as 64 hex digits (the UAPI form). The text itself is never echoed in the error:
 * it may be a private key.
 */
export function parseKeyHex(text: string, what: string): Uint8Array {
  if (!HEX_KEY.test(text)) throw new ConfigError(`keys: ${what} must be 64 hexadecimal characters`);
  return new Uint8Array(Buffer.from(text, 'hex'));
}

/** Parses a key in wg(8)'s base64 form: 44 characters ending in '=', canonical. */
export function parseKeyBase64(text: string, what: string): Uint8Array {
  if (!BASE64_KEY.test(text)) throw new ConfigError(`keys: ${what} must be 44 base64 characters ending in '='`);
  return new Uint8Array(Buffer.from(text, 'base64'));
}

function asBuffer(key: Uint8Array): Buffer {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength);
}

export function keyToHex(key: Uint8Array): string {
  return asBuffer(key).toString('hex');
}

export function keyToBase64(key: Uint8Array): string {
  return asBuffer(key).toString('base64');
}

/** True for the all-zero key (how UAPI says "none"); constant time so it leaks nothing of a secret. */
export function isZeroKey(key: Uint8Array): boolean {
  return constantTimeIsZero(key);
}
