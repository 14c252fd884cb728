// Known-answer tests for WireGuard's primitives: BLAKE2s (RFC 7693), HMAC-BLAKE2s and the KDFs
// (wireguard-go kdf_test.go vectors), X25519 (RFC 7748), XChaCha20-Poly1305 round trips.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  blake2sDigest, constantTimeEqual, hash, hmacBlake2s, kdf1, kdf2, kdf3, mac, x25519, x25519Base, xaeadOpen,
  xaeadSeal,
} from '../../src/wireguard/crypto.ts';
import { CONSTRUCTION, IDENTIFIER } from '../../src/wireguard/constants.ts';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('BLAKE2s-256("abc") matches RFC 7693 Appendix B', () => {
  assert.equal(toHex(hash(new TextEncoder().encode('abc'))),
    '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982');
});

test('BLAKE2s keyed and unkeyed, all output sizes: RFC 7693 Appendix E self-test', () => {
  // The RFC's deterministic input generator (a Fibonacci-like sequence in 32-bit arithmetic).
  const sequence = (length: number, seed: number): Uint8Array => {
    const out = new Uint8Array(length);
    let a = Math.imul(0xdead4bad, seed) >>> 0;
    let b = 1;
    for (let i = 0; i < length; i++) {
      const t = (a + b) >>> 0;
      a = b;
      b = t;
      out[i] = t >>> 24;
    }
    return out;
  };
  const parts: Uint8Array[] = [];
  for (const outLen of [16, 20, 28, 32]) {
    for (const inLen of [0, 3, 64, 65, 255, 1024]) {
      const input = sequence(inLen, inLen);
      parts.push(blake2sDigest(input, undefined, outLen));
      parts.push(blake2sDigest(input, sequence(outLen, outLen), outLen));
    }
  }
  assert.equal(toHex(hash(...parts)), '6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe');
});

test('the handshake seeds Ci = HASH(CONSTRUCTION), Hi = HASH(Ci ‖ IDENTIFIER) have their published values', () => {
  const encoder = new TextEncoder();
  const ci = hash(encoder.encode(CONSTRUCTION));
  assert.equal(toHex(ci), '60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36');
  assert.equal(toHex(hash(ci, encoder.encode(IDENTIFIER))), '2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3');
});

test('MAC is keyed BLAKE2s with a 16-byte output', () => {
  const key = hex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
  const input = new TextEncoder().encode('wireguard');
  assert.equal(mac(key, input).length, 16);
  assert.deepEqual(mac(key, input), blake2sDigest(input, key, 16));
  assert.notDeepEqual(mac(key, input), blake2sDigest(input, key, 32).subarray(0, 16));
});

// wireguard-go device/kdf_test.go: KDF1/2/3 share the prefix of the same outputs.
const KDF_VECTORS = [
  {
    key: '746573742d6b6579', input: '746573742d696e707574',
    t0: '6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633',
    t1: 'df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a',
    t2: 'fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24',
  },
  {
    key: '776972656775617264', input: '776972656775617264',
    t0: '491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8',
    t1: '1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f',
    t2: '31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160',
  },
  {
    key: '', input: '',
    t0: '8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0',
    t1: '58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e',
    t2: '0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e',
  },
];

test('KDF1, KDF2, KDF3 match the wireguard-go kdf_test.go vectors', () => {
  for (const v of KDF_VECTORS) {
    const key = hex(v.key);
    const input = hex(v.input);
    const [a, b, c] = kdf3(key, input);
    assert.deepEqual([toHex(a), toHex(b), toHex(c)], [v.t0, v.t1, v.t2]);
    const [d, e] = kdf2(key, input);
    assert.deepEqual([toHex(d), toHex(e)], [v.t0, v.t1]);
    assert.equal(toHex(kdf1(key, input)), v.t0);
  }
});

test('HMAC-BLAKE2s: the parts are concatenated, and the KDF is built from it', () => {
  const key = hex('746573742d6b6579');
  const prk = hmacBlake2s(key, hex('746573742d'), hex('696e707574'));
  assert.deepEqual(prk, hmacBlake2s(key, hex('746573742d696e707574')));
  assert.equal(toHex(hmacBlake2s(prk, Uint8Array.of(1))), KDF_VECTORS[0]!.t0);
});

test('X25519 matches RFC 7748 §5.2 and §6.1', () => {
  assert.equal(toHex(x25519(
    hex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'),
    hex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c'),
  )!), 'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552');
  assert.equal(toHex(x25519(
    hex('4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d'),
    hex('e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493'),
  )!), '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957');

  const alicePrivate = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const bobPrivate = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
  const alicePublic = x25519Base(alicePrivate);
  const bobPublic = x25519Base(bobPrivate);
  assert.equal(toHex(alicePublic), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  assert.equal(toHex(bobPublic), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  assert.equal(toHex(x25519(alicePrivate, bobPublic)!), shared);
  assert.equal(toHex(x25519(bobPrivate, alicePublic)!), shared);
});

test('X25519 returns null for low-order points (all-zero shared secret) instead of throwing', () => {
  const scalar = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const lowOrder = [
    '0000000000000000000000000000000000000000000000000000000000000000',
    '0100000000000000000000000000000000000000000000000000000000000000',
    'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
    'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  ];
  for (const point of lowOrder) assert.equal(x25519(scalar, hex(point)), null, point);
  assert.throws(() => x25519(scalar, new Uint8Array(31)), RangeError);
});

test('constantTimeEqual compares contents and lengths', () => {
  assert.equal(constantTimeEqual(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 3)), true);
  assert.equal(constantTimeEqual(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 4)), false);
  assert.equal(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3)), false);
});

test('XChaCha20-Poly1305 seals and opens, and rejects any change', () => {
  const key = hash(Uint8Array.of(1));
  const nonce = new Uint8Array(24).fill(7);
  const plaintext = new Uint8Array(16).fill(9);
  const ad = Uint8Array.of(1, 2, 3);
  const sealed = new Uint8Array(32);
  xaeadSeal(key, nonce, plaintext, ad, sealed);
  const opened = new Uint8Array(16);
  assert.equal(xaeadOpen(key, nonce, sealed, ad, opened), true);
  assert.deepEqual(opened, plaintext);
  assert.equal(xaeadOpen(key, nonce, sealed, Uint8Array.of(1, 2, 4), opened), false);
  for (let i = 0; i < sealed.length; i++) {
    const bad = Uint8Array.from(sealed);
    bad[i]! ^= 0x01;
    assert.equal(xaeadOpen(key, nonce, bad, ad, opened), false, `byte ${i}`);
  }
  assert.equal(xaeadOpen(key, nonce, sealed.subarray(0, 15), ad, new Uint8Array(0)), false);
});
