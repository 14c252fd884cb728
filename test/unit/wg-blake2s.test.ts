// The allocation-free BLAKE2s (src/wireguard/blake2s.ts) against OpenSSL's BLAKE2s-256 and HMAC
// over it (node:crypto), for inputs split into parts at every kind of block boundary.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { blake2sInto, hmacBlake2sInto } from '../../src/wireguard/blake2s.ts';

const parts = fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 6 });

test('unkeyed BLAKE2s-256 of concatenated parts equals OpenSSL blake2s256', () => {
  fc.assert(fc.property(parts, (chunks) => {
    const out = new Uint8Array(32);
    blake2sInto(out, 0, 32, undefined, ...chunks);
    const h = createHash('blake2s256');
    for (const c of chunks) h.update(c);
    assert.deepEqual(Buffer.from(out), h.digest());
  }), { numRuns: 300 });
});

test('HMAC-BLAKE2s equals OpenSSL HMAC with blake2s256, short and long keys', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 150 }), parts, fc.nat(8), (key, chunks, offset) => {
    const out = new Uint8Array(32 + offset);
    hmacBlake2sInto(out, offset, key, ...chunks);
    const h = createHmac('blake2s256', key);
    for (const c of chunks) h.update(c);
    assert.deepEqual(Buffer.from(out.subarray(offset)), h.digest());
  }), { numRuns: 300 });
});

test('output lengths and keys outside RFC 7693 limits are RangeErrors', () => {
  const out = new Uint8Array(64);
  assert.throws(() => blake2sInto(out, 0, 0, undefined), RangeError);
  assert.throws(() => blake2sInto(out, 0, 33, undefined), RangeError);
  assert.throws(() => blake2sInto(out, 0, 32, new Uint8Array(33)), RangeError);
  assert.throws(() => blake2sInto(out, 40, 32, undefined), RangeError);
  assert.throws(() => hmacBlake2sInto(out, 33, new Uint8Array(32)), RangeError);
});
