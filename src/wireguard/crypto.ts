// WireGuard's cryptographic primitives (whitepaper §5.4): BLAKE2s HASH and MAC, HMAC-BLAKE2s, the
// HKDF-style KDF1/2/3, X25519 (libsodium) and XChaCha20-Poly1305 for cookie replies (§5.4.7).
// The handshake uses these a handful of times per handshake, so they may allocate; the per-packet
// AEAD lives in aead.ts.

import { createRequire } from 'node:module';
import { blake2sInto, hmacBlake2sInto } from './blake2s.ts';
import { COOKIE_NONCE_SIZE, KEY_SIZE, MAC_SIZE } from './constants.ts';

/** The part of sodium-native (which ships no type declarations) that ztgate uses. */
export interface SodiumBinding {
  randombytes_buf(buf: Uint8Array): void;
  sodium_memcmp(a: Uint8Array, b: Uint8Array): boolean;
  crypto_scalarmult(q: Uint8Array, n: Uint8Array, p: Uint8Array): void;
  crypto_scalarmult_base(q: Uint8Array, n: Uint8Array): void;
  crypto_aead_chacha20poly1305_ietf_encrypt(
    c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array,
  ): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(
    m: Uint8Array, nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array,
  ): number;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
    c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array,
  ): number;
  crypto_aead_xchacha20poly1305_ietf_decrypt(
    m: Uint8Array, nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array,
  ): number;
}

export const sodium = createRequire(import.meta.url)('sodium-native') as SodiumBinding;

/** HASH(input): BLAKE2s-256 over the concatenation of the parts (whitepaper §5.4). */
export function hash(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(KEY_SIZE);
  blake2sInto(out, 0, KEY_SIZE, undefined, ...parts);
  return out;
}

/** MAC(key, input): keyed BLAKE2s with a 16-byte output (whitepaper §5.4). */
export function mac(key: Uint8Array, input: Uint8Array): Uint8Array {
  const out = new Uint8Array(MAC_SIZE);
  blake2sInto(out, 0, MAC_SIZE, key, input);
  return out;
}

/** BLAKE2s with an optional key and output length; exposed for the RFC 7693 self-test. */
export function blake2sDigest(input: Uint8Array, key: Uint8Array | undefined, outputLength: number): Uint8Array {
  const out = new Uint8Array(outputLength);
  blake2sInto(out, 0, outputLength, key, input);
  return out;
}

/** HMAC(key, input): RFC 2104 HMAC over BLAKE2s-256 (block size 64), the parts concatenated. */
export function hmacBlake2s(key: Uint8Array, ...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(KEY_SIZE);
  hmacBlake2sInto(out, 0, key, ...parts);
  return out;
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

/** KDF1(key, input) = τ1, with τ0 = HMAC(key, input), τ1 = HMAC(τ0, 0x1) (whitepaper §5.4). */
export function kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
  const prk = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(prk, ONE);
  prk.fill(0);
  return t1;
}

/** KDF2(key, input) = (τ1, τ2), τ2 = HMAC(τ0, τ1 ‖ 0x2). */
export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const prk = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(prk, ONE);
  const t2 = hmacBlake2s(prk, t1, TWO);
  prk.fill(0);
  return [t1, t2];
}

/** KDF3(key, input) = (τ1, τ2, τ3), τ3 = HMAC(τ0, τ2 ‖ 0x3). */
export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const prk = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(prk, ONE);
  const t2 = hmacBlake2s(prk, t1, TWO);
  const t3 = hmacBlake2s(prk, t2, THREE);
  prk.fill(0);
  return [t1, t2, t3];
}

/**
 * DH(private, public): X25519 (RFC 7748). Returns null when the result is all zero, i.e. the public
 * key is a low-order point: wireguard-go (noise-helpers.go sharedSecret) rejects those too, and
 * libsodium reports them as an error, which we turn into null so no bad input can throw.
 */
export function x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null {
  if (privateKey.length !== KEY_SIZE || publicKey.length !== KEY_SIZE) {
    throw new RangeError('crypto: X25519 keys must be 32 bytes');
  }
  const shared = new Uint8Array(KEY_SIZE);
  try {
    sodium.crypto_scalarmult(shared, privateKey, publicKey);
  } catch {
    return null;
  }
  return constantTimeIsZero(shared) ? null : shared;
}

/** DH-Pubkey(private): X25519 with the base point 9. */
export function x25519Base(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== KEY_SIZE) throw new RangeError('crypto: X25519 keys must be 32 bytes');
  const publicKey = new Uint8Array(KEY_SIZE);
  sodium.crypto_scalarmult_base(publicKey, privateKey);
  return publicKey;
}

/** Fills `out` with bytes from libsodium's CSPRNG. */
export function randomBytes(out: Uint8Array): Uint8Array {
  sodium.randombytes_buf(out);
  return out;
}

/** True when every byte is zero; the running time depends only on the length. */
export function constantTimeIsZero(bytes: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i]!;
  return acc === 0;
}

/** Constant-time equality of two equal-length byte strings (false for different lengths). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && sodium.sodium_memcmp(a, b);
}

/** XAEAD(key, nonce, plaintext, ad): XChaCha20-Poly1305, used only for cookie replies (§5.4.7). */
export function xaeadSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array, out: Uint8Array): void {
  checkXaeadArgs(key, nonce);
  if (out.length !== plaintext.length + 16) throw new RangeError('crypto: XAEAD output must be plaintext + 16 bytes');
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out, plaintext, ad, null, nonce, key);
}

/** Opens an XChaCha20-Poly1305 box into `out`; false (never a throw) when it does not authenticate. */
export function xaeadOpen(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array, out: Uint8Array): boolean {
  checkXaeadArgs(key, nonce);
  if (ciphertext.length < 16 || out.length !== ciphertext.length - 16) return false;
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out, null, ciphertext, ad, nonce, key);
    return true;
  } catch {
    return false;
  }
}

function checkXaeadArgs(key: Uint8Array, nonce: Uint8Array): void {
  if (key.length !== KEY_SIZE) throw new RangeError('crypto: XAEAD key must be 32 bytes');
  if (nonce.length !== COOKIE_NONCE_SIZE) throw new RangeError('crypto: XAEAD nonce must be 24 bytes');
}
