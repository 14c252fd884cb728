// Message layout constants, the type classifier, little-endian readers, TAI64N and key encodings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError } from '../../src/errors.ts';
import {
  generatePrivateKey, isZeroKey, keyToBase64, keyToHex, parseKeyBase64, parseKeyHex, publicKeyOf, toPrivateKey,
} from '../../src/wireguard/keys.ts';
import * as m from '../../src/wireguard/messages.ts';
import { compareTimestamps, tai64nNow } from '../../src/wireguard/tai64n.ts';

test('field offsets tile each message exactly (whitepaper §5.4)', () => {
  assert.equal(m.INITIATION_MAC2 + 16, 148);
  assert.deepEqual(
    [m.INITIATION_SENDER, m.INITIATION_EPHEMERAL, m.INITIATION_STATIC, m.INITIATION_TIMESTAMP, m.INITIATION_MAC1, m.INITIATION_MAC2],
    [4, 8, 40, 88, 116, 132],
  );
  assert.deepEqual(
    [m.RESPONSE_SENDER, m.RESPONSE_RECEIVER, m.RESPONSE_EPHEMERAL, m.RESPONSE_EMPTY, m.RESPONSE_MAC1, m.RESPONSE_MAC2],
    [4, 8, 12, 44, 60, 76],
  );
  assert.equal(m.RESPONSE_MAC2 + 16, 92);
  assert.equal(m.COOKIE_REPLY_COOKIE + m.COOKIE_REPLY_COOKIE_SIZE, 64);
  assert.deepEqual([m.TRANSPORT_RECEIVER, m.TRANSPORT_COUNTER, m.TRANSPORT_CONTENT], [4, 8, 16]);
});

test('messageType classifies by type byte, reserved zeros and size', () => {
  const buf = new Uint8Array(200);
  const typed = (type: number): Uint8Array => { buf[0] = type; return buf; };
  assert.equal(m.messageType(typed(1), 148), 1);
  assert.equal(m.messageType(typed(1), 147), 0);
  assert.equal(m.messageType(typed(2), 92), 2);
  assert.equal(m.messageType(typed(2), 148), 0);
  assert.equal(m.messageType(typed(3), 64), 3);
  assert.equal(m.messageType(typed(4), 32), 4);
  assert.equal(m.messageType(typed(4), 31), 0);
  assert.equal(m.messageType(typed(4), 200), 4);
  assert.equal(m.messageType(typed(4), 201), 0, 'len beyond the buffer');
  assert.equal(m.messageType(typed(5), 64), 0);
  assert.equal(m.messageType(typed(0), 64), 0);
  buf[0] = 4;
  buf[2] = 1;
  assert.equal(m.messageType(buf, 100), 0, 'reserved bytes must be zero');
  assert.equal(m.messageType(new Uint8Array(3), 3), 0);
});

test('fuzz: messageType only ever returns 0..4 and never throws', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: -5, max: 305 }), (bytes, len) => {
    const type = m.messageType(bytes, len);
    assert.ok(type >= 0 && type <= 4);
  }), { numRuns: 2000 });
});

test('u32/u64 little-endian readers and writers', () => {
  const buf = new Uint8Array(16);
  m.writeU32LE(buf, 1, 0xfedcba98);
  assert.deepEqual(buf.subarray(1, 5), Uint8Array.of(0x98, 0xba, 0xdc, 0xfe));
  assert.equal(m.readU32LE(buf, 1), 0xfedcba98);
  m.writeU64LE(buf, 8, 2 ** 52 + 3);
  assert.deepEqual(buf.subarray(8), Uint8Array.of(3, 0, 0, 0, 0, 0, 0x10, 0));
  assert.equal(m.readU64LE(buf, 8), 2 ** 52 + 3);
  buf[15] = 1;
  assert.equal(m.readU64LE(buf, 8), -1);
});

test('TAI64N: 2^62 + 10 + seconds, big endian, nanoseconds whitened to 2^24 steps', () => {
  const out = new Uint8Array(12);
  tai64nNow(1_700_000_000_999, out);
  // 0x400000000000000a + 1700000000 = 0x400000006553f10a
  assert.equal(Buffer.from(out.subarray(0, 8)).toString('hex'), '400000006553f10a');
  const nanos = Buffer.from(out).readUInt32BE(8);
  assert.equal(nanos & 0xffffff, 0);
  assert.ok(nanos <= 999_000_000 && nanos > 999_000_000 - 0x1000000);
  assert.equal(nanos, 989_855_744); // 999 ms = 999000000 ns, low 24 bits cleared
});

test('compareTimestamps orders timestamps like time', () => {
  const stamp = (ms: number): Uint8Array => tai64nNow(ms, new Uint8Array(12));
  assert.ok(compareTimestamps(stamp(2_000), stamp(1_000)) > 0);
  assert.ok(compareTimestamps(stamp(1_000), stamp(2_000)) < 0);
  assert.equal(compareTimestamps(stamp(1_000), stamp(1_005)), 0, 'within one whitening step');
  assert.ok(compareTimestamps(stamp(1_000_000), stamp(999_999)) > 0);
  assert.ok(compareTimestamps(stamp(1_017), stamp(1_016)) > 0, 'the nanosecond field orders within a second');
  assert.throws(() => tai64nNow(-1, new Uint8Array(12)), RangeError);
});

test('keys: generated keys are clamped; hex and base64 round trip', () => {
  const priv = generatePrivateKey();
  assert.equal(priv[0]! & 7, 0);
  assert.equal(priv[31]! & 0xc0, 0x40);
  const pub = publicKeyOf(priv);
  assert.deepEqual(parseKeyHex(keyToHex(pub), 'public key'), pub);
  assert.deepEqual(parseKeyHex(keyToHex(pub).toUpperCase(), 'public key'), pub);
  assert.deepEqual(parseKeyBase64(keyToBase64(pub), 'public key'), pub);
  assert.match(keyToHex(pub), /^[0-9a-f]{64}$/);
  assert.match(keyToBase64(pub), /^[A-Za-z0-9+/]{43}=$/);
});

test('keys: RFC 7748 §6.1 public key from its private key, in both encodings', () => {
  const priv = toPrivateKey(parseKeyHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'k'));
  assert.equal(keyToHex(publicKeyOf(priv)), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  assert.equal(keyToBase64(publicKeyOf(priv)), 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=');
});

test('keys: malformed text is a ConfigError that does not echo the key', () => {
  const secret = 'a'.repeat(63);
  for (const bad of [secret, 'a'.repeat(65), 'g'.repeat(64), '']) {
    assert.throws(() => parseKeyHex(bad, 'private key'), (e: unknown) =>
      e instanceof ConfigError && e.code === 'ZTGATE_ERR_CONFIG' && !e.message.includes(secret) && e.message.includes('private key'));
  }
  const good = keyToBase64(new Uint8Array(32).fill(1));
  for (const bad of [good.slice(0, 43), good + '=', good.replace('=', 'A'), 'AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQF=', '!'.repeat(44)]) {
    assert.throws(() => parseKeyBase64(bad, 'public key'), ConfigError, bad);
  }
});

test('isZeroKey', () => {
  assert.equal(isZeroKey(new Uint8Array(32)), true);
  const k = new Uint8Array(32);
  k[31] = 1;
  assert.equal(isZeroKey(k), false);
});
