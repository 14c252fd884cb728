// The UAPI socket server in a temporary directory (no root needed): placement and permissions,
// refusing a live socket and replacing a stale one, ordered replies to pipelined requests, and
// clients that misbehave (disconnect mid-request, oversized bodies, unknown operations).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { access, lstat, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SyscallError } from '../../src/errors.ts';
import { UAPI_ERRNO, UapiError, formatGet, parseSet } from '../../src/uapi/protocol.ts';
import { listenUapi, type UapiServer } from '../../src/uapi/server.ts';
import { FakeDevice } from './uapi-fake-device.ts';

const KEY = 'c3'.repeat(32);

async function withServer(
  body: (server: UapiServer, device: FakeDevice, directory: string) => Promise<void>,
  options: { maxRequestBytes?: number; device?: FakeDevice } = {},
): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'ztuapi-unit-'));
  const directory = join(root, 'run', 'wireguard');
  const device = options.device ?? new FakeDevice();
  const server = await listenUapi({
    interfaceName: 'zttest0',
    handler: device,
    socketDirectory: directory,
    ...(options.maxRequestBytes !== undefined && { maxRequestBytes: options.maxRequestBytes }),
  });
  try {
    await body(server, device, directory);
  } finally {
    await server.close();
    await rm(root, { recursive: true, force: true });
  }
}

/** Opens a connection, writes each part in turn, and returns everything read until the server closes or `replies` replies came. */
async function exchange(path: string, parts: readonly string[], replies: number, halfClose = false): Promise<string> {
  const socket = connect(path);
  try {
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    for (const part of parts) socket.write(part);
    if (halfClose) socket.end();
    return await readReplies(socket, replies);
  } finally {
    socket.destroy();
  }
}

async function readReplies(socket: Socket, replies: number): Promise<string> {
  socket.setEncoding('utf8');
  let received = '';
  for await (const chunk of socket) {
    received += chunk as string;
    if (received.split('\n\n').length - 1 >= replies) break;
  }
  return received;
}

test('socket placement: directory 0755 created, socket 0700, removed on close', async () => {
  let socketPath = '';
  await withServer(async (server, _device, directory) => {
    socketPath = server.socketPath;
    assert.equal(socketPath, join(directory, 'zttest0.sock'));
    assert.equal((await stat(directory)).mode & 0o777, 0o755);
    const socketStats = await lstat(socketPath);
    assert.ok(socketStats.isSocket());
    assert.equal(socketStats.mode & 0o777, 0o700);
  });
  await assert.rejects(access(socketPath), { code: 'ENOENT' });
});

test('a live socket is refused, a stale one replaced, a non-socket left alone', async () => {
  await withServer(async (_server, _device, directory) => {
    await assert.rejects(
      listenUapi({ interfaceName: 'zttest0', handler: new FakeDevice(), socketDirectory: directory }),
      (error: unknown) => error instanceof SyscallError && error.errno === 98,
    );
    // The first server still answers.
    assert.equal(await exchange(join(directory, 'zttest0.sock'), ['get=1\n\n'], 1), 'errno=0\n\n');

    // A socket whose process died (SIGKILL leaves the file behind) is taken over.
    const stalePath = join(directory, 'ztstale.sock');
    const child = spawn(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(stalePath)}, () => console.log('up'))`,
    ]);
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.once('data', () => resolve());
        child.once('error', reject);
      });
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((resolve) => child.once('exit', resolve));
    assert.ok((await lstat(stalePath)).isSocket());
    const replacement = await listenUapi({ interfaceName: 'ztstale', handler: new FakeDevice(), socketDirectory: directory });
    try {
      assert.equal(await exchange(stalePath, ['get=1\n\n'], 1), 'errno=0\n\n');
    } finally {
      await replacement.close();
    }

    const filePath = join(directory, 'ztfile.sock');
    await writeFile(filePath, 'not a socket');
    await assert.rejects(
      listenUapi({ interfaceName: 'ztfile', handler: new FakeDevice(), socketDirectory: directory }),
      (error: unknown) => error instanceof SyscallError && error.errno === 17,
    );
    assert.equal(await readFile(filePath, 'utf8'), 'not a socket');
  });
});

test('interface names are checked', async () => {
  for (const name of ['', 'a/b', '.', '..', 'sixteen-chars-xx', 'has space', 'a:b']) {
    await assert.rejects(listenUapi({ interfaceName: name, handler: new FakeDevice(), socketDirectory: tmpdir() }), RangeError);
  }
});

test('pipelined requests are answered in order on one connection', async () => {
  await withServer(async (server, device) => {
    const reply = await exchange(
      server.socketPath,
      ['get=1\n\nset=1\nlisten_port=5\nfwmark=9\n\n', 'get=1\n\n', `set=1\npublic_key=${KEY}\nallowed_ip=10.0.0.1/8\n\nget=1\n\n`],
      5,
    );
    assert.equal(
      reply,
      'errno=0\n\n' +
        'errno=0\n\n' +
        'listen_port=5\nfwmark=9\nerrno=0\n\n' +
        'errno=0\n\n' +
        formatGet(device.snapshot()),
    );
    assert.match(reply, /allowed_ip=10\.0\.0\.0\/8\n/);
    // One byte per write works the same.
    const request = 'set=1\nlisten_port=6\n\nget=1\n\n';
    assert.equal(await exchange(server.socketPath, [...request], 2), `errno=0\n\n${formatGet(device.snapshot())}`);
    assert.equal(device.listenPort, 6);
  });
});

test('errors: malformed set changes nothing; handler errors map to errno', async () => {
  await withServer(async (server, device) => {
    device.busyPorts.add(4000);
    const before = formatGet(device.snapshot());
    const reply = await exchange(
      server.socketPath,
      [
        `set=1\nlisten_port=1\npublic_key=${KEY}\nallowed_ip=10.0.0.0/8\nendpoint=nowhere\n\n`,
        'set=1\nno equals sign\n\n',
        'set=1\nlisten_port=4000\n\n',
        'get=1\nxget=1\n\n',
      ],
      5,
    );
    assert.equal(reply, `errno=-22\n\nerrno=-71\n\nerrno=-98\n\nerrno=-22\n\n${before}`);
    assert.equal(device.applyCount, 0);

    device.apply = () => {
      throw new Error('bug');
    };
    assert.equal(await exchange(server.socketPath, ['set=1\n\n'], 1), `errno=${UAPI_ERRNO.unknown}\n\n`);
    device.snapshot = () => {
      throw new UapiError(UAPI_ERRNO.io, 'uapi: test');
    };
    assert.equal(await exchange(server.socketPath, ['get=1\n\n'], 1), 'errno=-5\n\n');
  });
});

test('misbehaving clients: mid-request disconnect, oversized body, unknown operation', async () => {
  await withServer(
    async (server, device) => {
      // Half-close in the middle of a set: the server closes without applying or replying.
      assert.equal(await exchange(server.socketPath, ['set=1\nlisten_port=7\n'], 1, true), '');
      // A hard disconnect mid-request, then a normal request on a new connection.
      const abrupt = connect(server.socketPath);
      await new Promise((resolve) => abrupt.once('connect', resolve));
      abrupt.write('set=1\nlisten_port=8\n');
      abrupt.destroy();
      assert.equal(await exchange(server.socketPath, ['get=1\n\n'], 1), 'errno=0\n\n');
      assert.equal(device.applyCount, 0);

      // A body over the bound: errno -5, then the connection is closed (the rest is not read).
      const big = `set=1\n${'allowed_ip=10.0.0.0/8\n'.repeat(100)}\nget=1\n\n`;
      assert.equal(await exchange(server.socketPath, [`set=1\npublic_key=${KEY}\n\n`, big], 3), 'errno=0\n\nerrno=-5\n\n');
      assert.equal(device.applyCount, 1);

      // An unknown operation: closed without a reply, as wireguard-go does.
      assert.equal(await exchange(server.socketPath, ['get=1\n\n', 'hello\nget=1\n\n'], 3), formatGet(device.snapshot()));

      // A complete request followed by a half-close is still answered.
      assert.equal(await exchange(server.socketPath, ['get=1\n\n'], 2, true), formatGet(device.snapshot()));
    },
    { maxRequestBytes: 1024 },
  );
});

test('many pipelined large replies arrive complete and in order', async () => {
  const device = new FakeDevice();
  const prefixes = Array.from({ length: 2000 }, (_, i) => `allowed_ip=10.${i >> 8}.${i & 255}.0/24\n`).join('');
  device.apply(parseSet(`listen_port=1\npublic_key=${KEY}\n${prefixes}`));
  await withServer(
    async (server) => {
      const single = formatGet(device.snapshot());
      const count = 200;
      // The client reads nothing for a while, so the server must hold back (pause) rather than queue ~10 MB.
      const socket = connect(server.socketPath);
      let reply: string;
      try {
        socket.pause();
        socket.write('get=1\n\n'.repeat(count));
        await new Promise((resolve) => setTimeout(resolve, 200));
        reply = await readReplies(socket, count);
      } finally {
        socket.destroy();
      }
      assert.equal(reply.length, single.length * count);
      assert.equal(reply, single.repeat(count));
    },
    { device },
  );
});

test('close drops open connections', async () => {
  const root = await mkdtemp(join(tmpdir(), 'ztuapi-unit-'));
  try {
    const server = await listenUapi({ interfaceName: 'zttest1', handler: new FakeDevice(), socketDirectory: root });
    const client = connect(server.socketPath);
    await new Promise((resolve) => client.once('connect', resolve));
    const closed = new Promise((resolve) => client.once('close', resolve));
    await server.close();
    await closed;
    await assert.rejects(access(server.socketPath), { code: 'ENOENT' });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
