// The UAPI text protocol without sockets: set parsing (every key, every error and its errno),
// get serialization (exact text, and that a get reply is itself an acceptable set body), request
// framing across arbitrary chunk boundaries, and fuzzing that only UapiError ever escapes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  UAPI_ERRNO,
  UapiError,
  UapiRequestDecoder,
  formatErrno,
  formatGet,
  parseSet,
  setOperations,
  type Cidr,
  type DeviceSnapshot,
  type PeerOperation,
  type SetOperation,
  type UapiRequest,
} from '../../src/uapi/protocol.ts';
import { formatIpv4, formatIpv6 } from '../../src/wireguard/endpoint.ts';

const KEY_A = 'a1'.repeat(32);
const KEY_B = '0f'.repeat(32);
const ZERO_KEY = '0'.repeat(64);
const bytesOf = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex, 'hex'));
const v4 = (...octets: number[]): Uint8Array => Uint8Array.from(octets);
const v6 = (hex: string): Uint8Array => bytesOf(hex.padEnd(32, '0'));

function onlyPeer(operations: SetOperation[]): PeerOperation {
  assert.equal(operations.length, 1);
  const [operation] = operations;
  assert.equal(operation.kind, 'peer');
  return operation;
}

test('setOperations parses again on each iteration, the same operations, and throws only when iterated', () => {
  const body = `listen_port=7\npublic_key=${KEY_A}\nallowed_ip=10.0.0.0/8\npublic_key=${KEY_B}\nremove=true\n`;
  const operations = setOperations(body);
  const first = [...operations];
  const second = [...operations];
  assert.deepEqual(first, parseSet(body));
  assert.deepEqual(second, first);
  assert.notEqual(second[1], first[1], 'each iteration parses afresh rather than keeping the first');
  const bad = setOperations(`listen_port=7\npublic_key=${KEY_A}\nallowed_ip=10.0.0.0/99\n`);
  const iterator = bad[Symbol.iterator]();
  assert.deepEqual(iterator.next().value, { kind: 'listenPort', port: 7 });
  assert.throws(() => iterator.next(), { errno: UAPI_ERRNO.invalid, message: /line 3/ });
  assert.throws(() => setOperations(7 as unknown as string), TypeError);
});

test('device keys parse to operations in request order', () => {
  assert.deepEqual(
    parseSet(`private_key=${KEY_A.toUpperCase()}\nlisten_port=00080\nfwmark=4294967295\nreplace_peers=true\nlisten_port=0\n`),
    [
      { kind: 'privateKey', key: bytesOf(KEY_A) },
      { kind: 'listenPort', port: 80 },
      { kind: 'fwmark', value: 0xffff_ffff },
      { kind: 'replacePeers' },
      { kind: 'listenPort', port: 0 },
    ],
  );
  // The all-zero private key removes the key (wireguard-go FromMaybeZeroHex).
  assert.deepEqual(parseSet(`private_key=${ZERO_KEY}\n`), [{ kind: 'privateKey', key: null }]);
  assert.deepEqual(parseSet(''), []);
  // No final newline, and CRLF line ends (Go's line scanner drops one CR).
  assert.deepEqual(parseSet('listen_port=1\r\nfwmark=2'), [
    { kind: 'listenPort', port: 1 },
    { kind: 'fwmark', value: 2 },
  ]);
});

test('every peer key parses', () => {
  const peer = onlyPeer(
    parseSet(
      [
        `public_key=${KEY_A}`,
        'protocol_version=1',
        `preshared_key=${KEY_B}`,
        'endpoint=192.0.2.1:51820',
        'persistent_keepalive_interval=65535',
        'allowed_ip=10.1.2.3/8',
        'allowed_ip=-192.168.0.0/16',
        'allowed_ip=fd00::1/64',
        'allowed_ip=::ffff:1.2.3.4/128',
        'allowed_ip=0.0.0.0/0',
        '',
      ].join('\n'),
    ),
  );
  assert.deepEqual(peer, {
    kind: 'peer',
    publicKey: bytesOf(KEY_A),
    updateOnly: false,
    remove: false,
    presharedKey: bytesOf(KEY_B),
    endpoint: { family: 4, address: v4(192, 0, 2, 1), port: 51820 },
    persistentKeepalive: 65535,
    replaceAllowedIps: false,
    allowedIps: [
      // Host bits are cleared, as wireguard-go's table stores the prefix.
      { bytes: v4(10, 0, 0, 0), prefixLength: 8, remove: false },
      { bytes: v4(192, 168, 0, 0), prefixLength: 16, remove: true },
      { bytes: v6('fd'), prefixLength: 64, remove: false },
      { bytes: v6('00000000000000000000ffff01020304'), prefixLength: 128, remove: false },
      { bytes: v4(0, 0, 0, 0), prefixLength: 0, remove: false },
    ],
  });
  const updateOnly = onlyPeer(parseSet(`public_key=${KEY_A}\nupdate_only=true\npreshared_key=${ZERO_KEY}\n`));
  assert.equal(updateOnly.updateOnly, true);
  assert.equal(updateOnly.presharedKey, null);
  // Fields never mentioned stay absent (nothing to change), not defaulted.
  const bare = onlyPeer(parseSet(`public_key=${KEY_B}\n`));
  assert.equal('presharedKey' in bare || 'endpoint' in bare || 'persistentKeepalive' in bare, false);
});

test('endpoints follow netip.ParseAddrPort: brackets exactly around IPv6, zones kept', () => {
  const endpoint = (text: string): unknown => onlyPeer(parseSet(`public_key=${KEY_A}\nendpoint=${text}\n`)).endpoint;
  assert.deepEqual(endpoint('[2001:db8::1]:0'), { family: 6, address: v6('20010db8000000000000000000000001'), port: 0 });
  assert.deepEqual(endpoint('[fe80::1%eth0]:51820'), {
    family: 6,
    address: v6('fe800000000000000000000000000001'),
    port: 51820,
    zone: 'eth0',
  });
  assert.deepEqual(endpoint('[fe80::1%7]:1'), { family: 6, address: v6('fe800000000000000000000000000001'), port: 1, zone: '7' });
  assert.deepEqual(endpoint('[::ffff:192.0.2.1]:65535'), {
    family: 6,
    address: v6('00000000000000000000ffffc0000201'),
    port: 65535,
  });
  // The last value given wins.
  const last = onlyPeer(parseSet(`public_key=${KEY_A}\nendpoint=1.1.1.1:1\nendpoint=2.2.2.2:2\n`));
  assert.deepEqual(last.endpoint, { family: 4, address: v4(2, 2, 2, 2), port: 2 });
});

test('order inside a peer section folds as wireguard-go applies it', () => {
  // replace_allowed_ips drops the changes listed before it in the same section.
  const replaced = onlyPeer(
    parseSet(`public_key=${KEY_A}\nallowed_ip=10.0.0.0/8\nallowed_ip=-10.1.0.0/16\nreplace_allowed_ips=true\nallowed_ip=10.2.0.0/16\n`),
  );
  assert.equal(replaced.replaceAllowedIps, true);
  assert.deepEqual(replaced.allowedIps, [{ bytes: v4(10, 2, 0, 0), prefixLength: 16, remove: false }]);
  // remove=true makes the rest moot (but still validated).
  const removed = onlyPeer(
    parseSet(`public_key=${KEY_A}\nendpoint=1.2.3.4:5\nremove=true\npersistent_keepalive_interval=5\nallowed_ip=10.0.0.0/8\n`),
  );
  assert.deepEqual(removed, {
    kind: 'peer',
    publicKey: bytesOf(KEY_A),
    updateOnly: false,
    remove: true,
    replaceAllowedIps: false,
    allowedIps: [],
  });
  assert.throws(() => parseSet(`public_key=${KEY_A}\nremove=true\nallowed_ip=10.0.0.0/99\n`), { errno: -22 });
  // Several sections, even for one key, stay separate and ordered.
  const sections = parseSet(`replace_peers=true\npublic_key=${KEY_A}\nremove=true\npublic_key=${KEY_B}\npublic_key=${KEY_A}\n`);
  assert.deepEqual(
    sections.map((operation) => (operation.kind === 'peer' ? [Buffer.from(operation.publicKey).toString('hex'), operation.remove] : operation.kind)),
    ['replacePeers', [KEY_A, true], [KEY_B, false], [KEY_A, false]],
  );
});

const PEER = `public_key=${KEY_A}\n`;
const ERROR_CASES: ReadonlyArray<readonly [string, number]> = [
  // Not key=value, or a blank line inside the body: EPROTO, as wireguard-go's ipcErrorProtocol.
  ['listen_port\n', UAPI_ERRNO.protocol],
  ['listen_port=1\n\nfwmark=1\n', UAPI_ERRNO.protocol],
  [`${PEER}\r\n`, UAPI_ERRNO.protocol],
  // Everything else is EINVAL.
  ['=1\n', UAPI_ERRNO.invalid],
  ['bogus=1\n', UAPI_ERRNO.invalid],
  ['Listen_port=1\n', UAPI_ERRNO.invalid],
  ['allowed_ip=10.0.0.0/8\n', UAPI_ERRNO.invalid],
  [`${PEER}listen_port=1\n`, UAPI_ERRNO.invalid],
  [`${PEER}private_key=${KEY_B}\n`, UAPI_ERRNO.invalid],
  [`${PEER}bogus=1\n`, UAPI_ERRNO.invalid],
  [`private_key=${KEY_A.slice(1)}\n`, UAPI_ERRNO.invalid],
  [`private_key=${KEY_A}0\n`, UAPI_ERRNO.invalid],
  [`private_key=${KEY_A.slice(2)}zz\n`, UAPI_ERRNO.invalid],
  [`private_key= ${KEY_A.slice(1)}\n`, UAPI_ERRNO.invalid],
  ['public_key=\n', UAPI_ERRNO.invalid],
  [`${PEER}preshared_key=${KEY_A.slice(2)}\n`, UAPI_ERRNO.invalid],
  ['listen_port=65536\n', UAPI_ERRNO.invalid],
  ['listen_port=-1\n', UAPI_ERRNO.invalid],
  ['listen_port=+1\n', UAPI_ERRNO.invalid],
  ['listen_port=\n', UAPI_ERRNO.invalid],
  ['listen_port= 1\n', UAPI_ERRNO.invalid],
  ['listen_port=0x10\n', UAPI_ERRNO.invalid],
  ['listen_port=1_000\n', UAPI_ERRNO.invalid],
  ['fwmark=4294967296\n', UAPI_ERRNO.invalid],
  ['fwmark=99999999999999999999999\n', UAPI_ERRNO.invalid],
  ['replace_peers=false\n', UAPI_ERRNO.invalid],
  ['replace_peers=TRUE\n', UAPI_ERRNO.invalid],
  [`${PEER}update_only=false\n`, UAPI_ERRNO.invalid],
  [`${PEER}remove=1\n`, UAPI_ERRNO.invalid],
  [`${PEER}replace_allowed_ips=yes\n`, UAPI_ERRNO.invalid],
  [`${PEER}persistent_keepalive_interval=65536\n`, UAPI_ERRNO.invalid],
  [`${PEER}persistent_keepalive_interval=off\n`, UAPI_ERRNO.invalid],
  [`${PEER}protocol_version=2\n`, UAPI_ERRNO.invalid],
  [`${PEER}protocol_version=\n`, UAPI_ERRNO.invalid],
  [`${PEER}protocol_version=01\n`, UAPI_ERRNO.invalid],
  ...[
    '1.2.3.4',
    '1.2.3.4:',
    ':80',
    '[::1]',
    '::1:80',
    '[1.2.3.4]:80',
    '1.2.3.4:65536',
    '1.2.3.4:-1',
    '01.2.3.4:1',
    '1.2.3:1',
    '256.1.1.1:1',
    'host.example:51820',
    '1.2.3.4%eth0:1',
    '[fe80::1%]:1',
    '[fe80::1%a/b]:1',
    '[fe80::1%averyveryverylongname]:1',
    '[1.2.3.4%eth0]:1',
    '[::1/128]:1',
    '[fe80:::1]:1',
    '[1:2:3:4:5:6:7:8:9]:1',
    '[1:2:3:4:5:6:7::8]:1',
  ].map((endpoint) => [`${PEER}endpoint=${endpoint}\n`, UAPI_ERRNO.invalid] as const),
  ...[
    '10.0.0.0',
    '10.0.0.0/33',
    '::/129',
    '10.0.0.0/01',
    '10.0.0.0/-1',
    '10.0.0.0/',
    '-',
    '--10.0.0.0/8',
    '+10.0.0.0/8',
    'fe80::%eth0/64',
    '10.0.0.0/8/8',
    ' 10.0.0.0/8',
    'example.com/8',
  ].map((prefix) => [`${PEER}allowed_ip=${prefix}\n`, UAPI_ERRNO.invalid] as const),
];

test('malformed input throws UapiError with wireguard-go errno values', () => {
  for (const [body, errno] of ERROR_CASES) {
    assert.throws(
      () => parseSet(body),
      (error: unknown) => {
        assert.ok(error instanceof UapiError, `${JSON.stringify(body)}: ${String(error)}`);
        assert.equal(error.errno, errno, JSON.stringify(body));
        assert.equal(error.code, 'ZTGATE_ERR_UAPI');
        assert.match(error.message, /^uapi: /);
        return true;
      },
    );
  }
});

test('error messages name the offending line', () => {
  assert.throws(() => parseSet(`listen_port=1\n${PEER}allowed_ip=10.0.0.0/40\n`), {
    message: /\(line 3: "allowed_ip=10\.0\.0\.0\/40"\)$/,
  });
  // A huge line is quoted only in part.
  assert.throws(() => parseSet(`x${'y'.repeat(100_000)}=1\n`), (error: Error) => error.message.length < 400);
  assert.throws(() => parseSet(7 as unknown as string), TypeError);
});

test('formatGet writes wireguard-go\'s exact reply', () => {
  const snapshot: DeviceSnapshot = {
    privateKey: bytesOf(KEY_A),
    listenPort: 51820,
    fwmark: 7,
    peers: [
      {
        publicKey: bytesOf(KEY_B),
        presharedKey: null,
        endpoint: '[2001:db8::1]:51820',
        lastHandshakeMs: 1_700_000_000_123.5,
        txBytes: 1,
        rxBytes: Number.MAX_SAFE_INTEGER,
        persistentKeepalive: 25,
        allowedIps: [
          { bytes: v4(10, 0, 0, 0), prefixLength: 24 },
          { bytes: v6('fd00'), prefixLength: 64 },
          { bytes: v6('00000000000000000000ffff0a000001'), prefixLength: 128 },
          { bytes: v6(''), prefixLength: 0 },
        ],
      },
      {
        publicKey: bytesOf(KEY_A),
        presharedKey: bytesOf(KEY_B),
        endpoint: null,
        lastHandshakeMs: 0,
        txBytes: 0,
        rxBytes: 0,
        persistentKeepalive: 0,
        allowedIps: [],
      },
    ],
  };
  assert.equal(
    formatGet(snapshot),
    [
      `private_key=${KEY_A}`,
      'listen_port=51820',
      'fwmark=7',
      `public_key=${KEY_B}`,
      `preshared_key=${ZERO_KEY}`,
      'protocol_version=1',
      'endpoint=[2001:db8::1]:51820',
      'last_handshake_time_sec=1700000000',
      'last_handshake_time_nsec=123500000',
      'tx_bytes=1',
      'rx_bytes=9007199254740991',
      'persistent_keepalive_interval=25',
      'allowed_ip=10.0.0.0/24',
      'allowed_ip=fd00::/64',
      'allowed_ip=::ffff:10.0.0.1/128',
      'allowed_ip=::/0',
      `public_key=${KEY_A}`,
      `preshared_key=${KEY_B}`,
      'protocol_version=1',
      'last_handshake_time_sec=0',
      'last_handshake_time_nsec=0',
      'tx_bytes=0',
      'rx_bytes=0',
      'persistent_keepalive_interval=0',
      'errno=0',
      '',
      '',
    ].join('\n'),
  );
  // No key, port 0 and fwmark 0 are left out, as wireguard-go does.
  assert.equal(formatGet({ privateKey: null, listenPort: 0, fwmark: 0, peers: [] }), 'errno=0\n\n');
  assert.equal(formatGet({ privateKey: new Uint8Array(32), listenPort: 0, fwmark: 0, peers: [] }), 'errno=0\n\n');
  assert.equal(formatErrno(-22), 'errno=-22\n\n');
  assert.throws(() => formatErrno(1.5), RangeError);
});

test('formatGet refuses snapshots it cannot represent', () => {
  const peer = {
    publicKey: bytesOf(KEY_A),
    presharedKey: null,
    endpoint: null,
    lastHandshakeMs: 0,
    txBytes: 0,
    rxBytes: 0,
    persistentKeepalive: 0,
    allowedIps: [] as Cidr[],
  };
  const device = { privateKey: null, listenPort: 0, fwmark: 0 };
  const bad: DeviceSnapshot[] = [
    { ...device, privateKey: new Uint8Array(31), peers: [] },
    { ...device, listenPort: 65536, peers: [] },
    { ...device, fwmark: -1, peers: [] },
    { ...device, peers: [{ ...peer, publicKey: new Uint8Array(33) }] },
    { ...device, peers: [{ ...peer, presharedKey: new Uint8Array(1) }] },
    { ...device, peers: [{ ...peer, endpoint: '1.2.3.4:5\nprivate_key=00' }] },
    { ...device, peers: [{ ...peer, lastHandshakeMs: -1 }] },
    { ...device, peers: [{ ...peer, lastHandshakeMs: Number.NaN }] },
    { ...device, peers: [{ ...peer, txBytes: 1.5 }] },
    { ...device, peers: [{ ...peer, rxBytes: 2 ** 60 }] },
    { ...device, peers: [{ ...peer, persistentKeepalive: 70000 }] },
    { ...device, peers: [{ ...peer, allowedIps: [{ bytes: new Uint8Array(5), prefixLength: 0 }] }] },
    { ...device, peers: [{ ...peer, allowedIps: [{ bytes: new Uint8Array(4), prefixLength: 33 }] }] },
  ];
  for (const snapshot of bad) assert.throws(() => formatGet(snapshot), RangeError);
});

// ---- get → set round trip ----

const keyArbitrary = fc.uint8Array({ minLength: 32, maxLength: 32 });
const nonZeroKey = keyArbitrary.filter((key) => key.some((byte) => byte !== 0));

function masked(bytes: Uint8Array, prefixLength: number): Uint8Array {
  return bytes.map((byte, i) => byte & ((0xff00 >>> Math.min(8, Math.max(0, prefixLength - 8 * i))) & 0xff));
}

const cidrArbitrary: fc.Arbitrary<Cidr> = fc.oneof(
  fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 })),
  fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 })),
).map(([bytes, prefixLength]) => ({ bytes: masked(bytes, prefixLength), prefixLength }));

const endpointArbitrary = fc.oneof(
  fc.record({ family: fc.constant(4 as const), address: fc.uint8Array({ minLength: 4, maxLength: 4 }), port: fc.integer({ min: 0, max: 65535 }) }),
  fc.record({ family: fc.constant(6 as const), address: fc.uint8Array({ minLength: 16, maxLength: 16 }), port: fc.integer({ min: 0, max: 65535 }) }),
);

const snapshotArbitrary = fc.record({
  privateKey: fc.option(nonZeroKey),
  listenPort: fc.integer({ min: 0, max: 65535 }),
  fwmark: fc.integer({ min: 0, max: 0xffff_ffff }),
  peers: fc.array(
    fc.record({
      publicKey: keyArbitrary,
      presharedKey: fc.option(nonZeroKey),
      endpoint: fc.option(endpointArbitrary),
      lastHandshakeMs: fc.nat(),
      txBytes: fc.maxSafeNat(),
      rxBytes: fc.maxSafeNat(),
      persistentKeepalive: fc.integer({ min: 0, max: 65535 }),
      allowedIps: fc.array(cidrArbitrary, { maxLength: 8 }),
    }),
    { maxLength: 4 },
  ),
});

/** Only these get keys are settable; the rest (counters, handshake time, errno) are read-only. */
const SETTABLE = /^(private_key|listen_port|fwmark|public_key|preshared_key|protocol_version|endpoint|persistent_keepalive_interval|allowed_ip)=/;

test('a get reply, less its read-only lines, is a set body that reproduces the snapshot', () => {
  fc.assert(
    fc.property(snapshotArbitrary, (generated) => {
      const snapshot: DeviceSnapshot = {
        ...generated,
        peers: generated.peers.map((peer) => ({
          ...peer,
          endpoint:
            peer.endpoint === null
              ? null
              : peer.endpoint.family === 4
                ? `${formatIpv4(peer.endpoint.address)}:${peer.endpoint.port}`
                : `[${formatIpv6(peer.endpoint.address)}]:${peer.endpoint.port}`,
        })),
      };
      const text = formatGet(snapshot);
      assert.ok(text.endsWith('\nerrno=0\n\n') || text === 'errno=0\n\n');
      const body = text.split('\n').filter((line) => SETTABLE.test(line)).map((line) => `${line}\n`).join('');
      const operations = parseSet(body);
      const expected: SetOperation[] = [];
      if (generated.privateKey !== null) expected.push({ kind: 'privateKey', key: generated.privateKey });
      if (generated.listenPort !== 0) expected.push({ kind: 'listenPort', port: generated.listenPort });
      if (generated.fwmark !== 0) expected.push({ kind: 'fwmark', value: generated.fwmark });
      for (const peer of generated.peers) {
        expected.push({
          kind: 'peer',
          publicKey: peer.publicKey,
          updateOnly: false,
          remove: false,
          presharedKey: peer.presharedKey,
          ...(peer.endpoint !== null && {
            // An IPv4-mapped IPv6 endpoint keeps family 6: brackets decide it, as in netip.
            endpoint: { family: peer.endpoint.family, address: peer.endpoint.address, port: peer.endpoint.port },
          }),
          persistentKeepalive: peer.persistentKeepalive,
          replaceAllowedIps: false,
          allowedIps: peer.allowedIps.map((cidr) => ({ ...cidr, remove: false })),
        });
      }
      assert.deepEqual(operations, expected);
    }),
    { numRuns: 500, interruptAfterTimeLimit: 5000 },
  );
});

// ---- Fuzzing ----

const KEYS = [
  'private_key', 'listen_port', 'fwmark', 'replace_peers', 'public_key', 'update_only', 'remove', 'preshared_key',
  'endpoint', 'persistent_keepalive_interval', 'replace_allowed_ips', 'allowed_ip', 'protocol_version', 'errno', '',
];
const VALUE_PIECES = [
  KEY_A, ZERO_KEY, 'true', 'false', '1', '0', '65535', '65536', '4294967296', '10.0.0.0/8', '-fd00::/64', '[::1]:1',
  '1.2.3.4:5', '[fe80::1%eth0]:9', '::ffff:1.2.3.4/96', '%', '[', ']', ':', '/', '=', '\r', '-', '.', 'ff', '',
];

test('fuzz: parseSet only ever throws UapiError', () => {
  const lineArbitrary = fc.oneof(
    fc.tuple(fc.constantFrom(...KEYS), fc.array(fc.constantFrom(...VALUE_PIECES), { maxLength: 4 })).map(
      ([key, pieces]) => `${key}=${pieces.join('')}`,
    ),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
  );
  fc.assert(
    fc.property(fc.array(lineArbitrary, { maxLength: 12 }), fc.boolean(), (lines, trailingNewline) => {
      const body = lines.join('\n') + (trailingNewline ? '\n' : '');
      try {
        const operations = parseSet(body);
        assert.ok(Array.isArray(operations));
      } catch (error) {
        if (!(error instanceof UapiError)) throw error;
        assert.ok(([-5, -22, -55, -71, -98] as number[]).includes(error.errno));
      }
    }),
    { numRuns: 20_000, interruptAfterTimeLimit: 5000 },
  );
});

// ---- Framing ----

function decodeAll(chunks: readonly Uint8Array[], maxRequestBytes?: number): UapiRequest[] {
  const decoder = new UapiRequestDecoder(maxRequestBytes);
  const requests: UapiRequest[] = [];
  for (const chunk of chunks) {
    decoder.push(chunk);
    for (let request = decoder.next(); request !== undefined; request = decoder.next()) requests.push(request);
  }
  return requests;
}

const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

test('framing: pipelined requests, CRLF terminators, rejects and closes', () => {
  assert.deepEqual(decodeAll([encode('get=1\n\nset=1\nlisten_port=1\n\nset=1\n\nset=1\na=b\r\n\r\nget=1\n\n')]), [
    { kind: 'get' },
    { kind: 'set', body: 'listen_port=1\n' },
    { kind: 'set', body: '' },
    { kind: 'set', body: 'a=b\r\n' },
    { kind: 'get' },
  ]);
  // A byte after get=1 other than the blank line: EINVAL, then the stream continues.
  const afterGet = decodeAll([encode('get=1\nxget=1\n\n')]);
  assert.equal(afterGet.length, 2);
  assert.equal(afterGet[0].kind === 'reject' && afterGet[0].error.errno, UAPI_ERRNO.invalid);
  assert.deepEqual(afterGet[1], { kind: 'get' });
  // Unknown operations close the connection; nothing after them is read.
  for (const line of ['hello\n', '\n', 'get=2\n', 'set=1x\n', 'GET=1\n', 'get=1\r\n']) {
    const requests = decodeAll([encode(`${line}get=1\n\n`)]);
    assert.equal(requests.length, 1, JSON.stringify(line));
    assert.equal(requests[0].kind, 'unknownOperation');
  }
});

test('framing: the request size bound', () => {
  const body = 'allowed_ip=10.0.0.0/8\n'.repeat(10);
  assert.deepEqual(decodeAll([encode(`set=1\n${body}\n`)], body.length), [{ kind: 'set', body }]);
  const over = decodeAll([encode(`set=1\n${body}x\n\nget=1\n\n`)], body.length);
  assert.equal(over.length, 1);
  assert.equal(over[0].kind === 'abort' && over[0].error.errno, UAPI_ERRNO.io);
  // Also without any newline in sight (one endless line).
  const endless = decodeAll([encode('set=1\n'), new Uint8Array(64).fill(0x61), new Uint8Array(64).fill(0x61)], 100);
  assert.equal(endless.length, 1);
  assert.equal(endless[0].kind, 'abort');
  assert.throws(() => new UapiRequestDecoder(0), RangeError);
});

test('framing: any split of the stream into chunks gives the same requests', () => {
  const requestArbitrary = fc.oneof(
    fc.constant('get=1\n\n'),
    fc
      .array(fc.constantFrom('listen_port=1', `public_key=${KEY_A}`, 'allowed_ip=10.0.0.0/8', 'x=y\r', 'z'), { maxLength: 5 })
      .chain((lines) =>
        fc.constantFrom('\n', '\r\n').map((terminator) => `set=1\n${lines.map((line) => `${line}\n`).join('')}${terminator}`),
      ),
  );
  fc.assert(
    fc.property(fc.array(requestArbitrary, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (requests, cuts) => {
      const stream = encode(requests.join(''));
      const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
      const chunks: Uint8Array[] = [];
      let start = 0;
      for (const point of [...points, stream.length]) {
        chunks.push(stream.subarray(start, point));
        start = point;
      }
      const whole = decodeAll([stream]);
      assert.equal(whole.length, requests.length);
      assert.deepEqual(decodeAll(chunks), whole);
      // Byte by byte, too.
      assert.deepEqual(decodeAll(Array.from(stream, (byte) => Uint8Array.of(byte))), whole);
    }),
    { numRuns: 500, interruptAfterTimeLimit: 5000 },
  );
});

test('framing: inRequest tracks partial requests', () => {
  const decoder = new UapiRequestDecoder();
  assert.equal(decoder.inRequest, false);
  decoder.push(encode('se'));
  assert.equal(decoder.inRequest, true);
  decoder.push(encode('t=1\nlisten_port=1\n'));
  assert.equal(decoder.inRequest, true);
  decoder.push(encode('\n'));
  assert.equal(decoder.inRequest, false);
  assert.deepEqual(decoder.next(), { kind: 'set', body: 'listen_port=1\n' });
  assert.equal(decoder.next(), undefined);
});
