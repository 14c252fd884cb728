// UDP GSO on send (udp(7) UDP_SEGMENT): runs of equal-size datagrams to one destination leave as
// one message and arrive as the same datagrams, byte for byte and in order; the off switch sends
// them one by one. A receiver with UDP_GRO on sees a GSO run whole, which shows it was one send.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SOL_UDP, UDP_GRO, setIntOption, waitReadable } from '../../src/io/libc.ts';
import { DatagramMeta, UdpSocket, groWantedByDefault, gsoWantedByDefault, parseAddress } from '../../src/io/udp.ts';
import { withNetns } from './io-helpers.ts';

const SLOT = 65_536;

function slots(count: number): Uint8Array[] {
  const sab = new SharedArrayBuffer(count * SLOT);
  return Array.from({ length: count }, (_, i) => new Uint8Array(sab, i * SLOT, SLOT));
}

/** Receives until `count` datagrams arrived or 2 s passed; returns their bytes. */
function receiveAll(socket: UdpSocket, count: number): Uint8Array[] {
  const views = slots(16);
  const meta = new DatagramMeta(16);
  const got: Uint8Array[] = [];
  const deadline = Date.now() + 2000;
  while (got.length < count && Date.now() < deadline) {
    if (!waitReadable(socket.fd, 100)) continue;
    const n = socket.recvBatch(views, meta);
    for (let i = 0; i < n; i++) got.push(views[i]!.slice(0, meta.length(i)));
  }
  return got;
}

/** Datagram i: its length, and its bytes derived from i so that any mix-up shows. */
function datagram(i: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, k) => (i * 31 + k * 7) & 0xff);
}

// Lengths chosen to exercise every grouping rule: a run with a shorter last member, a longer one
// that must start a new run, a different destination in the middle, an empty datagram.
const SPEC: ReadonlyArray<{ length: number; to: 'b' | 'c' }> = [
  ...Array.from({ length: 10 }, () => ({ length: 1000, to: 'b' as const })),
  { length: 500, to: 'b' },
  { length: 1200, to: 'b' },
  { length: 1200, to: 'b' },
  { length: 1200, to: 'c' },
  { length: 1200, to: 'b' },
  { length: 0, to: 'b' },
  { length: 1300, to: 'b' },
];

for (const gso of [true, false]) {
  test(`sendBatch with gso ${gso}: every datagram arrives whole, in order, at its destination`, async () => {
    await withNetns(() => {
      const a = UdpSocket.open(0, { batchSize: 64, gso });
      const b = UdpSocket.open(0, { gro: false });
      const c = UdpSocket.open(0, { gro: false });
      try {
        assert.equal(a.gso, gso);
        const views = slots(SPEC.length);
        const meta = new DatagramMeta(SPEC.length);
        const loopback = parseAddress('127.0.0.1');
        SPEC.forEach(({ length, to }, i) => {
          views[i]!.set(datagram(i, length));
          meta.setLength(i, length);
          meta.setRemote(i, loopback.family, loopback.bytes, (to === 'b' ? b : c).port());
          meta.clearLocal(i);
        });
        assert.equal(a.sendBatch(views, meta, SPEC.length), SPEC.length);
        for (let i = 0; i < SPEC.length; i++) assert.equal(meta.status(i), 0, `status of ${i}`);
        assert.equal(a.gso, gso, 'loopback takes GSO: it stays on');
        const expect = (to: 'b' | 'c'): Uint8Array[] =>
          SPEC.flatMap((d, i) => (d.to === to ? [datagram(i, d.length)] : []));
        assert.deepEqual(receiveAll(b, expect('b').length), expect('b'));
        assert.deepEqual(receiveAll(c, expect('c').length), expect('c'));
      } finally {
        a.close();
        b.close();
        c.close();
      }
    });
  });
}

test('a UDP_GRO receiver sees a GSO run as one buffer, and single datagrams without GSO', async () => {
  await withNetns(() => {
    for (const gso of [true, false]) {
      const a = UdpSocket.open(0, { gso });
      const b = UdpSocket.open(0, { gro: false });
      try {
        setIntOption(b.fd, SOL_UDP, UDP_GRO, 1, 'UDP_GRO');
        const views = slots(5);
        const meta = new DatagramMeta(5);
        const loopback = parseAddress('::1');
        for (let i = 0; i < 5; i++) {
          const length = i === 4 ? 300 : 1400;
          views[i]!.set(datagram(i, length));
          meta.setLength(i, length);
          meta.setRemote(i, loopback.family, loopback.bytes, b.port());
          meta.clearLocal(i);
        }
        assert.equal(a.sendBatch(views, meta, 5), 5);
        const first = receiveAll(b, 1)[0];
        assert.equal(first?.length, gso ? 4 * 1400 + 300 : 1400);
      } finally {
        a.close();
        b.close();
      }
    }
  });
});

/**
 * Receives until `count` datagrams arrived or 2 s passed, splitting GRO messages by their segment
 * size; returns each datagram with its source and local address and the number of messages.
 */
function receiveSplit(socket: UdpSocket, count: number): { datagrams: { bytes: Uint8Array; from: string; local: string }[]; messages: number } {
  const views = slots(16);
  const meta = new DatagramMeta(16);
  const datagrams: { bytes: Uint8Array; from: string; local: string }[] = [];
  let messages = 0;
  const deadline = Date.now() + 2000;
  while (datagrams.length < count && Date.now() < deadline) {
    if (!waitReadable(socket.fd, 100)) continue;
    const n = socket.recvBatch(views, meta);
    for (let i = 0; i < n; i++) {
      messages++;
      assert.equal(meta.status(i), 0);
      const length = meta.length(i);
      const size = meta.segmentSize(i) || length;
      let at = 0;
      do {
        datagrams.push({ bytes: views[i]!.slice(at, Math.min(at + size, length)), from: meta.remoteToString(i), local: meta.localToString(i) });
        at += size;
      } while (at < length);
    }
  }
  return { datagrams, messages };
}

for (const gro of [true, false]) {
  test(`recvBatch with gro ${gro}: a GSO run comes out datagram by datagram, in order, with its source`, async () => {
    await withNetns(() => {
      const a = UdpSocket.open(0, { gso: true, gro: false });
      const b = UdpSocket.open(0, { gro });
      try {
        assert.equal(b.gro, gro);
        for (const address of ['127.0.0.1', '::1']) {
          const loopback = parseAddress(address);
          // Two runs (the second a different size, so it cannot join the first) and a lone one.
          const lengths = [...Array.from({ length: 20 }, () => 1400), 900, ...Array.from({ length: 7 }, () => 600), 77];
          const views = slots(lengths.length);
          const meta = new DatagramMeta(lengths.length);
          lengths.forEach((length, i) => {
            views[i]!.set(datagram(i, length));
            meta.setLength(i, length);
            meta.setRemote(i, loopback.family, loopback.bytes, b.port());
            meta.clearLocal(i);
          });
          assert.equal(a.sendBatch(views, meta, lengths.length), lengths.length);
          const { datagrams, messages } = receiveSplit(b, lengths.length);
          assert.deepEqual(datagrams.map((d) => d.bytes), lengths.map((length, i) => datagram(i, length)));
          const from = address === '::1' ? `[::1]:${a.port()}` : `127.0.0.1:${a.port()}`;
          for (const d of datagrams) {
            assert.equal(d.from, from);
            assert.equal(d.local, address);
          }
          if (gro) assert.ok(messages < lengths.length, `GRO coalesced: ${messages} messages`);
          else assert.equal(messages, lengths.length);
        }
      } finally {
        a.close();
        b.close();
      }
    });
  });
}

test('the ZTGATE_UDP_GRO environment switch', () => {
  assert.equal(groWantedByDefault({}), false);
  assert.equal(groWantedByDefault({ ZTGATE_UDP_GRO: '1' }), true);
  assert.equal(groWantedByDefault({ ZTGATE_UDP_GRO: '0' }), false);
});

test('the ZTGATE_UDP_GSO environment switch', () => {
  assert.equal(gsoWantedByDefault({}), true);
  assert.equal(gsoWantedByDefault({ ZTGATE_UDP_GSO: '1' }), true);
  assert.equal(gsoWantedByDefault({ ZTGATE_UDP_GSO: '0' }), false);
});
