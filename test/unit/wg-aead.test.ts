// ChaCha20-Poly1305 backends: the RFC 8439 §2.8.2 vector through both libraries, WireGuard's
// nonce layout, and sodium and noble agreeing byte for byte at boundary lengths, misaligned offsets,
// in place and on SharedArrayBuffer memory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { aeadBackend, nobleAead, sodiumAead } from '../../src/wireguard/aead.ts';
import type { AeadBackend } from '../../src/wireguard/aead.ts';
import { randomBytes, sodium } from '../../src/wireguard/crypto.ts';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const BACKENDS: readonly AeadBackend[] = [sodiumAead, nobleAead];

test('RFC 8439 §2.8.2 AEAD vector through libsodium and @noble/ciphers', () => {
  const key = hex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
  const nonce = hex('070000004041424344454647');
  const ad = hex('50515253c0c1c2c3c4c5c6c7');
  const plaintext = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const expected = 'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b' +
    '1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de5' +
    '76d26586cec64b6116' + '1ae10b594f09e26a7e902ecbd0600691';
  const viaSodium = new Uint8Array(plaintext.length + 16);
  sodium.crypto_aead_chacha20poly1305_ietf_encrypt(viaSodium, plaintext, ad, null, nonce, key);
  assert.equal(Buffer.from(viaSodium).toString('hex'), expected);
  assert.equal(Buffer.from(chacha20poly1305(key, nonce, ad).encrypt(plaintext)).toString('hex'), expected);
});

test('the nonce is 4 zero bytes then the 64-bit little-endian counter (whitepaper §5.4)', () => {
  const key = randomBytes(new Uint8Array(32));
  const plaintext = randomBytes(new Uint8Array(40));
  const cases: [number, string][] = [
    [0, '000000000000000000000000'],
    [1, '000000000100000000000000'],
    [0x01020304, '000000000403020100000000'],
    [2 ** 32 + 5, '000000000500000001000000'],
    [Number.MAX_SAFE_INTEGER, '00000000ffffffffffff1f00'],
  ];
  for (const [counter, nonceHex] of cases) {
    const reference = chacha20poly1305(key, hex(nonceHex)).encrypt(plaintext);
    for (const backend of BACKENDS) {
      const out = new Uint8Array(56);
      assert.equal(backend.seal(key, counter, plaintext, 0, 40, null, out, 0), 56);
      assert.deepEqual(out, reference, `${backend.name} counter ${counter}`);
    }
  }
  for (const backend of BACKENDS) {
    for (const bad of [-1, 2 ** 53, 1.5, Number.NaN]) {
      assert.throws(() => backend.seal(key, bad, plaintext, 0, 40, null, new Uint8Array(56), 0), RangeError);
    }
  }
});

const LENGTHS = [0, 1, 15, 16, 17, 63, 64, 65, 1420, 65535];

test('sodium and noble agree at boundary lengths and misaligned offsets, on SharedArrayBuffer views', () => {
  for (const ptLen of LENGTHS) {
    for (const offset of [0, 1, 3, 16]) {
      const key = randomBytes(new Uint8Array(32));
      const counter = Math.floor(Math.random() * 2 ** 40);
      const ad = ptLen % 2 === 0 ? randomBytes(new Uint8Array(ptLen % 50)) : null;
      const plaintext = randomBytes(new Uint8Array(ptLen));
      const sealed: Uint8Array[] = [];
      for (const backend of BACKENDS) {
        const shared = new Uint8Array(new SharedArrayBuffer(offset + ptLen + 16 + 7));
        shared.set(plaintext, offset);
        assert.equal(backend.seal(key, counter, shared, offset, ptLen, ad, shared, offset), ptLen + 16);
        sealed.push(shared.slice(offset, offset + ptLen + 16));
        // Open with the other backend, in place, and expect the plaintext back.
        const other = backend === sodiumAead ? nobleAead : sodiumAead;
        assert.equal(other.open(key, counter, shared, offset, ptLen + 16, ad, shared, offset), ptLen);
        assert.deepEqual(shared.subarray(offset, offset + ptLen), plaintext);
      }
      assert.deepEqual(sealed[0], sealed[1], `length ${ptLen} offset ${offset}`);
    }
  }
});

test('out of place: seal and open between different buffers and offsets', () => {
  for (const backend of BACKENDS) {
    const key = randomBytes(new Uint8Array(32));
    const plaintext = randomBytes(new Uint8Array(100));
    const out = new Uint8Array(200);
    assert.equal(backend.seal(key, 9, plaintext, 5, 50, null, out, 33), 66);
    const back = new Uint8Array(80);
    assert.equal(backend.open(key, 9, out, 33, 66, null, back, 7), 50);
    assert.deepEqual(back.subarray(7, 57), plaintext.subarray(5, 55));
  }
});

test('open rejects a wrong key, counter, AD, any flipped bit and short input, returning -1', () => {
  for (const backend of BACKENDS) {
    const key = randomBytes(new Uint8Array(32));
    const ad = Uint8Array.of(1, 2, 3);
    const plaintext = randomBytes(new Uint8Array(33));
    const sealed = new Uint8Array(49);
    backend.seal(key, 77, plaintext, 0, 33, ad, sealed, 0);
    const scratch = new Uint8Array(49);
    const open = (k: Uint8Array, counter: number, bytes: Uint8Array, a: Uint8Array | null): number =>
      backend.open(k, counter, bytes, 0, bytes.length, a, scratch, 0);
    assert.equal(open(key, 77, sealed, ad), 33);
    assert.equal(open(randomBytes(new Uint8Array(32)), 77, sealed, ad), -1);
    assert.equal(open(key, 78, sealed, ad), -1);
    assert.equal(open(key, 77, sealed, null), -1);
    assert.equal(open(key, 77, sealed, Uint8Array.of(1, 2, 4)), -1);
    for (let bit = 0; bit < sealed.length * 8; bit += 3) {
      const bad = Uint8Array.from(sealed);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      assert.equal(open(key, 77, bad, ad), -1, `${backend.name} bit ${bit}`);
    }
    assert.equal(backend.open(key, 77, sealed, 0, 15, ad, scratch, 0), -1);
    assert.equal(backend.open(key, 77, sealed, 0, 0, ad, scratch, 0), -1);
  }
});

test('out-of-bounds ranges are programming errors (RangeError), not silent truncation', () => {
  const key = new Uint8Array(32);
  for (const backend of BACKENDS) {
    assert.throws(() => backend.seal(key, 0, new Uint8Array(10), 0, 10, null, new Uint8Array(25), 0), RangeError);
    assert.throws(() => backend.seal(key, 0, new Uint8Array(10), 5, 10, null, new Uint8Array(64), 0), RangeError);
    assert.throws(() => backend.open(key, 0, new Uint8Array(40), 0, 40, null, new Uint8Array(10), 0), RangeError);
    assert.throws(() => backend.seal(new Uint8Array(16), 0, new Uint8Array(1), 0, 1, null, new Uint8Array(17), 0), RangeError);
  }
});

test('aeadBackend picks sodium by default, noble on request, and rejects unknown names', () => {
  assert.equal(aeadBackend('').name, 'sodium');
  assert.equal(aeadBackend('sodium').name, 'sodium');
  assert.equal(aeadBackend('noble').name, 'noble');
  assert.throws(() => aeadBackend('openssl'), RangeError);
  const saved = process.env['ZTGATE_AEAD'];
  try {
    process.env['ZTGATE_AEAD'] = 'noble';
    assert.equal(aeadBackend().name, 'noble');
    delete process.env['ZTGATE_AEAD'];
    assert.equal(aeadBackend().name, 'sodium');
  } finally {
    if (saved === undefined) delete process.env['ZTGATE_AEAD'];
    else process.env['ZTGATE_AEAD'] = saved;
  }
});
