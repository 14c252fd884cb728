// AEAD(key, counter, plaintext, ad): ChaCha20-Poly1305 (RFC 8439) with WireGuard's 96-bit nonce,
// 32 zero bits followed by the 64-bit little-endian counter (whitepaper §5.4). Two interchangeable
// backends: libsodium through sodium-native (the fast one) and @noble/ciphers (pure JS, the off
// switch: ZTGATE_AEAD=noble). Both take (buffer, offset, length) so callers can seal and open in
// place inside shared packet slots.

import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { AEAD_TAG_SIZE, KEY_SIZE } from './constants.ts';
import { sodium } from './crypto.ts';

export interface AeadBackend {
  readonly name: 'sodium' | 'noble';
  /**
   * Seals plaintext[ptOff, ptOff + ptLen) into out[outOff, outOff + ptLen + 16) as ciphertext ‖ tag.
   * In place (out is the plaintext's buffer at the same offset) works. Returns the bytes written.
   */
  seal(
    key: Uint8Array, counter: number, plaintext: Uint8Array, ptOff: number, ptLen: number,
    ad: Uint8Array | null, out: Uint8Array, outOff: number,
  ): number;
  /**
   * Opens ciphertext[ctOff, ctOff + ctLen) (ciphertext ‖ tag) into out[outOff, ...). Returns the
   * plaintext length, or -1 when it does not authenticate (never throws for bad ciphertext).
   * In place works.
   */
  open(
    key: Uint8Array, counter: number, ciphertext: Uint8Array, ctOff: number, ctLen: number,
    ad: Uint8Array | null, out: Uint8Array, outOff: number,
  ): number;
}

const NONCE_SIZE = 12;
const TWO_POW_32 = 2 ** 32;

/** Writes WireGuard's nonce for `counter` (0 ≤ counter < 2^53) into the 12-byte scratch. */
function writeNonce(nonce: Uint8Array, counter: number): void {
  if (!(counter >= 0 && counter <= Number.MAX_SAFE_INTEGER) || Math.floor(counter) !== counter) {
    throw new RangeError(`aead: counter must be an integer in [0, 2^53), got ${counter}`);
  }
  const low = counter >>> 0;
  const high = (counter - low) / TWO_POW_32;
  nonce[4] = low;
  nonce[5] = low >>> 8;
  nonce[6] = low >>> 16;
  nonce[7] = low >>> 24;
  nonce[8] = high;
  nonce[9] = high >>> 8;
  nonce[10] = high >>> 16;
  nonce[11] = high >>> 24;
}

function checkRange(buf: Uint8Array, off: number, len: number, what: string): void {
  if (!(off >= 0 && len >= 0 && off + len <= buf.length)) {
    throw new RangeError(`aead: ${what} [${off}, ${off + len}) is outside a buffer of ${buf.length} bytes`);
  }
}

function checkKey(key: Uint8Array): void {
  if (key.length !== KEY_SIZE) throw new RangeError('aead: key must be 32 bytes');
}

// Each backend keeps one nonce scratch: a call finishes synchronously before the next can start, and
// every worker thread has its own module instance, so the scratch is never shared.
const sodiumNonce = new Uint8Array(NONCE_SIZE);

export const sodiumAead: AeadBackend = {
  name: 'sodium',
  seal(key, counter, plaintext, ptOff, ptLen, ad, out, outOff) {
    checkKey(key);
    checkRange(plaintext, ptOff, ptLen, 'plaintext');
    checkRange(out, outOff, ptLen + AEAD_TAG_SIZE, 'output');
    writeNonce(sodiumNonce, counter);
    return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
      out.subarray(outOff, outOff + ptLen + AEAD_TAG_SIZE),
      plaintext.subarray(ptOff, ptOff + ptLen),
      ad, null, sodiumNonce, key,
    );
  },
  open(key, counter, ciphertext, ctOff, ctLen, ad, out, outOff) {
    checkKey(key);
    if (ctLen < AEAD_TAG_SIZE) return -1;
    checkRange(ciphertext, ctOff, ctLen, 'ciphertext');
    checkRange(out, outOff, ctLen - AEAD_TAG_SIZE, 'output');
    writeNonce(sodiumNonce, counter);
    try {
      return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
        out.subarray(outOff, outOff + ctLen - AEAD_TAG_SIZE), null,
        ciphertext.subarray(ctOff, ctOff + ctLen),
        ad, sodiumNonce, key,
      );
    } catch {
      // sodium-native reports a failed tag check by throwing; here that is an ordinary drop.
      return -1;
    }
  },
};

const nobleNonce = new Uint8Array(NONCE_SIZE);

export const nobleAead: AeadBackend = {
  name: 'noble',
  seal(key, counter, plaintext, ptOff, ptLen, ad, out, outOff) {
    checkKey(key);
    checkRange(plaintext, ptOff, ptLen, 'plaintext');
    checkRange(out, outOff, ptLen + AEAD_TAG_SIZE, 'output');
    writeNonce(nobleNonce, counter);
    chacha20poly1305(key, nobleNonce, ad ?? undefined).encrypt(
      plaintext.subarray(ptOff, ptOff + ptLen),
      out.subarray(outOff, outOff + ptLen + AEAD_TAG_SIZE),
    );
    return ptLen + AEAD_TAG_SIZE;
  },
  open(key, counter, ciphertext, ctOff, ctLen, ad, out, outOff) {
    checkKey(key);
    if (ctLen < AEAD_TAG_SIZE) return -1;
    checkRange(ciphertext, ctOff, ctLen, 'ciphertext');
    checkRange(out, outOff, ctLen - AEAD_TAG_SIZE, 'output');
    writeNonce(nobleNonce, counter);
    try {
      chacha20poly1305(key, nobleNonce, ad ?? undefined).decrypt(
        ciphertext.subarray(ctOff, ctOff + ctLen),
        out.subarray(outOff, outOff + ctLen - AEAD_TAG_SIZE),
      );
    } catch {
      return -1;
    }
    return ctLen - AEAD_TAG_SIZE;
  },
};

/**
 * The backend named by `name`, else by the ZTGATE_AEAD environment variable, else sodium.
 * ZTGATE_AEAD=noble is the off switch for the native code path.
 */
export function aeadBackend(name: string | undefined = process.env['ZTGATE_AEAD']): AeadBackend {
  switch (name) {
    case undefined:
    case '':
    case 'sodium':
      return sodiumAead;
    case 'noble':
      return nobleAead;
    default:
      throw new RangeError(`aead: unknown backend '${name}' (expected 'sodium' or 'noble')`);
  }
}
