// Candidate priorities and pair priorities (RFC 8445 §5.1.2, §6.1.2.3) and candidate-attribute
// text (RFC 8839 §5.1): real-world lines, round trips, refusals, and fuzzing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { candidatePriority, formatCandidate, pairPriority, parseCandidate, type Candidate } from '../../src/ice/candidates.ts';
import { transportAddress } from '../../src/ice/address.ts';
import { ProtocolError } from '../../src/errors.ts';

test('candidate priority follows §5.1.2.1 with the recommended type preferences', () => {
  assert.equal(candidatePriority('host', 65_535), 2_130_706_431); // 0x7EFFFFFF, what browsers send for host
  assert.equal(candidatePriority('srflx', 65_535), 1_694_498_815);
  assert.equal(candidatePriority('prflx', 65_535), 1_862_270_975);
  assert.equal(candidatePriority('relay', 0), 255);
  assert.equal(candidatePriority('host', 0, 2), 126 * 2 ** 24 + 254);
  assert.throws(() => candidatePriority('host', 65_536), RangeError);
});

test('pair priority: 2^32·min + 2·max + (G > D), symmetric in the roles but for the last bit', () => {
  assert.equal(pairPriority(10, 20), (10n << 32n) + 40n);
  assert.equal(pairPriority(20, 10), (10n << 32n) + 41n);
  const host = candidatePriority('host', 65_535);
  const relay = candidatePriority('relay', 65_535);
  assert.ok(pairPriority(host, host) > pairPriority(host, relay));
  assert.ok(pairPriority(host, relay) > pairPriority(relay, relay));
  assert.ok(pairPriority(2 ** 31 - 1, 2 ** 31 - 1) < 2n ** 63n);
});

test('parses real browser and libnice lines; extensions are ignored', () => {
  const chrome = parseCandidate('candidate:842163049 1 udp 1677729535 198.51.100.7 61665 typ srflx raddr 10.0.1.1 rport 8998 generation 0 ufrag EsAw network-cost 999');
  assert.deepEqual(chrome, {
    foundation: '842163049', componentId: 1, priority: 1_677_729_535, address: transportAddress('198.51.100.7', 61665),
    type: 'srflx', related: transportAddress('10.0.1.1', 8998),
  });
  const v6 = parseCandidate('a=candidate:1 1 UDP 2122252543 2001:DB8:0:0::1 50000 typ host');
  assert.equal(v6.address.address, '2001:db8::1');
  assert.equal(v6.address.family, 6);
  const relay = parseCandidate('candidate:Ab+/9 1 udp 16777215 203.0.113.10 50000 typ relay raddr 0.0.0.0 rport 0');
  assert.equal(relay.type, 'relay');
});

test('format → parse round-trips', () => {
  const candidates: Candidate[] = [
    { foundation: 'abc', componentId: 1, priority: 2_130_706_431, address: transportAddress('192.0.2.1', 51820), type: 'host', related: null },
    { foundation: '1', componentId: 1, priority: 16_777_215, address: transportAddress('2001:db8::9', 3478), type: 'relay', related: transportAddress('198.51.100.1', 40000) },
  ];
  for (const candidate of candidates) assert.deepEqual(parseCandidate(formatCandidate(candidate)), candidate);
  assert.equal(formatCandidate(candidates[1]), 'candidate:1 1 udp 16777215 2001:db8::9 3478 typ relay raddr 198.51.100.1 rport 40000');
});

test('refuses what cannot be a UDP candidate for our socket, with ProtocolError', () => {
  const bad = [
    'candidate:1 1 udp 2130706431 5f2a1b9c-0000-4000-8000-000000000000.local 50000 typ host', // mDNS
    'candidate:1 1 tcp 2130706431 192.0.2.1 9 typ host tcptype active',
    'candidate:1 1 udp 0 192.0.2.1 50000 typ host',
    'candidate:1 1 udp 4294967295 192.0.2.1 50000 typ host',
    'candidate:1 0 udp 1 192.0.2.1 50000 typ host',
    'candidate:1 1 udp 1 192.0.2.1 70000 typ host',
    'candidate:1 1 udp 1 192.0.2.1 50000 type host',
    'candidate:1 1 udp 1 192.0.2.1 50000 typ stun',
    'candidate:bad! 1 udp 1 192.0.2.1 50000 typ host',
    'candidate:1 1 udp 1 192.0.2.256 50000 typ host',
    'candidate:1 1 udp 1 192.0.2.1 50000 typ srflx raddr nowhere rport 1',
    'candidate:1 1 udp 1 192.0.2.1',
    'foo:1 1 udp 1 192.0.2.1 50000 typ host',
    `candidate:${'1'.repeat(600)}`,
  ];
  for (const line of bad) assert.throws(() => parseCandidate(line), ProtocolError, line);
});

test('fuzz: parseCandidate throws only ProtocolError, and what it accepts formats back to itself', () => {
  const token = fc.oneof(fc.constantFrom('candidate:1', '1', 'udp', 'typ', 'host', 'srflx', 'relay', 'raddr', 'rport', '192.0.2.1', '::1', '65535', '2130706431'), fc.string({ maxLength: 8 }));
  fc.assert(
    fc.property(fc.array(token, { maxLength: 12 }), (tokens) => {
      const line = tokens.join(' ');
      try {
        const candidate = parseCandidate(line);
        assert.deepEqual(parseCandidate(formatCandidate(candidate)), candidate);
      } catch (error) {
        assert.ok(error instanceof ProtocolError, String(error));
      }
    }),
    { numRuns: 5000, interruptAfterTimeLimit: 3000 },
  );
});
