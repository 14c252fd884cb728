// MAC1/MAC2 and cookie replies (whitepaper §5.4.4, §5.4.7), driven by an injected clock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { COOKIE_REFRESH_TIME_MS } from '../../src/wireguard/constants.ts';
import { CookieChecker, CookieGenerator } from '../../src/wireguard/cookie.ts';
import { hash, mac, randomBytes } from '../../src/wireguard/crypto.ts';
import { generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.ts';

const SOURCE = Uint8Array.of(192, 0, 2, 7, 0xca, 0x6c); // address bytes ‖ port, opaque to cookie.ts
const OTHER_SOURCE = Uint8Array.of(192, 0, 2, 8, 0xca, 0x6c);

function setup() {
  const responderPublic = publicKeyOf(generatePrivateKey());
  return { responderPublic, checker: new CookieChecker(responderPublic), generator: new CookieGenerator(responderPublic) };
}

function message(length = 148): Uint8Array {
  const msg = randomBytes(new Uint8Array(length));
  msg.fill(0, length - 32);
  return msg;
}

test('mac1 is MAC(HASH("mac1----" ‖ responder public), message before mac1)', () => {
  const { responderPublic, checker, generator } = setup();
  const msg = message();
  generator.addMacs(msg, 148, 0);
  const expected = mac(hash(new TextEncoder().encode('mac1----'), responderPublic), msg.subarray(0, 116));
  assert.deepEqual(msg.subarray(116, 132), expected);
  assert.deepEqual(msg.subarray(132), new Uint8Array(16), 'no cookie yet: mac2 is zero');
  assert.equal(checker.checkMac1(msg, 148), true);
  assert.equal(checker.checkMac2(msg, 148, SOURCE, 0), false);
});

test('mac1 fails for another responder key, any changed byte, and bad lengths', () => {
  const { checker, generator } = setup();
  const msg = message(92);
  generator.addMacs(msg, 92, 0);
  assert.equal(new CookieChecker(publicKeyOf(generatePrivateKey())).checkMac1(msg, 92), false);
  for (let i = 0; i < 76; i++) {
    const bad = Uint8Array.from(msg);
    bad[i]! ^= 0x04;
    assert.equal(checker.checkMac1(bad, 92), false, `byte ${i}`);
  }
  assert.equal(checker.checkMac1(msg, 92), true);
  assert.equal(checker.checkMac1(msg, 32), false);
  assert.equal(checker.checkMac1(msg, 93), false);
});

test('cookie reply round trip: the next message carries a mac2 the checker accepts', () => {
  const { checker, generator } = setup();
  const now = 1_000_000;
  const first = message();
  generator.addMacs(first, 148, now);
  assert.equal(checker.checkMac1(first, 148), true);
  const reply = new Uint8Array(64);
  assert.equal(checker.createReply(first, 148, 0x01020304, SOURCE, now, reply), 64);
  assert.deepEqual(reply.subarray(0, 8), Uint8Array.of(3, 0, 0, 0, 4, 3, 2, 1));
  assert.equal(generator.consumeReply(reply, 64, now + 10), true);

  const second = message();
  generator.addMacs(second, 148, now + 20);
  assert.equal(checker.checkMac1(second, 148), true);
  assert.equal(checker.checkMac2(second, 148, SOURCE, now + 30), true);
  assert.equal(checker.checkMac2(second, 148, OTHER_SOURCE, now + 30), false, 'the cookie is bound to the source');
  const tampered = Uint8Array.from(second);
  tampered[140]! ^= 1;
  assert.equal(checker.checkMac2(tampered, 148, SOURCE, now + 30), false);
});

test('a cookie reply only opens for the message it answers, once per key, untampered', () => {
  const { checker, generator } = setup();
  const msg = message();
  generator.addMacs(msg, 148, 0);
  const reply = new Uint8Array(64);
  checker.createReply(msg, 148, 1, SOURCE, 0, reply);
  for (let i = 8; i < 64; i++) {
    const bad = Uint8Array.from(reply);
    bad[i]! ^= 0x10;
    assert.equal(generator.consumeReply(bad, 64, 0), false, `byte ${i}`);
  }
  assert.equal(generator.consumeReply(reply, 63, 0), false);
  // After another message, the old reply (bound to the old mac1) no longer opens.
  generator.addMacs(message(), 148, 0);
  assert.equal(generator.consumeReply(reply, 64, 0), false);
  // A generator for another responder key cannot open it either.
  const stranger = new CookieGenerator(publicKeyOf(generatePrivateKey()));
  stranger.addMacs(msg.slice(), 148, 0);
  assert.equal(stranger.consumeReply(reply, 64, 0), false);
  // A generator that never sent anything refuses replies.
  assert.equal(new CookieGenerator(publicKeyOf(generatePrivateKey())).consumeReply(reply, 64, 0), false);
});

test('cookie secret rotation and cookie expiry follow COOKIE_REFRESH_TIME on the injected clock', () => {
  const { checker, generator } = setup();
  const t0 = 50_000;
  const msg = message();
  generator.addMacs(msg, 148, t0);
  const reply = new Uint8Array(64);
  checker.createReply(msg, 148, 9, SOURCE, t0, reply);
  assert.equal(generator.consumeReply(reply, 64, t0), true);

  const withCookie = message();
  generator.addMacs(withCookie, 148, t0 + COOKIE_REFRESH_TIME_MS);
  assert.notDeepEqual(withCookie.subarray(132), new Uint8Array(16), 'cookie still fresh at exactly the refresh time');
  assert.equal(checker.checkMac2(withCookie, 148, SOURCE, t0 + COOKIE_REFRESH_TIME_MS), true);
  assert.equal(checker.checkMac2(withCookie, 148, SOURCE, t0 + COOKIE_REFRESH_TIME_MS + 1), false, 'secret expired');

  // The generator stops using its cookie after the refresh time: mac2 goes back to zero.
  const stale = message();
  stale.fill(0xee, 132);
  generator.addMacs(stale, 148, t0 + COOKIE_REFRESH_TIME_MS + 1);
  assert.deepEqual(stale.subarray(132), new Uint8Array(16));

  // A new reply after expiry draws a new secret: old cookies stop working, new ones work.
  const later = t0 + COOKIE_REFRESH_TIME_MS + 5;
  const next = message();
  generator.addMacs(next, 148, later);
  const reply2 = new Uint8Array(64);
  checker.createReply(next, 148, 9, SOURCE, later, reply2);
  assert.equal(checker.checkMac2(withCookie, 148, SOURCE, later), false, 'old cookie, new secret');
  assert.equal(generator.consumeReply(reply2, 64, later), true);
  const fresh = message();
  generator.addMacs(fresh, 148, later + 1);
  assert.equal(checker.checkMac2(fresh, 148, SOURCE, later + 1), true);
});

test('within one refresh period the secret stays put, so replies give the same cookie', () => {
  const { checker, generator } = setup();
  const a = message();
  generator.addMacs(a, 148, 0);
  const reply = new Uint8Array(64);
  checker.createReply(a, 148, 1, SOURCE, 0, reply);
  generator.consumeReply(reply, 64, 0);
  const b = message();
  generator.addMacs(b, 148, 1);
  checker.createReply(b, 148, 1, SOURCE, 60_000, reply); // no rotation yet
  assert.equal(checker.checkMac2(b, 148, SOURCE, 60_000), true);
});

test('fuzz: random bytes never make the checkers or consumeReply throw', () => {
  const { checker, generator } = setup();
  generator.addMacs(message(), 148, 0);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat({ max: 220 }), (bytes, len) => {
      assert.equal(checker.checkMac1(bytes, len), false);
      assert.equal(checker.checkMac2(bytes, len, SOURCE, 0), false);
      assert.equal(generator.consumeReply(bytes, len, 0), false);
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 5_000 },
  );
});
