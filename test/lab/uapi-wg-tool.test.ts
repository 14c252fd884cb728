// The stock wg(8) tool (wireguard-tools) against the UAPI server, backed by an in-memory device:
// it must manage ztgate exactly as it manages wireguard-go. Uses /var/run/wireguard (root) and a
// per-process interface name; the socket is removed even when an assertion fails.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { x25519 } from '@noble/curves/ed25519.js';
import { listenUapi } from '../../src/uapi/server.ts';
import { formatGet } from '../../src/uapi/protocol.ts';
import { FakeDevice } from '../unit/uapi-fake-device.ts';

const run = promisify(execFile);
const WG = '/usr/bin/wg';
const interfaceName = `ztuapi${process.pid}`;

async function wg(...args: string[]): Promise<string> {
  const { stdout } = await run(WG, args, { maxBuffer: 256 * 1024 * 1024 });
  return stdout;
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

/** Sends raw bytes on a fresh connection and collects `count` replies (each ending in a blank line). */
async function rawExchange(socketPath: string, request: string, count: number): Promise<string[]> {
  const socket = connect(socketPath);
  try {
    socket.setEncoding('utf8');
    socket.write(request);
    let received = '';
    for await (const chunk of socket) {
      received += chunk as string;
      if (received.split('\n\n').length - 1 >= count) break;
    }
    return received.split(/(?<=\n\n)/).slice(0, count);
  } finally {
    socket.destroy();
  }
}

test('wg(8) configures and reads back ztgate through the UAPI socket', async (t) => {
  const device = new FakeDevice();
  const server = await listenUapi({ interfaceName, handler: device });
  const scratch = await mkdtemp(join(tmpdir(), 'ztuapi-'));
  try {
    const privateKey = x25519.utils.randomSecretKey();
    const publicKey = x25519.getPublicKey(privateKey);
    const peerPublic = x25519.getPublicKey(x25519.utils.randomSecretKey());
    const keyFile = join(scratch, 'private');
    await writeFile(keyFile, `${base64(privateKey)}\n`, { mode: 0o600 });

    await t.test('wg set', async () => {
      await wg('set', interfaceName, 'private-key', keyFile, 'listen-port', '51999',
        'peer', base64(peerPublic), 'allowed-ips', '10.0.0.0/24,fd00::/64', 'endpoint', '127.0.0.1:1234',
        'persistent-keepalive', '25');
      assert.deepEqual(device.privateKey, privateKey);
      assert.equal(device.listenPort, 51999);
      assert.equal(device.peers.size, 1);
      const [peer] = device.peers.values();
      assert.deepEqual(peer.publicKey, peerPublic);
      assert.equal(peer.endpoint, '127.0.0.1:1234');
      assert.equal(peer.persistentKeepalive, 25);
      assert.deepEqual([...peer.allowedIps.keys()], ['10.0.0.0/24', '253.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0/64']);
    });

    await t.test('wg showconf', async () => {
      const expected = [
        '[Interface]',
        'ListenPort = 51999',
        `PrivateKey = ${base64(privateKey)}`,
        '',
        '[Peer]',
        `PublicKey = ${base64(peerPublic)}`,
        'AllowedIPs = 10.0.0.0/24, fd00::/64',
        'Endpoint = 127.0.0.1:1234',
        'PersistentKeepalive = 25',
        '',
      ].join('\n');
      assert.equal(await wg('showconf', interfaceName), expected);
    });

    await t.test('wg show dump reports counters and the handshake time', async () => {
      const [peer] = device.peers.values();
      peer.lastHandshakeMs = 1_700_000_123_456;
      peer.txBytes = 9_007_199_254_740_991;
      peer.rxBytes = 4242;
      const lines = (await wg('show', interfaceName, 'dump')).trimEnd().split('\n');
      // wg derives the public key from the private key we reported: a cross-check of both.
      assert.deepEqual(lines, [
        [base64(privateKey), base64(publicKey), '51999', 'off'].join('\t'),
        [base64(peerPublic), '(none)', '127.0.0.1:1234', '10.0.0.0/24,fd00::/64', '1700000123', '4242',
          '9007199254740991', '25'].join('\t'),
      ]);
      assert.equal(await wg('show', interfaceName, 'fwmark'), 'off\n');
      assert.match(await wg('show', 'interfaces'), new RegExp(`(^|\\s)${interfaceName}(\\s|$)`));
    });

    await t.test('wg setconf with one peer holding 130,000 allowed IPs', async () => {
      const expected: string[] = [];
      for (let i = 0; i < 100_000; i++) expected.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);
      for (let i = 0; i < 30_000; i++) expected.push(`fd00::1:${i.toString(16)}/128`);
      const bigPeer = x25519.getPublicKey(x25519.utils.randomSecretKey());
      const config = ['[Interface]', `PrivateKey = ${base64(privateKey)}`, 'ListenPort = 52000', '', '[Peer]',
        `PublicKey = ${base64(bigPeer)}`];
      for (let i = 0; i < expected.length; i += 1000) config.push(`AllowedIPs = ${expected.slice(i, i + 1000).join(', ')}`);
      const configFile = join(scratch, 'big.conf');
      await writeFile(configFile, `${config.join('\n')}\n`);

      const started = performance.now();
      await wg('setconf', interfaceName, configFile);
      const setMs = performance.now() - started;
      const shown = performance.now();
      const showconf = await wg('showconf', interfaceName);
      const showMs = performance.now() - shown;
      t.diagnostic(`setconf 130,000 allowed IPs: ${setMs.toFixed(0)} ms; showconf: ${showMs.toFixed(0)} ms`);

      // setconf replaces the peer set: the earlier peer is gone.
      assert.equal(device.peers.size, 1);
      assert.equal(device.listenPort, 52000);
      const allowedLine = showconf.split('\n').find((line) => line.startsWith('AllowedIPs = '));
      assert.ok(allowedLine !== undefined);
      const listed = allowedLine.slice('AllowedIPs = '.length).split(', ');
      assert.equal(listed.length, 130_000);
      // Compared as sets, reporting only a few differences (a full diff of 130,000 items is huge).
      const listedSet = new Set(listed);
      assert.deepEqual(expected.filter((prefix) => !listedSet.has(prefix)).slice(0, 5), []);
      assert.ok(setMs < 30_000, `setconf took ${setMs} ms`);
    });

    await t.test('a malformed request gets a non-zero errno and changes nothing', async () => {
      const before = formatGet(device.snapshot());
      const applied = device.applyCount;
      const validKey = Buffer.from(peerPublic).toString('hex');
      const replies = await rawExchange(
        server.socketPath,
        // A valid device line, a valid peer, then one bad prefix: nothing may be applied.
        `set=1\nlisten_port=1\nreplace_peers=true\npublic_key=${validKey}\nallowed_ip=10.0.0.0/33\n\n` +
          'set=1\nlisten_port\n\n' +
          'get=1\n\n',
        3,
      );
      assert.equal(replies[0], 'errno=-22\n\n');
      assert.equal(replies[1], 'errno=-71\n\n');
      assert.equal(replies[2], before);
      assert.equal(device.applyCount, applied);
      assert.equal(formatGet(device.snapshot()), before);
      // An error from the device reaches wg(8), which prints it as strerror text and fails.
      device.busyPorts.add(52001);
      await assert.rejects(wg('set', interfaceName, 'listen-port', '52001'), (error: { stderr: string }) => {
        assert.match(error.stderr, /Unable to modify interface: Address already in use/);
        return true;
      });
      assert.equal(formatGet(device.snapshot()), before);
    });
  } finally {
    await server.close();
    await rm(scratch, { recursive: true, force: true });
  }
  await assert.rejects(access(server.socketPath), { code: 'ENOENT' });
});
