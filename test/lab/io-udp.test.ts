// The shared UDP socket: batched receive/send with pktinfo on both families, explicit source
// addresses and their failure, use from a worker thread, SharedArrayBuffer slots, poll waits,
// and truncation (rebinding: io-udp-steering.test.ts). Everything runs on loopback inside a fresh namespace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { MSG_TRUNC, SOL_SOCKET, SO_RCVBUF, SO_SNDBUF, getIntOption, waitReadable } from '../../src/io/libc.ts';
import { DatagramMeta, UdpSocket, formatAddress, parseAddress, sourceMayBeStale, type IpFamily } from '../../src/io/udp.ts';
import { ip, withNetns } from './io-helpers.ts';

const SLOT = 2048;

function slots(count: number): { sab: SharedArrayBuffer; views: Uint8Array[] } {
  const sab = new SharedArrayBuffer(count * SLOT);
  return { sab, views: Array.from({ length: count }, (_, i) => new Uint8Array(sab, i * SLOT, SLOT)) };
}

/** Receives until `count` datagrams arrived (or 2 s pass), reading into `views` from `first`. */
function receive(socket: UdpSocket, views: Uint8Array[], meta: DatagramMeta, count: number): number {
  let got = 0;
  const deadline = Date.now() + 2000;
  while (got < count && Date.now() < deadline) {
    if (!waitReadable(socket.fd, 100)) continue;
    // Receive into the not yet used tail of the slots and the metadata.
    const tailMeta = new DatagramMeta(meta.capacity - got, meta.words.buffer, got * 64);
    got += socket.recvBatch(views.slice(got), tailMeta);
  }
  return got;
}

function address(text: string): { family: IpFamily; bytes: Uint8Array } {
  return parseAddress(text);
}

test('address helpers parse and format both families', () => {
  for (const text of ['127.0.0.1', '::1', '2001:db8::5', 'fe80::1:2', '1:2:3:4:5:6:7:8', '::']) {
    const { family, bytes } = parseAddress(text);
    assert.equal(formatAddress(family, bytes, 0), text);
  }
  for (const bad of ['1.2.3.256', '1::2::3', 'x::1', '1:2:3:4:5:6:7', '1.2.3']) assert.throws(() => parseAddress(bad), RangeError);
});

test('batched send and receive on loopback, IPv4 and IPv6, with pktinfo and explicit sources', async () => {
  await withNetns(async (ns) => {
    ip('-n', ns, 'addr', 'add', '2001:db8::5/128', 'dev', 'lo', 'nodad');
    const lo = Number(ip('-n', ns, '-o', 'link', 'show', 'lo').split(':')[0]);
    const a = UdpSocket.open(0, { batchSize: 16 });
    const b = UdpSocket.open(0, { batchSize: 16 });
    try {
      const aPort = a.port();
      const bPort = b.port();
      assert.notEqual(aPort, 0);
      assert.notEqual(aPort, bPort);
      // As root the *FORCE options pass the sysctl caps: the kernel reports twice the 7 MiB asked.
      assert.equal(getIntOption(a.fd, SOL_SOCKET, SO_RCVBUF, 'SO_RCVBUF'), 2 * (7 << 20));
      assert.equal(getIntOption(a.fd, SOL_SOCKET, SO_SNDBUF, 'SO_SNDBUF'), 2 * (7 << 20));
      // Each case: destination (an address of b), explicit source or none, expected source seen.
      const cases = [
        { to: '127.0.0.1', from: null, seen: '127.0.0.1' },
        { to: '::1', from: null, seen: '::1' },
        { to: '127.0.0.9', from: null, seen: '127.0.0.1' }, // the route's preferred source
        { to: '2001:db8::5', from: '::1', seen: '::1' },
        { to: '127.0.0.1', from: '127.0.0.5', seen: '127.0.0.5' },
        { to: '::1', from: '2001:db8::5', seen: '2001:db8::5' },
      ] as const;
      const out = slots(cases.length);
      const meta = new DatagramMeta(cases.length);
      cases.forEach((c, i) => {
        const payload = new TextEncoder().encode(`datagram ${i} to ${c.to}`);
        out.views[i]?.set(payload);
        meta.setLength(i, payload.length);
        const to = address(c.to);
        meta.setRemote(i, to.family, to.bytes, bPort);
        if (c.from === null) meta.clearLocal(i);
        else meta.setLocal(i, address(c.from).family, address(c.from).bytes);
      });
      assert.equal(a.sendBatch(out.views, meta, cases.length), cases.length);
      for (let i = 0; i < cases.length; i++) assert.equal(meta.status(i), 0);

      const into = slots(16);
      const got = new DatagramMeta(16);
      assert.equal(receive(b, into.views, got, cases.length), cases.length);
      // Loopback keeps order within one socket pair.
      cases.forEach((c, i) => {
        const text = new TextDecoder().decode(into.views[i]?.subarray(0, got.length(i)));
        assert.equal(text, `datagram ${i} to ${c.to}`);
        assert.equal(got.status(i) & MSG_TRUNC, 0);
        const family = c.to.includes(':') ? 6 : 4;
        assert.equal(got.remoteFamily(i), family);
        assert.equal(got.remoteToString(i), family === 4 ? `${c.seen}:${aPort}` : `[${c.seen}]:${aPort}`);
        assert.equal(got.localFamily(i), family);
        assert.equal(got.localToString(i), c.to);
        assert.equal(got.localIfindex(i), lo);
      });
      // IPv4 is stored as four bytes, not v4-mapped: the rest of the address field is zero.
      assert.deepEqual([...got.bytes.subarray(16, 32)], [127, 0, 0, 1, ...new Array<number>(12).fill(0)]);

      // A reply from the address the datagram arrived on: copy source → destination and local → source.
      const reply = new DatagramMeta(1);
      got.copyRemoteTo(2, reply, 0);
      reply.setLocal(0, 4, got.bytes.slice(2 * 64 + 40, 2 * 64 + 44), got.localIfindex(2));
      reply.setLength(0, 5);
      assert.equal(b.sendOne(into.views[2] as Uint8Array, reply, 0), 1);
      assert.equal(reply.status(0), 0);
      const back = new DatagramMeta(4);
      assert.equal(receive(a, slots(4).views, back, 1), 1);
      assert.equal(back.remoteToString(0), `127.0.0.9:${bPort}`);
      assert.equal(back.localToString(0), '127.0.0.1');
    } finally {
      a.close();
      b.close();
    }
  });
});

test('a source address that is not ours fails alone; cleared, the message goes out', async () => {
  await withNetns(async () => {
    const a = UdpSocket.open(0);
    const b = UdpSocket.open(0);
    try {
      const out = slots(4);
      const meta = new DatagramMeta(4);
      const dest = [address('127.0.0.1'), address('127.0.0.1'), address('::1'), address('::1')];
      const sources = [null, address('192.0.2.77'), null, address('2001:db8::77')];
      // Messages 0 and 2 go out; 1 (v4) and 3 (v6) name a source this host does not have.
      for (let i = 0; i < 4; i++) {
        out.views[i]?.fill(i + 1, 0, 10);
        meta.setLength(i, 10);
        meta.setRemote(i, dest[i]!.family, dest[i]!.bytes, b.port());
        const source = sources[i];
        if (source) meta.setLocal(i, source.family, source.bytes); else meta.clearLocal(i);
      }
      assert.equal(a.sendBatch(out.views, meta, 4), 4);
      assert.deepEqual([0, 2].map((i) => meta.status(i)), [0, 0]);
      for (const i of [1, 3]) assert.ok(sourceMayBeStale(meta.status(i)), `status ${meta.status(i)}`);
      const got = new DatagramMeta(8);
      const into = slots(8);
      assert.equal(receive(b, into.views, got, 2), 2);
      assert.deepEqual([into.views[0]?.[0], into.views[1]?.[0]], [1, 3]);
      assert.deepEqual([0, 1].map((i) => got.remoteFamily(i)), [4, 6]);

      // wireguard-go's recovery: forget the sticky source and send again.
      meta.clearLocal(1);
      assert.equal(a.sendOne(out.views[1] as Uint8Array, meta, 1), 1);
      assert.equal(meta.status(1), 0);
      assert.equal(receive(b, into.views, got, 1), 1);
      assert.equal(into.views[0]?.[0], 2);
    } finally {
      a.close();
      b.close();
    }
  });
});

test('a worker thread sends on a descriptor the main thread created, from SharedArrayBuffer slots', async () => {
  await withNetns(async () => {
    const a = UdpSocket.open(0);
    const b = UdpSocket.open(0);
    try {
      const out = slots(8);
      const metaBuffer = new SharedArrayBuffer(8 * 64);
      const meta = new DatagramMeta(8, metaBuffer);
      for (let i = 0; i < 8; i++) {
        out.views[i]?.fill(0xa0 + i, 0, 100 + i);
        meta.setLength(i, 100 + i);
        meta.setRemote(i, 6, address('::1').bytes, b.port());
      }
      const source = `
        const { parentPort, workerData } = require('node:worker_threads');
        import(workerData.module).then(({ UdpSocket, DatagramMeta }) => {
          const socket = UdpSocket.attach(workerData.fd);
          const views = Array.from({ length: 8 }, (_, i) => new Uint8Array(workerData.slots, i * ${SLOT}, ${SLOT}));
          const meta = new DatagramMeta(8, workerData.meta);
          parentPort.postMessage({ sent: socket.sendBatch(views, meta, 8), port: socket.port() });
        }, (error) => parentPort.postMessage({ error: String(error) }));`;
      const worker = new Worker(source, {
        eval: true,
        workerData: { module: new URL('../../src/io/udp.ts', import.meta.url).href, fd: a.fd, slots: out.sab, meta: metaBuffer },
      });
      const result = await new Promise<{ sent?: number; port?: number; error?: string }>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      await worker.terminate();
      assert.deepEqual(result, { sent: 8, port: a.port() });
      for (let i = 0; i < 8; i++) assert.equal(meta.status(i), 0);

      const into = slots(8);
      const got = new DatagramMeta(8);
      assert.equal(receive(b, into.views, got, 8), 8);
      for (let i = 0; i < 8; i++) {
        assert.equal(got.length(i), 100 + i);
        assert.equal(got.remoteToString(i), `[::1]:${a.port()}`);
        assert.ok(into.views[i]?.subarray(0, 100 + i).every((byte) => byte === 0xa0 + i));
        assert.equal(into.views[i]?.[100 + i], 0);
      }
    } finally {
      a.close();
      b.close();
    }
  });
});

test('a reader worker thread waits with poll and receives into SharedArrayBuffer slots', async () => {
  await withNetns(async () => {
    const a = UdpSocket.open(0);
    const b = UdpSocket.open(0);
    try {
      const into = slots(8);
      const metaBuffer = new SharedArrayBuffer(8 * 64);
      const source = `
        const { parentPort, workerData } = require('node:worker_threads');
        Promise.all([import(workerData.udp), import(workerData.libc)]).then(([{ UdpSocket, DatagramMeta }, { waitReadable }]) => {
          const socket = UdpSocket.attach(workerData.fd);
          const views = Array.from({ length: 8 }, (_, i) => new Uint8Array(workerData.slots, i * ${SLOT}, ${SLOT}));
          let got = 0;
          const deadline = Date.now() + 3000;
          parentPort.postMessage({ ready: true });
          while (got < 4 && Date.now() < deadline) {
            if (!waitReadable(workerData.fd, 50)) continue;
            got += socket.recvBatch(views.slice(got), new DatagramMeta(8 - got, workerData.meta, got * 64));
          }
          parentPort.postMessage({ got });
        }, (error) => parentPort.postMessage({ error: String(error) }));`;
      const worker = new Worker(source, {
        eval: true,
        workerData: {
          udp: new URL('../../src/io/udp.ts', import.meta.url).href,
          libc: new URL('../../src/io/libc.ts', import.meta.url).href,
          fd: b.fd, slots: into.sab, meta: metaBuffer,
        },
      });
      const messages: { ready?: boolean; got?: number; error?: string }[] = [];
      const finished = new Promise<void>((resolve, reject) => {
        worker.on('message', (message: { ready?: boolean; got?: number; error?: string }) => {
          messages.push(message);
          if (message.got !== undefined || message.error !== undefined) resolve();
        });
        worker.once('error', reject);
      });
      while (messages.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      const meta = new DatagramMeta(4);
      const out = slots(4);
      for (let i = 0; i < 4; i++) {
        out.views[i]?.fill(0x50 + i, 0, 20);
        meta.setLength(i, 20);
        meta.setRemote(i, i % 2 === 0 ? 4 : 6, address(i % 2 === 0 ? '127.0.0.1' : '::1').bytes, b.port());
      }
      assert.equal(a.sendBatch(out.views, meta, 4), 4);
      await finished;
      await worker.terminate();
      assert.deepEqual(messages.at(-1), { got: 4 });
      const got = new DatagramMeta(8, metaBuffer);
      for (let i = 0; i < 4; i++) {
        assert.equal(got.length(i), 20);
        assert.equal(got.remoteFamily(i), i % 2 === 0 ? 4 : 6);
        assert.equal(got.localToString(i), i % 2 === 0 ? '127.0.0.1' : '::1');
        assert.ok(into.views[i]?.subarray(0, 20).every((byte) => byte === 0x50 + i));
      }
    } finally {
      a.close();
      b.close();
    }
  });
});

test('waitReadable times out when idle; a datagram longer than its slot is flagged MSG_TRUNC', async () => {
  await withNetns(async () => {
    const a = UdpSocket.open(0);
    const b = UdpSocket.open(0);
    try {
      const started = Date.now();
      assert.equal(waitReadable(b.fd, 150), false);
      assert.ok(Date.now() - started >= 140);
      const meta = new DatagramMeta(1);
      assert.equal(b.recvBatch([new Uint8Array(64)], meta), 0);

      meta.setLength(0, 300);
      meta.setRemote(0, 4, address('127.0.0.1').bytes, b.port());
      assert.equal(a.sendOne(new Uint8Array(300).fill(7), meta, 0), 1);
      assert.equal(waitReadable(b.fd, 1000), true);
      const small = new Uint8Array(new SharedArrayBuffer(128), 64, 50);
      assert.equal(b.recvBatch([small], meta), 1);
      assert.equal(meta.length(0), 50);
      assert.equal(meta.status(0) & MSG_TRUNC, MSG_TRUNC);
      assert.ok(small.every((byte) => byte === 7));
      assert.deepEqual([...new Uint8Array(small.buffer, 0, 64)], new Array<number>(64).fill(0));
    } finally {
      a.close();
      b.close();
    }
  });
});
