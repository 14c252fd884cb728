// AEAD(key, counter, plaintext, ad): ChaCha20-Poly1305 (RFC 8439) with WireGuard's 96-bit nonce,
// 32 zero bits followed by the 64-bit little-endian counter (whitepaper §5.4). Two interchangeable
// backends: libsodium through sodium-native (the fast one) and @noble/ciphers (pure JS, the off
// switch: ZTGATE_AEAD=noble). Both take (buffer, offset, length) so callers can seal and open in
// place inside shared packet slots.

import { createRequire } from 'node:module';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { AEAD_TAG_SIZE, KEY_SIZE } from './constants.ts';

/**
 * Detached ChaCha20-Poly1305 (the tag gets a view of its own, so sealing in place needs one view of
 * the content), as sodium-native's native binding takes it: ad is `undefined` when absent, and
 * decryption returns libsodium's status (0 authenticated, -1 not) instead of throwing. The binding
 * checks view sizes with C asserts, so every call here passes exactly sized views.
 */
interface DetachedAead {
  readonly crypto_aead_chacha20poly1305_ietf_encrypt_detached: (
    c: Uint8Array, mac: Uint8Array, m: Uint8Array, ad: Uint8Array | undefined, npub: Uint8Array, k: Uint8Array,
  ) => number;
  readonly crypto_aead_chacha20poly1305_ietf_decrypt_detached: (
    m: Uint8Array, c: Uint8Array, mac: Uint8Array, ad: Uint8Array | undefined, npub: Uint8Array, k: Uint8Array,
  ) => number;
}

/** sodium-native's public wrappers of the same two functions (they assert in JS and throw on a bad tag). */
interface SodiumPublicAead {
  crypto_aead_chacha20poly1305_ietf_encrypt(
    c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array,
  ): number;
  crypto_aead_chacha20poly1305_ietf_encrypt_detached(
    c: Uint8Array, mac: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array,
  ): number;
  crypto_aead_chacha20poly1305_ietf_decrypt_detached(
    m: Uint8Array, nsec: null, c: Uint8Array, mac: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array,
  ): void;
}

const NONCE_SIZE = 12;
const TWO_POW_32 = 2 ** 32;

const requireCjs = createRequire(import.meta.url);
const sodiumPublic = requireCjs('sodium-native') as SodiumPublicAead;

/** The public wrappers shaped as the binding: correct, but each call allocates (and a bad tag throws). */
const wrappedAead: DetachedAead = {
  crypto_aead_chacha20poly1305_ietf_encrypt_detached: (c, mac, m, ad, npub, k) =>
    sodiumPublic.crypto_aead_chacha20poly1305_ietf_encrypt_detached(c, mac, m, ad ?? null, null, npub, k),
  crypto_aead_chacha20poly1305_ietf_decrypt_detached: (m, c, mac, ad, npub, k) => {
    try {
      sodiumPublic.crypto_aead_chacha20poly1305_ietf_decrypt_detached(m, null, c, mac, ad ?? null, npub, k);
      return 0;
    } catch {
      return -1;
    }
  },
};

/**
 * sodium-native's native binding, called directly: its JS wrappers allocate 32 heap bytes per call
 * and build an Error (with a stack trace) for every forged packet. The binding is not a documented
 * interface, so it is used only if it loads and agrees with the public wrapper on a known sealing
 * and on rejecting a forged tag; otherwise the wrappers serve (ZTGATE_AEAD=noble stays the off switch).
 */
function loadDetachedAead(): DetachedAead {
  let binding: DetachedAead;
  try {
    binding = requireCjs('sodium-native/binding.js') as DetachedAead;
    const key = Uint8Array.from({ length: KEY_SIZE }, (_, i) => i);
    const nonce = Uint8Array.from({ length: NONCE_SIZE }, (_, i) => 0x40 + i);
    const message = Uint8Array.from({ length: 64 }, (_, i) => i * 3);
    const expected = new Uint8Array(message.length + AEAD_TAG_SIZE);
    sodiumPublic.crypto_aead_chacha20poly1305_ietf_encrypt(expected, message, null, null, nonce, key);
    const sealed = new Uint8Array(expected.length);
    const content = sealed.subarray(0, message.length);
    const tag = sealed.subarray(message.length);
    content.set(message);
    binding.crypto_aead_chacha20poly1305_ietf_encrypt_detached(content, tag, content, undefined, nonce, key);
    if (Buffer.compare(sealed, expected) !== 0) return wrappedAead;
    const opened = new Uint8Array(message.length);
    if (binding.crypto_aead_chacha20poly1305_ietf_decrypt_detached(opened, content, tag, undefined, nonce, key) !== 0) return wrappedAead;
    if (Buffer.compare(opened, message) !== 0) return wrappedAead;
    tag[0]! ^= 1;
    if (binding.crypto_aead_chacha20poly1305_ietf_decrypt_detached(opened, content, tag, undefined, nonce, key) === 0) return wrappedAead;
  } catch {
    return wrappedAead;
  }
  return binding;
}

const sodium = loadDetachedAead();
// The two functions moved off the binding into an object of their own: the binding's exports object
// has hundreds of properties (V8 keeps it as a dictionary), so reading a function from it per packet
// was a generic property load (LoadIC) on every call. The binding's functions ignore their receiver.
const detached = {
  encrypt: sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached,
  decrypt: sodium.crypto_aead_chacha20poly1305_ietf_decrypt_detached,
};

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

/** Entries in each of a buffer's two view tables (a power of two). */
const VIEW_CACHE_ENTRIES = 64;

/**
 * Views of one buffer that sodium-native needs (it takes whole typed arrays, no offsets), kept so
 * the per-packet path does not create a `subarray` per call. Two direct-mapped tables: content views
 * by length and tag views by offset, both in 16-byte units (packets are padded to 16, whitepaper
 * §5.4.6), so the sizes a flow mixes (full-size packets, the MTU-capped size, ACKs) each keep their
 * entry in a slot: only sizes 1 KiB apart share one. A colliding view replaces the entry, so memory
 * stays bounded at 2 × VIEW_CACHE_ENTRIES views per buffer (about 13 KB) whatever sizes arrive.
 */
class ViewCache {
  readonly #buffer: Uint8Array;
  readonly #contentOffsets = new Int32Array(VIEW_CACHE_ENTRIES).fill(-1);
  readonly #contentLengths = new Int32Array(VIEW_CACHE_ENTRIES);
  readonly #contentViews: Uint8Array[] = [];
  readonly #tagOffsets = new Int32Array(VIEW_CACHE_ENTRIES).fill(-1);
  readonly #tagViews: Uint8Array[] = [];

  constructor(buffer: Uint8Array) {
    this.#buffer = buffer;
    for (let i = 0; i < VIEW_CACHE_ENTRIES; i++) {
      this.#contentViews.push(buffer);
      this.#tagViews.push(buffer);
    }
  }

  /** buffer[off, off + len). */
  content(off: number, len: number): Uint8Array {
    const entry = ((len + 15) >>> 4) & (VIEW_CACHE_ENTRIES - 1);
    if (this.#contentOffsets[entry] === off && this.#contentLengths[entry] === len) return this.#contentViews[entry]!;
    const view = this.#buffer.subarray(off, off + len);
    this.#contentOffsets[entry] = off;
    this.#contentLengths[entry] = len;
    this.#contentViews[entry] = view;
    return view;
  }

  /** buffer[off, off + AEAD_TAG_SIZE). */
  tag(off: number): Uint8Array {
    const entry = ((off + 15) >>> 4) & (VIEW_CACHE_ENTRIES - 1);
    if (this.#tagOffsets[entry] === off) return this.#tagViews[entry]!;
    const view = this.#buffer.subarray(off, off + AEAD_TAG_SIZE);
    this.#tagOffsets[entry] = off;
    this.#tagViews[entry] = view;
    return view;
  }
}

/**
 * One view cache per buffer seen. Packet slots are long-lived views (Slab.payloadView returns the
 * same object every call), so their caches are reused; a buffer that is dropped takes its cache with it.
 */
const viewCaches = new WeakMap<Uint8Array, ViewCache>();

function viewsOf(buffer: Uint8Array): ViewCache {
  let cache = viewCaches.get(buffer);
  if (cache === undefined) {
    cache = new ViewCache(buffer);
    viewCaches.set(buffer, cache);
  }
  return cache;
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
    const outViews = viewsOf(out);
    const ciphertext = outViews.content(outOff, ptLen);
    const message = plaintext === out && ptOff === outOff ? ciphertext : viewsOf(plaintext).content(ptOff, ptLen);
    detached.encrypt(
      ciphertext, outViews.tag(outOff + ptLen), message, ad ?? undefined, sodiumNonce, key,
    );
    return ptLen + AEAD_TAG_SIZE;
  },
  open(key, counter, ciphertext, ctOff, ctLen, ad, out, outOff) {
    checkKey(key);
    if (ctLen < AEAD_TAG_SIZE) return -1;
    checkRange(ciphertext, ctOff, ctLen, 'ciphertext');
    const contentLen = ctLen - AEAD_TAG_SIZE;
    checkRange(out, outOff, contentLen, 'output');
    writeNonce(sodiumNonce, counter);
    const inViews = viewsOf(ciphertext);
    const content = inViews.content(ctOff, contentLen);
    const message = ciphertext === out && ctOff === outOff ? content : viewsOf(out).content(outOff, contentLen);
    const status = detached.decrypt(
      message, content, inViews.tag(ctOff + contentLen), ad ?? undefined, sodiumNonce, key,
    );
    return status === 0 ? contentLen : -1;
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
