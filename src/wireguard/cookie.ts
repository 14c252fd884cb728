// MAC1/MAC2 and cookie replies (whitepaper §5.4.4 and §5.4.7; behaviour as wireguard-go cookie.go).
//
// Every handshake message ends with mac1 ‖ mac2. mac1 = MAC(HASH(LABEL_MAC1 ‖ receiver's public key),
// message up to mac1) proves the sender knows whom it is talking to, so a responder can drop junk
// before any Curve25519 work. Under load a responder also demands mac2 = MAC(cookie, message up to
// mac2), where cookie = MAC(secret, sender's source address) and the secret changes every two
// minutes; a sender without a valid cookie gets a cookie reply instead of a response, with the
// cookie sealed (XChaCha20-Poly1305, key HASH(LABEL_COOKIE ‖ responder's public key)) and bound to
// the mac1 of the message it answers.
//
// Time is a parameter (`now`, milliseconds on any monotonic clock), so tests can rotate secrets.

import {
  COOKIE_NONCE_SIZE, COOKIE_REFRESH_TIME_MS, COOKIE_SIZE, LABEL_COOKIE, LABEL_MAC1, MAC_SIZE, MESSAGE_COOKIE_REPLY,
  MESSAGE_COOKIE_REPLY_SIZE,
} from './constants.ts';
import { constantTimeEqual, hash, mac, randomBytes, xaeadOpen, xaeadSeal } from './crypto.ts';
import type { PublicKey } from './keys.ts';
import {
  COOKIE_REPLY_COOKIE, COOKIE_REPLY_COOKIE_SIZE, COOKIE_REPLY_NONCE, COOKIE_REPLY_RECEIVER, MAC1_FROM_END,
  MAC2_FROM_END, writeMessageType, writeU32LE,
} from './messages.ts';

const encoder = new TextEncoder();
const MAC1_LABEL_BYTES = encoder.encode(LABEL_MAC1);
const COOKIE_LABEL_BYTES = encoder.encode(LABEL_COOKIE);

/** The shortest message that can carry macs: 32 bytes of them after at least one byte of body. */
const MIN_MACCED_LENGTH = MAC1_FROM_END + 1;

function macKey(label: Uint8Array, publicKey: PublicKey): Uint8Array {
  return hash(label, publicKey);
}

/** The responder side: checks mac1/mac2 of messages sent to `localPublic` and issues cookies. */
export class CookieChecker {
  readonly #mac1Key: Uint8Array;
  readonly #cookieKey: Uint8Array;
  readonly #secret = new Uint8Array(32);
  #secretSetAt = Number.NEGATIVE_INFINITY;

  constructor(localPublic: PublicKey) {
    this.#mac1Key = macKey(MAC1_LABEL_BYTES, localPublic);
    this.#cookieKey = macKey(COOKIE_LABEL_BYTES, localPublic);
  }

  /** True when msg[0, len) carries a valid mac1 for our public key. */
  checkMac1(msg: Uint8Array, len: number): boolean {
    if (!(len >= MIN_MACCED_LENGTH && len <= msg.length)) return false;
    const mac1Start = len - MAC1_FROM_END;
    const expected = mac(this.#mac1Key, msg.subarray(0, mac1Start));
    return constantTimeEqual(expected, msg.subarray(mac1Start, mac1Start + MAC_SIZE));
  }

  /**
   * True when msg[0, len) carries a valid mac2 for a cookie we gave `source` (the sender's address
   * bytes) under the current secret. False once the secret is older than COOKIE_REFRESH_TIME.
   */
  checkMac2(msg: Uint8Array, len: number, source: Uint8Array, now: number): boolean {
    if (!(len >= MIN_MACCED_LENGTH && len <= msg.length)) return false;
    if (now - this.#secretSetAt > COOKIE_REFRESH_TIME_MS) return false;
    const cookie = mac(this.#secret, source);
    const mac2Start = len - MAC2_FROM_END;
    const expected = mac(cookie, msg.subarray(0, mac2Start));
    return constantTimeEqual(expected, msg.subarray(mac2Start, mac2Start + MAC_SIZE));
  }

  /**
   * Writes into out[0, 64) a cookie reply to msg[0, len) (whose mac1 the caller has checked) for
   * the sender whose index is `receiverIndex`, from `source`. Draws a new secret first when the
   * current one is older than COOKIE_REFRESH_TIME. Returns the reply's length.
   */
  createReply(msg: Uint8Array, len: number, receiverIndex: number, source: Uint8Array, now: number, out: Uint8Array): number {
    if (!(len >= MIN_MACCED_LENGTH && len <= msg.length)) throw new RangeError('cookie: message too short for macs');
    if (out.length < MESSAGE_COOKIE_REPLY_SIZE) throw new RangeError('cookie: reply buffer must hold 64 bytes');
    if (now - this.#secretSetAt > COOKIE_REFRESH_TIME_MS) {
      randomBytes(this.#secret);
      this.#secretSetAt = now;
    }
    const cookie = mac(this.#secret, source);
    const mac1Start = len - MAC1_FROM_END;
    writeMessageType(out, MESSAGE_COOKIE_REPLY);
    writeU32LE(out, COOKIE_REPLY_RECEIVER, receiverIndex);
    const nonce = out.subarray(COOKIE_REPLY_NONCE, COOKIE_REPLY_NONCE + COOKIE_NONCE_SIZE);
    randomBytes(nonce);
    xaeadSeal(
      this.#cookieKey, nonce, cookie, msg.subarray(mac1Start, mac1Start + MAC_SIZE),
      out.subarray(COOKIE_REPLY_COOKIE, COOKIE_REPLY_COOKIE + COOKIE_REPLY_COOKIE_SIZE),
    );
    return MESSAGE_COOKIE_REPLY_SIZE;
  }
}

/** The initiator side, one per peer: adds mac1/mac2 to messages for `remoteStatic`, keeps its cookie. */
export class CookieGenerator {
  readonly #remoteStatic: PublicKey;
  readonly #mac1Key: Uint8Array;
  // Only the mac1 key is needed for every message. The cookie key, the cookie and the last mac1
  // are made when first needed: most peers never get a cookie reply, and with ten thousand peers
  // each small array saved is about 2 MB.
  #cookieKey: Uint8Array | null = null;
  #cookie: Uint8Array | null = null;
  #cookieSetAt = Number.NEGATIVE_INFINITY;
  #lastMac1: Uint8Array | null = null;

  constructor(remoteStatic: PublicKey) {
    this.#remoteStatic = remoteStatic;
    this.#mac1Key = macKey(MAC1_LABEL_BYTES, remoteStatic);
  }

  /**
   * Fills in the last 32 bytes of msg[0, len): mac1 always, mac2 from the cookie while it is
   * younger than COOKIE_REFRESH_TIME, zeros otherwise. Remembers mac1 to open a cookie reply.
   */
  addMacs(msg: Uint8Array, len: number, now: number): void {
    if (!(len >= MIN_MACCED_LENGTH && len <= msg.length)) throw new RangeError('cookie: message too short for macs');
    const mac1Start = len - MAC1_FROM_END;
    const mac2Start = len - MAC2_FROM_END;
    const mac1 = mac(this.#mac1Key, msg.subarray(0, mac1Start));
    msg.set(mac1, mac1Start);
    this.#lastMac1 = mac1;
    if (this.#cookie === null || now - this.#cookieSetAt > COOKIE_REFRESH_TIME_MS) {
      msg.fill(0, mac2Start, len);
      return;
    }
    msg.set(mac(this.#cookie, msg.subarray(0, mac2Start)), mac2Start);
  }

  /**
   * Takes the cookie from the reply reply[0, len) if it opens under our key and answers the last
   * message we added macs to. Returns whether it did. Routing by receiver index is the caller's.
   */
  consumeReply(reply: Uint8Array, len: number, now: number): boolean {
    if (len !== MESSAGE_COOKIE_REPLY_SIZE || reply.length < len || this.#lastMac1 === null) return false;
    const cookie = new Uint8Array(COOKIE_SIZE);
    this.#cookieKey ??= macKey(COOKIE_LABEL_BYTES, this.#remoteStatic);
    const opened = xaeadOpen(
      this.#cookieKey,
      reply.subarray(COOKIE_REPLY_NONCE, COOKIE_REPLY_NONCE + COOKIE_NONCE_SIZE),
      reply.subarray(COOKIE_REPLY_COOKIE, COOKIE_REPLY_COOKIE + COOKIE_REPLY_COOKIE_SIZE),
      this.#lastMac1,
      cookie,
    );
    if (!opened) return false;
    this.#cookie = cookie;
    this.#cookieSetAt = now;
    return true;
  }
}
