// Transport data messages (whitepaper §5.4.6): seal/open in place with padding, the header layout,
// rejection of wrong keys and counters, and fuzzing of openTransport.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { nobleAead, sodiumAead } from '../../src/wireguard/aead.ts';
import { randomBytes } from '../../src/wireguard/crypto.ts';
import {
  openTransport, paddedLength, sealTransport, transportCounter, transportReceiverIndex,
} from '../../src/wireguard/transport.ts';

const BACKENDS = [sodiumAead, nobleAead];

test('paddedLength rounds up to 16, capped at the MTU like wireguard-go', () => {
  assert.deepEqual([0, 1, 15, 16, 17, 1419, 1420].map((n) => paddedLength(n)), [0, 16, 16, 16, 32, 1424, 1424]);
  assert.equal(paddedLength(1419, 1420), 1420);
  assert.equal(paddedLength(1420, 1420), 1420);
  assert.equal(paddedLength(1401, 1420), 1408);
  assert.equal(paddedLength(1500, 1420), 1500, 'an oversize packet gets no padding (wireguard-go pads 1500 % 1420 = 80 to 80)');
});

test('seal then open round trips in place at boundary lengths, with zero padding', () => {
  for (const aead of BACKENDS) {
    for (const ptLen of [0, 1, 15, 16, 17, 1420, 65535 - 32]) {
      const key = randomBytes(new Uint8Array(32));
      const buf = new Uint8Array(new SharedArrayBuffer(ptLen + 64));
      buf.fill(0xaa); // garbage where the padding goes must not leak out
      const packet = randomBytes(new Uint8Array(ptLen));
      buf.set(packet, 16);
      const counter = 2 ** 40 + ptLen;
      const len = sealTransport(aead, key, 0xdeadbeef, counter, buf, ptLen);
      const padded = paddedLength(ptLen);
      assert.equal(len, 16 + padded + 16);
      assert.deepEqual(buf.subarray(0, 4), Uint8Array.of(4, 0, 0, 0));
      assert.equal(transportReceiverIndex(buf), 0xdeadbeef);
      assert.equal(transportCounter(buf), counter);
      assert.equal(openTransport(aead, key, buf, len), padded, `${aead.name} ${ptLen}`);
      assert.deepEqual(buf.subarray(16, 16 + ptLen), packet);
      assert.deepEqual(buf.subarray(16 + ptLen, 16 + padded), new Uint8Array(padded - ptLen));
    }
  }
});

test('the MTU cap is applied when given', () => {
  const key = randomBytes(new Uint8Array(32));
  const buf = new Uint8Array(1500);
  assert.equal(sealTransport(sodiumAead, key, 1, 0, buf, 1419, 1420), 16 + 1420 + 16);
  assert.equal(openTransport(sodiumAead, key, buf, 1452), 1420);
});

test('both backends produce identical datagrams', () => {
  const key = randomBytes(new Uint8Array(32));
  const packet = randomBytes(new Uint8Array(1000));
  const out = BACKENDS.map((aead) => {
    const buf = new Uint8Array(1100);
    buf.set(packet, 16);
    return buf.subarray(0, sealTransport(aead, key, 5, 12345, buf, 1000));
  });
  assert.deepEqual(out[0], out[1]);
});

test('open rejects a wrong key, a changed counter, tampering and short datagrams', () => {
  for (const aead of BACKENDS) {
    const key = randomBytes(new Uint8Array(32));
    const buf = new Uint8Array(200);
    buf.set(randomBytes(new Uint8Array(100)), 16);
    const len = sealTransport(aead, key, 1, 77, buf, 100);
    const attempt = (mutate: (b: Uint8Array) => void, k = key, l = len): number => {
      const copy = Uint8Array.from(buf);
      mutate(copy);
      return openTransport(aead, k, copy, l);
    };
    assert.equal(attempt(() => {}), 112);
    assert.equal(attempt(() => {}, randomBytes(new Uint8Array(32))), -1);
    assert.equal(attempt((b) => { b[8] = 78; }), -1);
    assert.equal(attempt((b) => { b[15] = 1; }), -1);
    for (let i = 16; i < len; i += 7) assert.equal(attempt((b) => { b[i]! ^= 1; }), -1, `byte ${i}`);
    assert.equal(attempt(() => {}, key, len - 1), -1);
    assert.equal(attempt(() => {}, key, 31), -1);
    assert.equal(attempt(() => {}, key, 201), -1);
    // A counter the caller read already is used as given: the header's opens, any other does not.
    const copy = Uint8Array.from(buf);
    assert.equal(openTransport(aead, key, copy, len, 78), -1);
    copy.set(buf);
    assert.equal(openTransport(aead, key, copy, len, -1), -1);
    copy.set(buf);
    assert.equal(openTransport(aead, key, copy, len, transportCounter(copy)), 112);
  }
});

test('counters of 2^53 and above read as -1 and are dropped', () => {
  const buf = new Uint8Array(48);
  buf.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00], 8);
  assert.equal(transportCounter(buf), Number.MAX_SAFE_INTEGER);
  buf[14] = 0x20;
  assert.equal(transportCounter(buf), -1);
  assert.equal(openTransport(sodiumAead, new Uint8Array(32), buf, 48), -1);
  assert.throws(() => sealTransport(sodiumAead, new Uint8Array(32), 1, 2 ** 53, new Uint8Array(64), 0), RangeError);
});

test('seal refuses a buffer too small for the padded datagram', () => {
  assert.throws(() => sealTransport(sodiumAead, new Uint8Array(32), 1, 0, new Uint8Array(16 + 17 + 16), 17), RangeError);
});

test('fuzz: openTransport never throws on random datagrams', () => {
  const key = randomBytes(new Uint8Array(32));
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat({ max: 320 }), (bytes, len) => {
      assert.equal(openTransport(sodiumAead, key, bytes, len), -1);
      assert.equal(openTransport(nobleAead, key, bytes, len), -1);
    }),
    { numRuns: 3000, interruptAfterTimeLimit: 5_000 },
  );
});
