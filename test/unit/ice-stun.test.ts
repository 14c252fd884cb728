// STUN layer: RFC 5769 test vectors (decode, integrity with short- and long-term credentials,
// FINGERPRINT, encode), the workarounds over werift-ice, and fuzzing that parsing never throws.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import {
  getAttribute, getErrorCode, getString, getUint32, getUint64, getXorAddress, isStun, longTermKey, parseStun,
  shortTermKey, StunAttribute, StunMessageBuilder, StunMethod, transactionIdFromBytes, unknownRequiredAttributes,
  verifyIntegrity, type TransactionId,
} from '../../src/ice/stun.ts';
import { transportAddress } from '../../src/ice/address.ts';

const hex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text.replace(/\s+/g, ''), 'hex'));
const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

// RFC 5769 §2.1: sample request, short-term credentials.
const REQUEST = hex(`
  00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);
const REQUEST_PASSWORD = 'VOkJxbRl1RmTxUk/WvJxBt';

// §2.2: IPv4 response.
const RESPONSE_V4 = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);

// §2.3: IPv6 response.
const RESPONSE_V6 = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);

// §2.4: request with long-term credentials (username and password already SASLprep'd).
const LONG_TERM_REQUEST = hex(`
  00010060 2112a442 78ad3433 c6ad72c0 29da412e
  00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
  0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
  0014000b 6578616d 706c652e 6f726700
  00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666`);

test('werift-ice is the pinned 0.2.3 whose codec this layer was checked against', () => {
  const pkg = JSON.parse(readFileSync(new URL('../../node_modules/werift-ice/package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(pkg.version, '0.2.3');
});

test('RFC 5769 §2.1 request: attributes, short-term MESSAGE-INTEGRITY, FINGERPRINT', () => {
  assert.ok(isStun(REQUEST, REQUEST.length));
  const message = parseStun(REQUEST);
  assert.ok(message);
  assert.equal(message.method, StunMethod.binding);
  assert.equal(message.messageClass, 'request');
  assert.equal(message.transactionId, 'b7e7a701bc34d686fa87dfae');
  assert.equal(getString(message, StunAttribute.software), 'STUN test client');
  assert.equal(getUint32(message, StunAttribute.priority), 0x6e0001ff);
  assert.equal(getUint64(message, StunAttribute.iceControlled), 0x932ff9b151263b36n);
  assert.equal(getString(message, StunAttribute.username), 'evtj:h6vY');
  assert.equal(message.fingerprint, 'valid');
  assert.ok(verifyIntegrity(message, shortTermKey(REQUEST_PASSWORD)));
  assert.ok(!verifyIntegrity(message, shortTermKey('VOkJxbRl1RmTxUk/WvJxBT')));
});

test('RFC 5769 §2.1: any flipped bit before FINGERPRINT breaks integrity or fingerprint', () => {
  for (let at = 2; at < REQUEST.length - 8; at++) {
    const mutated = REQUEST.slice();
    mutated[at] ^= 0x01;
    const message = parseStun(mutated);
    if (message === null) continue; // no longer parses: also a rejection
    assert.equal(message.fingerprint, 'invalid', `byte ${at}`);
    // Inside the integrity-covered region, MESSAGE-INTEGRITY fails too.
    if (at < 76 && message.integrityOffset === 76) assert.ok(!verifyIntegrity(message, shortTermKey(REQUEST_PASSWORD)), `byte ${at}`);
  }
});

test('RFC 5769 §2.1 encode: same bytes as the vector except padding, and it verifies', () => {
  const encoded = new StunMessageBuilder(StunMethod.binding, 'request', 'b7e7a701bc34d686fa87dfae' as TransactionId)
    .software('STUN test client').priority(0x6e0001ff).iceControlled(0x932ff9b151263b36n).username('evtj:h6vY')
    .encode({ integrityKey: shortTermKey(REQUEST_PASSWORD), fingerprint: true });
  assert.equal(encoded.length, REQUEST.length);
  // The vector pads USERNAME with spaces, werift with zeros (both allowed, §14); the HMAC and CRC
  // therefore differ, so compare everything before MESSAGE-INTEGRITY with the padding masked.
  const padding = [73, 74, 75];
  const masked = (b: Uint8Array): string => toHex(b.subarray(0, 80).map((v, i) => (padding.includes(i) ? 0 : v)));
  assert.equal(masked(encoded), masked(REQUEST));
  const message = parseStun(encoded);
  assert.ok(message);
  assert.equal(message.fingerprint, 'valid');
  assert.ok(verifyIntegrity(message, shortTermKey(REQUEST_PASSWORD)));
});

test('RFC 5769 §2.2 and §2.3 responses: XOR-MAPPED-ADDRESS for IPv4 and IPv6', () => {
  const cases = [
    { bytes: RESPONSE_V4, address: transportAddress('192.0.2.1', 32853) },
    { bytes: RESPONSE_V6, address: transportAddress('2001:db8:1234:5678:11:2233:4455:6677', 32853) },
  ];
  for (const { bytes, address } of cases) {
    const message = parseStun(bytes);
    assert.ok(message);
    assert.equal(message.messageClass, 'success');
    assert.equal(getString(message, StunAttribute.software), 'test vector');
    assert.deepEqual(getXorAddress(message, StunAttribute.xorMappedAddress), address);
    assert.equal(message.fingerprint, 'valid');
    assert.ok(verifyIntegrity(message, shortTermKey(REQUEST_PASSWORD)));
    // Encode the same response: the XOR-MAPPED-ADDRESS bytes come out identical.
    const encoded = new StunMessageBuilder(StunMethod.binding, 'success', message.transactionId)
      .software('test vector').xorMappedAddress(address).encode({ integrityKey: shortTermKey(REQUEST_PASSWORD), fingerprint: true });
    const attributeEnd = message.integrityOffset;
    assert.equal(toHex(encoded.subarray(36, attributeEnd)), toHex(bytes.subarray(36, attributeEnd)));
    assert.equal(toHex(encoded.subarray(0, 35)), toHex(bytes.subarray(0, 35))); // all but SOFTWARE's pad byte
    const reparsed = parseStun(encoded);
    assert.ok(reparsed && verifyIntegrity(reparsed, shortTermKey(REQUEST_PASSWORD)) && reparsed.fingerprint === 'valid');
  }
});

test('RFC 5769 §2.4 request: long-term credentials MD5(username:realm:password)', () => {
  const message = parseStun(LONG_TERM_REQUEST);
  assert.ok(message);
  assert.equal(message.fingerprint, 'absent');
  const username = getString(message, StunAttribute.username);
  const realm = getString(message, StunAttribute.realm);
  assert.equal(username, '\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9');
  assert.equal(realm, 'example.org');
  assert.equal(Buffer.from(getAttribute(message, StunAttribute.nonce) ?? []).toString(), 'f//499k954d6OL34oL9FSTvy64sA');
  assert.ok(verifyIntegrity(message, longTermKey(username ?? '', realm ?? '', 'TheMatrIX')));
  assert.ok(!verifyIntegrity(message, longTermKey(username ?? '', realm ?? '', 'TheMatrix')));
});

test('isStun follows RFC 7983 and the magic cookie; WireGuard messages never pass', () => {
  assert.ok(!isStun(REQUEST, REQUEST.length - 4)); // length field disagrees
  assert.ok(!isStun(REQUEST.subarray(0, 19), 19));
  const badFirstByte = REQUEST.slice();
  badFirstByte[0] = 0x40; // ChannelData range
  assert.ok(!isStun(badFirstByte, badFirstByte.length));
  const badCookie = REQUEST.slice();
  badCookie[5] ^= 0xff;
  assert.ok(!isStun(badCookie, badCookie.length));
  for (const [type, size] of [[1, 148], [2, 92], [3, 64], [4, 32]]) {
    const wg = new Uint8Array(size);
    wg[0] = type;
    wg.set([0x21, 0x12, 0xa4, 0x42], 4); // even a sender index equal to the cookie
    assert.ok(!isStun(wg, size), `WireGuard type ${type}`);
  }
});

test('attributes after MESSAGE-INTEGRITY are ignored and the first copy of a repeated attribute wins', () => {
  const key = shortTermKey(REQUEST_PASSWORD);
  const signed = new StunMessageBuilder(StunMethod.binding, 'request', transactionIdFromBytes(new Uint8Array(12).fill(7)))
    .username('real:user').encode({ integrityKey: key });
  // An on-path attacker appends a USERNAME after MESSAGE-INTEGRITY (werift alone would take it).
  const forged = Buffer.concat([signed, Buffer.from('00060008', 'hex'), Buffer.from('evil:usr')]);
  forged.writeUInt16BE(forged.length - 20, 2);
  const message = parseStun(forged);
  assert.ok(message);
  assert.equal(getString(message, StunAttribute.username), 'real:user');
  assert.ok(verifyIntegrity(message, key));
  // Two USERNAMEs before integrity: the first counts.
  const twice = Buffer.concat([Buffer.from(new StunMessageBuilder(StunMethod.binding, 'request', message.transactionId).username('aaaa:bbbb').encode()), Buffer.from('00060004', 'hex'), Buffer.from('zzzz')]);
  twice.writeUInt16BE(twice.length - 20, 2);
  assert.equal(getString(parseStun(twice) ?? message, StunAttribute.username), 'aaaa:bbbb');
});

test('structural errors parse to null: truncated attribute, overrun, FINGERPRINT not last, wrong MI size', () => {
  const truncatedAttribute = REQUEST.slice(0, 20 + 4 + 2);
  const header = Buffer.from(truncatedAttribute);
  header.writeUInt16BE(8, 2); // length 8 so isStun accepts a 28-byte message
  assert.equal(parseStun(Buffer.concat([header.subarray(0, 26), Buffer.from([0, 0])])), null);
  const afterFingerprint = Buffer.concat([Buffer.from(REQUEST), Buffer.from('0024000400000001', 'hex')]);
  afterFingerprint.writeUInt16BE(afterFingerprint.length - 20, 2);
  assert.equal(parseStun(afterFingerprint), null);
  const overrun = Buffer.from(REQUEST);
  overrun.writeUInt16BE(0x0100, 22); // SOFTWARE claims 256 bytes
  assert.equal(parseStun(overrun), null);
  const shortIntegrity = Buffer.from(new StunMessageBuilder(StunMethod.binding, 'request', transactionIdFromBytes(new Uint8Array(12))).rawAttribute(StunAttribute.priority, new Uint8Array(4)).encode());
  shortIntegrity.writeUInt16BE(StunAttribute.messageIntegrity, 20);
  assert.equal(parseStun(shortIntegrity), null);
});

test('TURN attributes round-trip through the builder and getters', () => {
  const id = transactionIdFromBytes(new Uint8Array(12).fill(0x5a));
  const peer = transportAddress('2001:db8::7', 40000);
  const relayed = transportAddress('198.51.100.9', 50001);
  const bytes = new StunMessageBuilder(StunMethod.allocate, 'error', id)
    .errorCode(438, 'Stale Nonce').realm('example.org').nonce(new Uint8Array([1, 2, 3])).lifetime(600).requestedTransport(17)
    .xorPeerAddress(peer).xorRelayedAddress(relayed).channelNumber(0x4001).data(new Uint8Array([9, 8, 7, 6, 5]))
    .rawAttribute(StunAttribute.dontFragment, new Uint8Array(0))
    .encode({ integrityKey: longTermKey('user', 'example.org', 'pass'), fingerprint: true });
  const message = parseStun(bytes);
  assert.ok(message);
  assert.equal(message.method, StunMethod.allocate);
  assert.equal(message.messageClass, 'error');
  assert.deepEqual(getErrorCode(message), { code: 438, reason: 'Stale Nonce' });
  assert.equal(getUint32(message, StunAttribute.lifetime), 600);
  assert.equal(getUint32(message, StunAttribute.requestedTransport), 17 << 24);
  assert.deepEqual(getXorAddress(message, StunAttribute.xorPeerAddress), peer);
  assert.deepEqual(getXorAddress(message, StunAttribute.xorRelayedAddress), relayed);
  assert.equal(toHex(getAttribute(message, StunAttribute.channelNumber) ?? new Uint8Array()), '40010000');
  assert.equal(toHex(getAttribute(message, StunAttribute.data) ?? new Uint8Array()), '0908070605');
  assert.equal(getAttribute(message, StunAttribute.dontFragment)?.length, 0);
  assert.deepEqual(unknownRequiredAttributes(message, new Set([StunAttribute.errorCode, StunAttribute.realm, StunAttribute.nonce, StunAttribute.lifetime, StunAttribute.requestedTransport, StunAttribute.xorPeerAddress, StunAttribute.xorRelayedAddress, StunAttribute.channelNumber, StunAttribute.data])), [StunAttribute.dontFragment]);
  assert.ok(verifyIntegrity(message, longTermKey('user', 'example.org', 'pass')));
  assert.equal(message.fingerprint, 'valid');
  // Methods above 0x00F interleave with the class bits (RFC 8489 §5); RFC 7983 keeps STUN below 0x100.
  const high = parseStun(new StunMessageBuilder(0x0bc, 'indication', id).encode());
  assert.equal(high?.method, 0x0bc);
  assert.equal(high?.messageClass, 'indication');
});

test('fuzz: parseStun and the getters never throw on random bytes or mutated vectors', () => {
  const inspect = (bytes: Uint8Array): void => {
    isStun(bytes, bytes.length);
    const message = parseStun(bytes);
    if (message === null) return;
    getXorAddress(message, StunAttribute.xorMappedAddress);
    getErrorCode(message);
    getString(message, StunAttribute.username);
    getUint32(message, StunAttribute.priority);
    getUint64(message, StunAttribute.iceControlling);
    verifyIntegrity(message, shortTermKey(REQUEST_PASSWORD));
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => inspect(bytes)), { numRuns: 3000, interruptAfterTimeLimit: 3000 });
  const vectors = [REQUEST, RESPONSE_V4, RESPONSE_V6, LONG_TERM_REQUEST];
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 3 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), (which, edits) => {
      const bytes = vectors[which].slice();
      for (const [at, value] of edits) bytes[at % bytes.length] = value;
      inspect(bytes);
    }),
    { numRuns: 5000, interruptAfterTimeLimit: 3000 },
  );
});
