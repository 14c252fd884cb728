// The sans-IO TURN client against a scripted fake server: every request the client emits is parsed
// with werift-ice's codec, checked, and answered by hand, so the tests see the exact wire exchange
// (RFC 8656 allocation, refresh, permissions, channels, ChannelData; RFC 8489 long-term credentials).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { Message, classes, methods, parseMessage } from 'werift-ice';
import { transportAddress } from '../../src/ice/address.ts';
import type { TransportAddress } from '../../src/ice/address.ts';
import { CHANNEL_NUMBER_MIN, TurnClient, turnRestCredentials } from '../../src/ice/turn.ts';
import type { TurnClientOptions, TurnEvent } from '../../src/ice/turn.ts';

const SERVER = transportAddress('198.51.100.1', 3478);
const RELAYED = transportAddress('198.51.100.1', 50_000);
const MAPPED = transportAddress('203.0.113.7', 40_000);
const PEER = transportAddress('192.0.2.9', 51_820);
const CREDENTIALS = { username: 'alice', password: 'wonderland' };
const REALM = 'lab.example';
const NONCE = Buffer.from('nonce-one');
/** RFC 8489 §9.2.2, computed here independently of the client. */
const KEY = createHash('md5').update(`alice:${REALM}:wonderland`).digest();

type Attributes = readonly (readonly [string, unknown])[];

function newClient(options: Partial<TurnClientOptions> = {}): TurnClient {
  return new TurnClient({ server: SERVER, credentials: CREDENTIALS, ...options });
}

/** The next datagram the client sends, parsed; asserts it goes to the server. */
function nextRequest(client: TurnClient): Message {
  const transmit = client.pollTransmit();
  assert.ok(transmit !== null, 'expected the client to send a request');
  assert.deepEqual(transmit.to, SERVER);
  const message = parseMessage(Buffer.from(transmit.bytes));
  assert.ok(message !== undefined, 'the client sent something that is not STUN');
  return message;
}

function events(client: TurnClient): TurnEvent[] {
  const all: TurnEvent[] = [];
  for (let event = client.pollEvent(); event !== null; event = client.pollEvent()) all.push(event);
  return all;
}

function answer(request: Message, messageClass: classes, attributes: Attributes, integrity: Buffer | null = KEY): Buffer {
  const response = new Message(request.messageMethod, messageClass, request.transactionId);
  for (const [name, value] of attributes) response.setAttribute(name as never, value);
  if (integrity !== null) response.addMessageIntegrity(integrity);
  return response.bytes;
}

function challenge(request: Message, nonce = NONCE): Buffer {
  return answer(request, classes.ERROR, [['ERROR-CODE', [401, 'Unauthorized']], ['REALM', REALM], ['NONCE', nonce]], null);
}

function assertAuthenticated(request: Message, nonce = NONCE): void {
  assert.equal(request.getAttributeValue('USERNAME'), 'alice');
  assert.equal(request.getAttributeValue('REALM'), REALM);
  assert.deepEqual(request.getAttributeValue('NONCE'), nonce);
  const bytes = request.bytes;
  assert.ok(parseMessage(bytes, KEY) !== undefined, 'MESSAGE-INTEGRITY must verify with the long-term key');
}

/** Runs the 401 dance and the allocation success at `now`; returns the client, allocated. */
function allocated(now = 0, options: Partial<TurnClientOptions> = {}): TurnClient {
  const client = newClient(options);
  client.allocate(now);
  client.handleInput(challenge(nextRequest(client)), SERVER, now);
  const allocate = nextRequest(client);
  client.handleInput(answer(allocate, classes.RESPONSE, [
    ['XOR-RELAYED-ADDRESS', [RELAYED.address, RELAYED.port]], ['XOR-MAPPED-ADDRESS', [MAPPED.address, MAPPED.port]], ['LIFETIME', 600],
  ]), SERVER, now);
  assert.equal(client.state, 'allocated');
  events(client);
  return client;
}

function succeed(client: TurnClient, request: Message, now: number, attributes: Attributes = []): void {
  assert.equal(client.handleInput(answer(request, classes.RESPONSE, attributes), SERVER, now), true);
}

test('allocation: unauthenticated Allocate, 401 challenge, authenticated retry, allocated event', () => {
  const client = newClient();
  client.allocate(0);
  const first = nextRequest(client);
  assert.equal(first.messageMethod, methods.ALLOCATE);
  assert.equal(first.messageClass, classes.REQUEST);
  assert.equal(first.getAttributeValue('REQUESTED-TRANSPORT'), 17 << 24, 'RFC 8656 §14.7: UDP');
  assert.equal(first.getAttributeValue('MESSAGE-INTEGRITY'), undefined);
  assert.equal(first.getAttributeValue('USERNAME'), undefined);

  client.handleInput(challenge(first), SERVER, 10);
  const second = nextRequest(client);
  assert.equal(second.messageMethod, methods.ALLOCATE);
  assert.notEqual(second.transactionIdHex, first.transactionIdHex, 'a retry with credentials is a new transaction');
  assertAuthenticated(second);

  client.handleInput(answer(second, classes.RESPONSE, [
    ['XOR-RELAYED-ADDRESS', [RELAYED.address, RELAYED.port]], ['XOR-MAPPED-ADDRESS', [MAPPED.address, MAPPED.port]], ['LIFETIME', 600],
  ]), SERVER, 20);
  assert.deepEqual(events(client), [{ kind: 'allocated', relayedAddress: RELAYED, mappedAddress: MAPPED, lifetimeS: 600 }]);
  assert.deepEqual(client.relayedAddress, RELAYED);
  assert.deepEqual(client.mappedAddress, MAPPED);
  assert.equal(client.pollTransmit(), null);
});

test('allocation: a 401 to the authenticated request is allocationFailed "unauthorized"', () => {
  const client = newClient();
  client.allocate(0);
  client.handleInput(challenge(nextRequest(client)), SERVER, 0);
  const retry = nextRequest(client);
  client.handleInput(answer(retry, classes.ERROR, [['ERROR-CODE', [401, 'Unauthorized']], ['REALM', REALM], ['NONCE', NONCE]], null), SERVER, 5);
  const [failed, ...rest] = events(client);
  assert.equal(rest.length, 0);
  assert.equal(failed?.kind, 'allocationFailed');
  assert.equal(failed.kind === 'allocationFailed' && failed.reason, 'unauthorized');
  assert.equal(client.state, 'failed');
  assert.equal(client.pollTransmit(), null, 'no third attempt with the same wrong password');
  assert.equal(client.pollTimeout(), null);
});

test('allocation: other error codes are "rejected" with the code and phrase', () => {
  const client = newClient();
  client.allocate(0);
  client.handleInput(challenge(nextRequest(client)), SERVER, 0);
  client.handleInput(answer(nextRequest(client), classes.ERROR, [['ERROR-CODE', [486, 'Allocation Quota Reached']]], null), SERVER, 1);
  assert.deepEqual(events(client), [{ kind: 'allocationFailed', reason: 'rejected', code: 486, detail: '486 Allocation Quota Reached' }]);
});

test('allocation: a success response whose integrity does not verify is dropped', () => {
  const client = newClient();
  client.allocate(0);
  client.handleInput(challenge(nextRequest(client)), SERVER, 0);
  const allocate = nextRequest(client);
  const attributes: Attributes = [['XOR-RELAYED-ADDRESS', [RELAYED.address, RELAYED.port]], ['LIFETIME', 600]];
  client.handleInput(answer(allocate, classes.RESPONSE, attributes, Buffer.alloc(16, 7)), SERVER, 1);
  client.handleInput(answer(allocate, classes.RESPONSE, attributes, null), SERVER, 1);
  assert.equal(client.drops.badIntegrity, 2);
  assert.equal(client.state, 'allocating');
  assert.deepEqual(events(client), []);
  client.handleInput(answer(allocate, classes.RESPONSE, attributes), SERVER, 2);
  assert.equal(client.state, 'allocated');
});

test('datagrams from another address are refused and counted', () => {
  const client = newClient();
  client.allocate(0);
  const request = nextRequest(client);
  assert.equal(client.handleInput(challenge(request), transportAddress('198.51.100.2', 3478), 0), false);
  assert.equal(client.handleInput(challenge(request), transportAddress('198.51.100.1', 3479), 0), false);
  assert.equal(client.drops.wrongSource, 2);
  assert.equal(client.handleInput(challenge(request), { family: 6, address: '::ffff:198.51.100.1', port: 3478 }, 0), true,
    'a dual-stack socket reports IPv4 as v4-mapped: still the server');
});

test('retransmission: 1 s RTO doubling to the cap, then allocationFailed "timeout"', () => {
  const client = newClient({ initialRtoMs: 1000, maxRtoMs: 4000, maxTransmissions: 5 });
  client.allocate(0);
  const first = nextRequest(client);
  const sentAt = [0];
  for (let now = client.pollTimeout(); now !== null; now = client.pollTimeout()) {
    client.handleTimeout(now - 1);
    assert.equal(client.pollTransmit(), null, 'nothing is due before the timeout it announced');
    client.handleTimeout(now);
    const transmit = client.pollTransmit();
    if (transmit === null) break;
    assert.deepEqual(Buffer.from(transmit.bytes), first.bytes, 'a retransmission repeats the request byte for byte');
    sentAt.push(now);
  }
  assert.deepEqual(sentAt, [0, 1000, 3000, 7000, 11_000]);
  const [failed] = events(client);
  assert.equal(failed?.kind === 'allocationFailed' && failed.reason, 'timeout');
  assert.equal(client.state, 'failed');
});

test('retransmission defaults follow Firezone: 1 s, doubling, 8 s cap; 4 transmissions fail at 15 s', () => {
  const client = newClient();
  client.allocate(0);
  nextRequest(client);
  const sentAt = [0];
  for (let now = client.pollTimeout(); now !== null; now = client.pollTimeout()) {
    client.handleTimeout(now);
    if (client.pollTransmit() !== null) sentAt.push(now);
    else assert.equal(now, 15_000);
  }
  assert.deepEqual(sentAt, [0, 1000, 3000, 7000]);
  assert.equal(events(client)[0]?.kind, 'allocationFailed');
});

test('refresh: one minute before the lifetime ends, authenticated, and rescheduled from the answer', () => {
  const client = allocated(1000);
  assert.equal(client.pollTimeout(), 1000 + 540_000);
  client.handleTimeout(540_999);
  assert.equal(client.pollTransmit(), null);
  client.handleTimeout(541_000);
  const refresh = nextRequest(client);
  assert.equal(refresh.messageMethod, methods.REFRESH);
  assert.equal(refresh.getAttributeValue('LIFETIME'), 600);
  assertAuthenticated(refresh);
  succeed(client, refresh, 541_100, [['LIFETIME', 120]]);
  assert.equal(client.pollTimeout(), 541_100 + 60_000, 'a short lifetime refreshes at half of it');
  assert.equal(client.state, 'allocated');
  assert.deepEqual(events(client), []);
});

test('stale nonce: 438 brings a new nonce; the request is repeated with it as a new transaction', () => {
  const client = allocated(0);
  client.handleTimeout(540_000);
  const refresh = nextRequest(client);
  const newNonce = Buffer.from('nonce-two');
  client.handleInput(answer(refresh, classes.ERROR, [['ERROR-CODE', [438, 'Stale Nonce']], ['REALM', REALM], ['NONCE', newNonce]], null), SERVER, 540_010);
  const retry = nextRequest(client);
  assert.equal(retry.messageMethod, methods.REFRESH);
  assert.notEqual(retry.transactionIdHex, refresh.transactionIdHex);
  assertAuthenticated(retry, newNonce);
  succeed(client, retry, 540_020, [['LIFETIME', 600]]);
  assert.equal(client.state, 'allocated');

  // A server that answers 438 forever is not followed forever.
  client.handleTimeout(client.pollTimeout() ?? 0);
  for (let i = 0; i < 10 && client.state === 'allocated'; i++) {
    const request = nextRequest(client);
    client.handleInput(answer(request, classes.ERROR, [['ERROR-CODE', [438, 'Stale Nonce']], ['REALM', REALM], ['NONCE', Buffer.from(`n${i}`)]], null), SERVER, 600_000);
  }
  assert.equal(client.state, 'failed');
  const failed = events(client).find((event) => event.kind === 'allocationFailed');
  assert.equal(failed?.kind === 'allocationFailed' && failed.code, 438);
});

test('permissions: queued until allocated, confirmed, used for Send indications, refreshed every 4 minutes', () => {
  const client = newClient();
  client.createPermission(PEER, 0);
  client.allocate(0);
  client.handleInput(challenge(nextRequest(client)), SERVER, 0);
  assert.equal(client.encapsulate(PEER, Uint8Array.of(1)), null, 'no allocation yet');
  const allocate = nextRequest(client);
  succeed(client, allocate, 10, [['XOR-RELAYED-ADDRESS', [RELAYED.address, RELAYED.port]], ['LIFETIME', 600]]);
  const permission = nextRequest(client);
  assert.equal(permission.messageMethod, methods.CREATE_PERMISSION);
  assert.deepEqual(permission.getAttributeValue('XOR-PEER-ADDRESS'), [PEER.address, PEER.port]);
  assertAuthenticated(permission);
  assert.equal(client.encapsulate(PEER, Uint8Array.of(1)), null, 'no permission until the server confirms it');
  succeed(client, permission, 20);
  assert.deepEqual(events(client).map((event) => event.kind), ['allocated', 'permissionCreated']);

  const send = parseMessage(Buffer.from(client.encapsulate(PEER, Uint8Array.of(9, 8, 7)) ?? []));
  assert.ok(send !== undefined);
  assert.equal(send.messageMethod, methods.SEND);
  assert.equal(send.messageClass, classes.INDICATION);
  assert.deepEqual(send.getAttributeValue('XOR-PEER-ADDRESS'), [PEER.address, PEER.port]);
  assert.deepEqual(send.getAttributeValue('DATA'), Buffer.from([9, 8, 7]));

  assert.equal(client.pollTimeout(), 20 + 240_000);
  client.handleTimeout(20 + 240_000);
  const again = nextRequest(client);
  assert.equal(again.messageMethod, methods.CREATE_PERMISSION);
  client.handleInput(answer(again, classes.ERROR, [['ERROR-CODE', [403, 'Forbidden']]], null), SERVER, 240_100);
  const [failed] = events(client);
  assert.deepEqual(failed, { kind: 'permissionFailed', peer: PEER, reason: 'rejected', detail: '403 Forbidden' });
  assert.equal(client.encapsulate(PEER, Uint8Array.of(1)), null);
  assert.equal(client.state, 'allocated', 'a refused permission does not cost the allocation');
});

test('channels: ChannelBind, ChannelData both ways, re-bound after 5 minutes', () => {
  const client = allocated(0);
  const channel = client.bindChannel(PEER, 100);
  assert.equal(channel, CHANNEL_NUMBER_MIN);
  assert.equal(client.bindChannel(PEER, 100), channel, 'binding twice reuses the channel');
  const bind = nextRequest(client);
  assert.equal(client.pollTransmit(), null);
  assert.equal(bind.messageMethod, methods.CHANNEL_BIND);
  assert.equal(bind.getAttributeValue('CHANNEL-NUMBER'), channel);
  assert.deepEqual(bind.getAttributeValue('XOR-PEER-ADDRESS'), [PEER.address, PEER.port]);
  assertAuthenticated(bind);
  assert.equal(client.channelOf(PEER), null);
  succeed(client, bind, 200);
  assert.deepEqual(events(client), [{ kind: 'permissionCreated', peer: PEER }, { kind: 'channelBound', peer: PEER, channel }]);
  assert.equal(client.channelOf(PEER), channel);

  const payload = Uint8Array.from({ length: 37 }, (_, i) => i);
  const wrapped = client.encapsulate(PEER, payload);
  assert.ok(wrapped !== null);
  assert.deepEqual([...wrapped.subarray(0, 4)], [0x40, 0x00, 0, 37], 'RFC 8656 §12.4 header: channel, length');
  assert.ok((wrapped[0] ?? 0) >= 64 && (wrapped[0] ?? 0) <= 79);
  assert.deepEqual(wrapped.subarray(4), payload);

  // From the server: 3 bytes of data plus one byte of padding, as RFC 8656 §12.5 allows.
  const fromServer = Uint8Array.of(0x40, 0x00, 0x00, 0x03, 0xaa, 0xbb, 0xcc, 0x00);
  assert.deepEqual(client.decapsulate(fromServer), { peer: PEER, payload: Uint8Array.of(0xaa, 0xbb, 0xcc) });
  assert.equal(client.handleInput(fromServer, SERVER, 300), true);
  assert.deepEqual(events(client), [{ kind: 'data', peer: PEER, bytes: Uint8Array.of(0xaa, 0xbb, 0xcc) }]);

  assert.equal(client.decapsulate(Uint8Array.of(0x40, 0x01, 0x00, 0x00)), null, 'unbound channel');
  assert.equal(client.decapsulate(Uint8Array.of(0x40, 0x00, 0x00, 0x09, 1, 2)), null, 'length beyond the datagram');
  assert.equal(client.drops.unknownChannel, 1);
  assert.equal(client.drops.malformed, 1);

  // Permission refresh (4 min) comes before the re-bind (5 min); both are kept up.
  assert.equal(client.pollTimeout(), 200 + 240_000);
  client.handleTimeout(200 + 240_000);
  succeed(client, nextRequest(client), 240_300);
  assert.equal(client.pollTimeout(), 200 + 300_000);
  client.handleTimeout(200 + 300_000);
  const rebind = nextRequest(client);
  assert.equal(rebind.messageMethod, methods.CHANNEL_BIND);
  assert.equal(rebind.getAttributeValue('CHANNEL-NUMBER'), channel);
  succeed(client, rebind, 300_300);
  assert.deepEqual(events(client), [], 'a re-bind reports nothing new');

  const second = transportAddress('2001:db8::0:1', 9);
  assert.equal(client.bindChannel(second, 300_400), CHANNEL_NUMBER_MIN + 1);
  assert.deepEqual(nextRequest(client).getAttributeValue('XOR-PEER-ADDRESS'), ['2001:db8::1', 9]);
});

test('Data indications from the server are decapsulated', () => {
  const client = allocated(0);
  const indication = new Message(methods.DATA, classes.INDICATION);
  indication.setAttribute('XOR-PEER-ADDRESS', [PEER.address, PEER.port]);
  indication.setAttribute('DATA', Buffer.from('hello'));
  assert.deepEqual(client.decapsulate(indication.bytes), { peer: PEER, payload: Buffer.from('hello') });
  client.handleInput(indication.bytes, SERVER, 1);
  assert.deepEqual(events(client), [{ kind: 'data', peer: PEER, bytes: Uint8Array.from(Buffer.from('hello')) }]);
  const response = new Message(methods.REFRESH, classes.RESPONSE);
  assert.equal(client.decapsulate(response.bytes), null, 'a response is not data');
  assert.equal(client.decapsulate(Uint8Array.of(0, 1, 0, 4)), null, 'garbage is not data');
  assert.equal(client.drops.malformed, 1, 'only the garbage counts as a drop');
});

test('allocation mismatch (437): the stale allocation is deleted and the Allocate repeated once', () => {
  const client = newClient();
  client.allocate(0);
  client.handleInput(challenge(nextRequest(client)), SERVER, 0);
  const allocate = nextRequest(client);
  client.handleInput(answer(allocate, classes.ERROR, [['ERROR-CODE', [437, 'Allocation Mismatch']]], null), SERVER, 1);
  const refresh = nextRequest(client);
  assert.equal(refresh.messageMethod, methods.REFRESH);
  assert.equal(refresh.getAttributeValue('LIFETIME'), 0);
  const retry = nextRequest(client);
  assert.equal(retry.messageMethod, methods.ALLOCATE);
  client.handleInput(answer(retry, classes.ERROR, [['ERROR-CODE', [437, 'Allocation Mismatch']]], null), SERVER, 2);
  assert.equal(events(client)[0]?.kind, 'allocationFailed', 'only once');
});

test('close: Refresh with LIFETIME 0, deallocated on the answer, then silence', () => {
  const client = allocated(0);
  client.bindChannel(PEER, 0);
  succeed(client, nextRequest(client), 1);
  events(client);
  client.close(10);
  const refresh = nextRequest(client);
  assert.equal(refresh.messageMethod, methods.REFRESH);
  assert.equal(refresh.getAttributeValue('LIFETIME'), 0);
  assertAuthenticated(refresh);
  assert.equal(client.encapsulate(PEER, Uint8Array.of(1)), null);
  succeed(client, refresh, 20, [['LIFETIME', 0]]);
  assert.deepEqual(events(client), [{ kind: 'deallocated', confirmed: true }]);
  assert.equal(client.state, 'closed');
  assert.equal(client.pollTimeout(), null);
  client.handleTimeout(10_000_000);
  assert.equal(client.pollTransmit(), null);
  client.close(10_000_001);
  assert.deepEqual(events(client), []);
});

test('close: an unanswered deallocation gives up after the retransmission schedule', () => {
  const client = allocated(0);
  client.close(0);
  nextRequest(client);
  for (let now = client.pollTimeout(); now !== null; now = client.pollTimeout()) client.handleTimeout(now);
  assert.deepEqual(events(client), [{ kind: 'deallocated', confirmed: false }]);
  const idle = newClient();
  idle.close(0);
  assert.deepEqual(events(idle), [{ kind: 'deallocated', confirmed: false }]);
  assert.equal(idle.pollTransmit(), null);
});

test('REST credentials: username "expiry:user", password base64(HMAC-SHA1(secret, username))', () => {
  const credentials = turnRestCredentials('s3cret', 'gateway-1', 1_700_000_000);
  assert.equal(credentials.username, '1700000000:gateway-1');
  const expected = createHmac('sha1', 's3cret').update('1700000000:gateway-1').digest();
  assert.deepEqual(Buffer.from(credentials.password, 'base64'), expected);
  assert.notEqual(turnRestCredentials('other', 'gateway-1', 1_700_000_000).password, credentials.password);
  assert.throws(() => turnRestCredentials('s', 'a:b', 1), RangeError);
  assert.throws(() => turnRestCredentials('s', 'a', 1.5), RangeError);
});

test('fuzz: no input from the server makes the client throw', () => {
  const client = allocated(0);
  client.bindChannel(PEER, 0);
  const bind = nextRequest(client);
  // A valid answer, mutated below: truncations and bit flips reach deep into the parser.
  const valid = answer(bind, classes.RESPONSE, []);
  const channelData = Uint8Array.of(0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4);
  const inputs = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.tuple(fc.constantFrom(valid, channelData), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat())
      .map(([base, at, value, cut]) => {
        const copy = Uint8Array.from(base);
        copy[at % copy.length] = value;
        return copy.subarray(0, cut % (copy.length + 1));
      }),
    // STUN-shaped: right cookie and length, random attributes.
    fc.uint8Array({ maxLength: 120 }).map((body) => {
      const length = body.length & ~3;
      const out = Buffer.alloc(20 + length);
      out.writeUInt16BE(0x0101, 0);
      out.writeUInt16BE(length, 2);
      out.writeUInt32BE(0x2112a442, 4);
      Buffer.from(body.subarray(0, length)).copy(out, 20);
      return Uint8Array.from(out);
    }),
  );
  let n = 0;
  fc.assert(fc.property(inputs, (bytes) => {
    n++;
    client.handleInput(bytes, SERVER, n);
    client.decapsulate(bytes);
    client.handleTimeout(n);
    while (client.pollTransmit() !== null);
    events(client);
  }), { interruptAfterTimeLimit: 2000, numRuns: 20_000 });
  assert.ok(n > 100, `ran ${n} cases`);
  const { malformed, unknownTransaction, badIntegrity, unknownChannel } = client.drops;
  assert.ok(malformed + unknownTransaction + badIntegrity + unknownChannel > 0, 'garbage is counted');
  assert.ok(client.handleInput(Uint8Array.of(1, 2, 3), { family: 4, address: 'not an ip', port: 3478 } as TransportAddress, 0) === false);
});
