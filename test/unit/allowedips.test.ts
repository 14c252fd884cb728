import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AllowedIps, formatCidr, parseCidr } from '../../src/wireguard/allowedips.ts';
import { ConfigError } from '../../src/errors.ts';

function insert(table: AllowedIps, cidr: string, peer: number): void {
  const { bytes, prefixLength } = parseCidr(cidr);
  table.insert(bytes, prefixLength, peer);
}

function remove(table: AllowedIps, cidr: string, peer: number): boolean {
  const { bytes, prefixLength } = parseCidr(cidr);
  return table.remove(bytes, prefixLength, peer);
}

function lookup(table: AllowedIps, address: string): number {
  const { bytes } = parseCidr(address);
  return bytes.length === 4 ? table.lookupV4(bytes, 0) : table.lookupV6(bytes, 0);
}

function shown(table: AllowedIps, peer: number): string[] {
  return table.entriesOf(peer).map(({ bytes, prefixLength }) => formatCidr(bytes, prefixLength));
}

test('longest prefix wins among overlapping IPv4 prefixes', () => {
  const table = new AllowedIps();
  insert(table, '10.0.0.0/8', 1);
  insert(table, '10.1.0.0/16', 2);
  insert(table, '10.1.2.0/24', 3);
  insert(table, '10.1.2.3/32', 4);
  assert.equal(lookup(table, '10.200.0.1'), 1);
  assert.equal(lookup(table, '10.1.200.1'), 2);
  assert.equal(lookup(table, '10.1.2.200'), 3);
  assert.equal(lookup(table, '10.1.2.3'), 4);
  assert.equal(lookup(table, '11.0.0.1'), -1);
  assert.equal(lookup(table, '9.255.255.255'), -1);
  assert.equal(table.size, 4);
});

test('a default route /0 catches everything of its family only', () => {
  const table = new AllowedIps();
  insert(table, '0.0.0.0/0', 7);
  assert.equal(lookup(table, '0.0.0.0'), 7);
  assert.equal(lookup(table, '255.255.255.255'), 7);
  assert.equal(lookup(table, '::1'), -1);
  insert(table, '::/0', 8);
  assert.equal(lookup(table, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 8);
  assert.equal(lookup(table, '::'), 8);
  insert(table, '192.168.1.1/32', 9);
  assert.equal(lookup(table, '192.168.1.1'), 9);
  assert.equal(lookup(table, '192.168.1.0'), 7);
  assert.equal(lookup(table, '192.168.1.2'), 7);
});

test('IPv6: /128, /64 and the address family boundary', () => {
  const table = new AllowedIps();
  insert(table, 'fd00::/64', 1);
  insert(table, 'fd00::1/128', 2);
  insert(table, 'fd00:0:0:1::/64', 3);
  insert(table, '::ffff:10.0.0.0/104', 4);
  assert.equal(lookup(table, 'fd00::1'), 2);
  assert.equal(lookup(table, 'fd00::2'), 1);
  assert.equal(lookup(table, 'fd00::ffff:ffff:ffff:ffff'), 1);
  assert.equal(lookup(table, 'fd00:0:0:1::5'), 3);
  assert.equal(lookup(table, 'fd00:0:0:2::5'), -1);
  assert.equal(lookup(table, '::ffff:10.9.8.7'), 4);
  assert.equal(lookup(table, '10.9.8.7'), -1, 'a v4-mapped IPv6 prefix does not route plain IPv4');
  // Prefixes that differ only in bits 64..127 or only in the very last bit.
  insert(table, 'fd00::ffff:ffff:ffff:fffe/128', 5);
  insert(table, 'fd00::ffff:ffff:ffff:ffff/128', 6);
  assert.equal(lookup(table, 'fd00::ffff:ffff:ffff:fffe'), 5);
  assert.equal(lookup(table, 'fd00::ffff:ffff:ffff:ffff'), 6);
  assert.equal(lookup(table, 'fd00::ffff:ffff:ffff:fffd'), 1);
});

test('lookups read the address at any offset of a packet and reject one that does not fit', () => {
  const table = new AllowedIps();
  insert(table, '192.0.2.0/24', 1);
  insert(table, '2001:db8::/32', 2);
  const packet = new Uint8Array(64);
  packet.set([192, 0, 2, 77], 12); // IPv4 source address field
  assert.equal(table.lookupV4(packet, 12), 1);
  assert.equal(table.lookupV4(packet, 11), -1);
  packet.set(parseCidr('2001:db8::9').bytes, 24); // IPv6 destination address field
  assert.equal(table.lookupV6(packet, 24), 2);
  assert.equal(table.lookupV4(packet, 60), -1);
  assert.throws(() => table.lookupV4(packet, 61), RangeError);
  assert.throws(() => table.lookupV6(packet, 49), RangeError);
  assert.throws(() => table.lookupV4(packet, -1), RangeError);
  assert.throws(() => table.lookupV4(packet, Number.NaN), RangeError);
});

test('host bits beyond the prefix are masked off', () => {
  const table = new AllowedIps();
  insert(table, '10.1.2.3/8', 1);
  insert(table, 'fd00::1234/16', 2);
  assert.deepEqual(shown(table, 1), ['10.0.0.0/8']);
  assert.deepEqual(shown(table, 2), ['fd00::/16']);
  assert.equal(lookup(table, '10.99.99.99'), 1);
  assert.equal(remove(table, '10.255.0.0/8', 1), true, 'removal masks too');
  assert.equal(table.size, 1);
});

test('re-inserting a prefix moves it to the new peer and to the end of its list', () => {
  const table = new AllowedIps();
  insert(table, '10.0.0.0/24', 1);
  insert(table, '10.0.1.0/24', 1);
  insert(table, '10.0.2.0/24', 2);
  insert(table, '10.0.0.77/24', 2);
  assert.equal(lookup(table, '10.0.0.5'), 2);
  assert.deepEqual(shown(table, 1), ['10.0.1.0/24']);
  assert.deepEqual(shown(table, 2), ['10.0.2.0/24', '10.0.0.0/24']);
  assert.equal(table.size, 3);
  assert.equal(remove(table, '10.0.0.0/24', 1), false, 'no longer owned by peer 1');
  assert.equal(remove(table, '10.0.0.0/24', 2), true);
  assert.equal(remove(table, '10.0.0.0/24', 2), false, 'already gone');
  assert.equal(lookup(table, '10.0.0.5'), -1);
});

test('entries are listed per peer in insertion order across both families', () => {
  const table = new AllowedIps();
  insert(table, 'fd00::/64', 1);
  insert(table, '10.0.0.1/32', 1);
  insert(table, '0.0.0.0/0', 2);
  insert(table, '::ffff:1.2.3.4/128', 1);
  insert(table, '10.0.0.0/8', 1);
  assert.deepEqual(shown(table, 1), ['fd00::/64', '10.0.0.1/32', '::ffff:1.2.3.4/128', '10.0.0.0/8']);
  assert.deepEqual(shown(table, 2), ['0.0.0.0/0']);
  assert.deepEqual(shown(table, 3), []);
});

test('removing an inner prefix keeps the ones above and below it', () => {
  const table = new AllowedIps();
  insert(table, '10.0.0.0/8', 1);
  insert(table, '10.1.0.0/16', 2);
  insert(table, '10.1.1.0/24', 3);
  insert(table, '10.1.2.0/24', 4);
  assert.equal(remove(table, '10.1.0.0/16', 2), true);
  assert.equal(lookup(table, '10.1.1.1'), 3);
  assert.equal(lookup(table, '10.1.2.1'), 4);
  assert.equal(lookup(table, '10.1.3.1'), 1);
  assert.equal(remove(table, '10.1.1.0/24', 3), true);
  assert.equal(remove(table, '10.1.2.0/24', 4), true);
  assert.equal(lookup(table, '10.1.2.1'), 1);
  assert.equal(table.nodeCount, 1);
  assert.equal(remove(table, '10.0.0.0/8', 1), true);
  assert.equal(table.nodeCount, 0);
  assert.equal(remove(table, '10.0.0.0/8', 1), false);
});

test('removePeer drops only that peer, in both families', () => {
  const table = new AllowedIps();
  insert(table, '10.0.0.0/8', 1);
  insert(table, '10.1.0.0/16', 2);
  insert(table, 'fd00::/8', 2);
  insert(table, 'fd00::/16', 1);
  table.removePeer(2);
  assert.equal(lookup(table, '10.1.0.1'), 1);
  assert.equal(lookup(table, 'fd01::1'), -1);
  assert.equal(lookup(table, 'fd00::1'), 1);
  assert.deepEqual(shown(table, 2), []);
  assert.equal(table.size, 2);
  table.removePeer(2); // twice is harmless
  table.removePeer(99);
  table.removePeer(1);
  assert.equal(table.size, 0);
  assert.equal(table.nodeCount, 0);
});

test('130,000 prefixes for one peer insert and remove fast, and freed nodes are reused', () => {
  const table = new AllowedIps();
  const count = 130_000;
  const bytes = new Uint8Array(4);
  const insertAll = (peer: number): number => {
    const started = performance.now();
    for (let i = 0; i < count; i++) {
      // Spread over 10.0.0.0/8 and 172.16.0.0/12 with a mix of /32s and /24s.
      const value = (i * 2654435761) >>> 0;
      bytes[0] = i & 1 ? 10 : 172;
      bytes[1] = i & 1 ? value >>> 24 : 16 | ((value >>> 28) & 0x0f);
      bytes[2] = value >>> 16;
      bytes[3] = value >>> 8;
      table.insert(bytes, i % 5 === 0 ? 24 : 32, peer);
    }
    return performance.now() - started;
  };
  const insertMs = insertAll(1);
  insert(table, '192.168.0.0/16', 2);
  const entries = table.size;
  assert.ok(entries > 100_000, `${entries} distinct prefixes`);
  assert.ok(insertMs < 1500, `inserting took ${insertMs.toFixed(0)} ms`);
  const bytesBefore = table.byteLength;
  let started = performance.now();
  table.removePeer(1);
  const removeMs = performance.now() - started;
  assert.ok(removeMs < 1000, `removePeer took ${removeMs.toFixed(0)} ms`);
  assert.equal(table.size, 1);
  assert.equal(lookup(table, '192.168.3.4'), 2);
  assert.equal(lookup(table, '10.0.0.0'), -1);
  started = performance.now();
  insertAll(3);
  assert.equal(table.byteLength, bytesBefore, 'the second fill reused freed nodes instead of growing');
  assert.equal(table.size, entries);
  console.log(
    `allowedips: ${entries} entries inserted in ${insertMs.toFixed(0)} ms, removePeer ${removeMs.toFixed(1)} ms, ` +
      `${table.nodeCount} nodes, ${(table.byteLength / entries).toFixed(1)} bytes per entry (arrays incl. growth slack)`,
  );
});

test('a batch announced with expectInsertions grows the arrays once, to less than step-by-step growth leaves', () => {
  const fill = (table: AllowedIps): void => {
    const bytes = new Uint8Array(4);
    for (let peer = 0; peer < 10_000; peer++) {
      bytes.set([10, peer >>> 16, (peer >>> 8) & 255, peer & 255]);
      table.insert(bytes, 32, peer);
    }
  };
  const stepwise = new AllowedIps();
  fill(stepwise);
  const announced = new AllowedIps();
  announced.expectInsertions(10_000);
  fill(announced);
  assert.equal(announced.size, 10_000);
  assert.equal(announced.nodeCount, stepwise.nodeCount);
  for (const peer of [0, 1, 255, 256, 9_999]) {
    assert.equal(lookup(announced, `10.0.${peer >>> 8}.${peer & 255}`), peer);
    assert.deepEqual(announced.entriesOf(peer), stepwise.entriesOf(peer));
  }
  // 2n - 1 nodes at most for n prefixes: the announced table holds no more than that plus its start.
  const bytesPerNode = 8 * 4 + 1 + 4 + 4 + 4;
  const peerArrays = 2 * 4 * 16_384;
  assert.ok(announced.byteLength <= (2 * 10_000 + 64) * bytesPerNode + peerArrays, `${announced.byteLength} bytes`);
  assert.ok(announced.byteLength < stepwise.byteLength, `${announced.byteLength} < ${stepwise.byteLength} bytes`);
  // Peer ids far apart are fine (the per-peer arrays grow to cover them).
  insert(announced, '192.168.0.0/16', 2 ** 22 - 1);
  assert.equal(lookup(announced, '192.168.1.1'), 2 ** 22 - 1);
  announced.removePeer(2 ** 22 - 1);
  assert.equal(lookup(announced, '192.168.1.1'), -1);
  assert.deepEqual(announced.entriesOf(2 ** 21), []);
});

test('bad arguments are TypeErrors or RangeErrors', () => {
  const table = new AllowedIps();
  assert.throws(() => table.insert(new Uint8Array(5), 8, 1), TypeError);
  assert.throws(() => table.insert(new Uint8Array(4), 33, 1), RangeError);
  assert.throws(() => table.insert(new Uint8Array(16), 129, 1), RangeError);
  assert.throws(() => table.insert(new Uint8Array(4), -1, 1), RangeError);
  assert.throws(() => table.insert(new Uint8Array(4), 8.5, 1), RangeError);
  assert.throws(() => table.insert(new Uint8Array(4), 8, -1), RangeError);
  assert.throws(() => table.insert(new Uint8Array(4), 8, 2 ** 31), RangeError);
  assert.throws(() => table.insert(new Uint8Array(4), 8, 2 ** 22), RangeError, 'peer ids index arrays, so they are bounded');
  assert.throws(() => table.expectInsertions(-1), RangeError);
  assert.throws(() => table.remove(new Uint8Array(3), 8, 1), TypeError);
  assert.equal(table.remove(new Uint8Array(4), 0, -1), false, 'peer -1 never matches a glue node');
  assert.equal(table.size, 0);
});

// ---- Text form ----

test('parseCidr reads IPv4, IPv6 and bare addresses', () => {
  const cases: Array<[string, number[], number]> = [
    ['10.0.0.0/8', [10, 0, 0, 0], 8],
    ['192.168.1.77/24', [192, 168, 1, 77], 24],
    ['1.2.3.4', [1, 2, 3, 4], 32],
    ['0.0.0.0/0', [0, 0, 0, 0], 0],
    ['255.255.255.255/32', [255, 255, 255, 255], 32],
    ['fd00::/64', [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 64],
    ['::1', [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 128],
    ['::/0', new Array<number>(16).fill(0), 0],
    ['2001:DB8:0:0:1:0:0:1/128', [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], 128],
    ['::ffff:192.0.2.1/96', [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1], 96],
    ['1:2:3:4:5:6:7::', [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0], 128],
    ['10.0.0.0/08', [10, 0, 0, 0], 8],
  ];
  for (const [text, bytes, prefixLength] of cases) {
    const parsed = parseCidr(text);
    assert.deepEqual([...parsed.bytes], bytes, text);
    assert.equal(parsed.prefixLength, prefixLength, text);
  }
});

test('parseCidr rejects bad input with a ConfigError that names it', () => {
  const bad = [
    '', '/8', '10.0.0.0/', '10.0.0.0/33', 'fd00::/129', '10.0.0.0/-1', '10.0.0.0/8/8', '10.0.0.0/1000',
    '10.0.0.0/ 8', '10.0.0/8', '10.0.0.0.0', '256.0.0.0', '01.2.3.4', '1.2.3.4 ', ' 1.2.3.4', 'a.b.c.d',
    'fd00:::1', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8::', '12345::', 'fe80::1%eth0', '::1.2.3',
    '1.2.3.4::', 'example.com', '10.0.0.0/0x8', '::/+1',
  ];
  for (const text of bad) {
    assert.throws(
      () => parseCidr(text),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.code === 'ZTGATE_ERR_CONFIG' &&
        error.message.startsWith('allowedips: ') &&
        error.message.includes(`'${text}'`),
      JSON.stringify(text),
    );
  }
  assert.throws(() => parseCidr('10.0.0.0/33'), /too long for IPv4 \(at most 32\)/);
  assert.throws(() => parseCidr('fd00::/129'), /too long for IPv6 \(at most 128\)/);
});

test('formatCidr prints what wg(8) prints (glibc inet_ntop vectors)', () => {
  // Expected strings produced by glibc's inet_ntop(AF_INET6) for the same 16 bytes.
  const vectors: Array<[string, string]> = [
    ['00000000000000000000000000000000', '::'],
    ['00000000000000000000000000000001', '::1'],
    ['fd000000000000000000000000000000', 'fd00::'],
    ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['20010db8000000010000000000000001', '2001:db8:0:1::1'],
    ['20010db8000100010001000100010001', '2001:db8:1:1:1:1:1:1'],
    ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
    ['00000000000000000000ffff01020304', '::ffff:1.2.3.4'],
    ['00000000000000000000000001020304', '::1.2.3.4'],
    ['00000000000000000000000000010000', '::0.1.0.0'],
    ['000000000000000000000000ffff0000', '::255.255.0.0'],
    ['00010000000000000000000000000000', '1::'],
    ['00010002000300040005000600070000', '1:2:3:4:5:6:7:0'],
    ['00000000000100000000000000000001', '0:0:1::1'],
    ['abcd0000000000001234000000000000', 'abcd::1234:0:0:0'],
    ['fe80000000000000020c29fffe123456', 'fe80::20c:29ff:fe12:3456'],
  ];
  for (const [hex, expected] of vectors) {
    const bytes = Uint8Array.from(Buffer.from(hex, 'hex'));
    assert.equal(formatCidr(bytes, 128), `${expected}/128`, hex);
  }
  assert.equal(formatCidr(Uint8Array.of(10, 0, 0, 0), 8), '10.0.0.0/8');
  assert.equal(formatCidr(Uint8Array.of(0, 0, 0, 0), 0), '0.0.0.0/0');
  assert.equal(formatCidr(Uint8Array.of(255, 255, 255, 255), 32), '255.255.255.255/32');
  assert.throws(() => formatCidr(new Uint8Array(4), 33), RangeError);
  assert.throws(() => formatCidr(new Uint8Array(6), 8), TypeError);
});

test('formatCidr and parseCidr round-trip every address (fast-check)', () => {
  const sparseWords = fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
    minLength: 8,
    maxLength: 8,
  });
  fc.assert(
    fc.property(sparseWords, fc.integer({ min: 0, max: 128 }), (words, prefixLength) => {
      const bytes = new Uint8Array(16);
      words.forEach((word, i) => {
        bytes[2 * i] = word >>> 8;
        bytes[2 * i + 1] = word & 0xff;
      });
      const text = formatCidr(bytes, prefixLength);
      assert.match(text, /^[0-9a-f:.]+\/\d+$/);
      const parsed = parseCidr(text);
      assert.deepEqual(parsed.bytes, bytes);
      assert.equal(parsed.prefixLength, prefixLength);
    }),
    { numRuns: 2000, interruptAfterTimeLimit: 5000 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 }), (bytes, prefixLength) => {
      const parsed = parseCidr(formatCidr(bytes, prefixLength));
      assert.deepEqual(parsed.bytes, bytes);
      assert.equal(parsed.prefixLength, prefixLength);
    }),
    { numRuns: 1000, interruptAfterTimeLimit: 5000 },
  );
});

test('parseCidr never throws anything but ConfigError on arbitrary text (fast-check)', () => {
  const cidrish = fc.stringMatching(/^[0-9a-fA-F:./%x+ -]{0,45}$/);
  fc.assert(
    fc.property(fc.oneof(fc.string(), cidrish), (text) => {
      try {
        const { bytes, prefixLength } = parseCidr(text);
        assert.ok(bytes.length === 4 || bytes.length === 16);
        assert.ok(prefixLength >= 0 && prefixLength <= bytes.length * 8);
        // Whatever it accepts, it can route.
        new AllowedIps().insert(bytes, prefixLength, 0);
      } catch (error) {
        assert.ok(error instanceof ConfigError, String(error));
      }
    }),
    { numRuns: 5000, interruptAfterTimeLimit: 5000 },
  );
});
