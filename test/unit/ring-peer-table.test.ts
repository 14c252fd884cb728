// The peer table: per-field writers, reads into a reused object, publish counts, bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerTable, emptyPeerStats } from '../../src/ring/peer-table.ts';
import { PEER_RECORD_SIZE } from '../../src/ring/layout.ts';

test('capacity is validated and fixes the buffer size', () => {
  for (const bad of [0, -1, 2.5, 2 ** 20 + 1]) assert.throws(() => PeerTable.create(bad), RangeError);
  assert.equal(PeerTable.create(65_536).buffer.byteLength, 65_536 * PEER_RECORD_SIZE);
  assert.throws(() => new PeerTable(new SharedArrayBuffer(PEER_RECORD_SIZE + 8)), RangeError);
});

test('worker and control fields accumulate independently per peer', () => {
  const table = PeerTable.create(4);
  const reader = new PeerTable(table.buffer);
  table.addSent(1, 148, 1, 1, 1000);
  table.addSent(1, 32, 0, 1, 1500);
  table.addReceived(1, 1452, 3, 4, 2000);
  table.publish(1);
  table.setLastHandshake(1, 900);
  table.addControlBytes(1, 148, 92);
  const out = emptyPeerStats();
  assert.equal(reader.read(1, out), out, 'fills the caller object');
  assert.deepEqual(out, {
    txBytes: 180,
    rxBytes: 1452,
    txDataPackets: 1,
    txAnyPackets: 2,
    rxDataPackets: 3,
    rxAnyPackets: 4,
    lastSentMs: 1500,
    lastReceivedMs: 2000,
    lastHandshakeMs: 900,
    controlTxBytes: 148,
    controlRxBytes: 92,
    publishCount: 1,
  });
  assert.deepEqual(reader.read(0, emptyPeerStats()), emptyPeerStats(), 'neighbours untouched');
  assert.deepEqual(reader.read(2, emptyPeerStats()), emptyPeerStats());
});

test('clearTraffic zeroes only worker fields; clearControl only control fields', () => {
  const table = PeerTable.create(2);
  table.addSent(0, 100, 1, 1, 5);
  table.addReceived(0, 100, 1, 1, 6);
  table.setLastHandshake(0, 7);
  table.addControlBytes(0, 1, 2);
  table.clearTraffic(0);
  const a = table.read(0, emptyPeerStats());
  assert.equal(a.txBytes + a.rxBytes + a.txAnyPackets + a.rxAnyPackets + a.lastSentMs + a.lastReceivedMs, 0);
  assert.equal(a.lastHandshakeMs, 7);
  assert.equal(a.controlTxBytes, 1);
  assert.equal(a.publishCount, 1, 'clearing publishes');
  table.clearControl(0);
  const b = table.read(0, emptyPeerStats());
  assert.equal(b.lastHandshakeMs + b.controlTxBytes + b.controlRxBytes, 0);
});

test('counters stay exact beyond 2^32', () => {
  const table = PeerTable.create(1);
  for (let i = 0; i < 5; i++) table.addReceived(0, 2 ** 31, 1, 1, i);
  assert.equal(table.read(0, emptyPeerStats()).rxBytes, 5 * 2 ** 31);
});

test('peer ids outside the table are refused on the checked paths', () => {
  const table = PeerTable.create(2);
  assert.throws(() => table.read(2, emptyPeerStats()), RangeError);
  assert.throws(() => table.setLastHandshake(-1, 0), RangeError);
  assert.throws(() => table.clearTraffic(1.5), RangeError);
});
