// The fabric: one description posted to a Worker (buffers shared, not copied), each side attached,
// and a slot's trip worker 0 → worker 1 → back, plus udp reader → control in one thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  attachControl,
  attachUdpReader,
  attachWorker,
  createFabric,
  returnSlot,
} from '../../src/ring/fabric.ts';
import { SLOT_PLAINTEXT_OFFSET } from '../../src/ring/layout.ts';
import { emptyPeerStats } from '../../src/ring/peer-table.ts';
import { runJob } from './ring-helpers.ts';

test('createFabric validates its options', () => {
  assert.throws(() => createFabric({ workerCount: 0 }), RangeError);
  assert.throws(() => createFabric({ workerCount: 65 }), RangeError);
  assert.throws(() => createFabric({ workerCount: 1, ringCapacity: 100 }), RangeError);
  assert.throws(() => createFabric({ workerCount: 1, readerSlots: 0 }), RangeError);
  const fabric = createFabric({ workerCount: 1, readerSlots: 4, workerSlots: 2, peerCapacity: 8 });
  assert.throws(() => attachWorker(fabric, 1), RangeError);
});

test('one buffer set per producer/consumer pair, all shared memory', () => {
  const fabric = createFabric({ workerCount: 3, readerSlots: 8, workerSlots: 2, ringCapacity: 4, peerCapacity: 16 });
  assert.equal(fabric.workerToWorker.length, 9);
  assert.deepEqual(fabric.workerToWorker.map((link) => link === null), [true, false, false, false, true, false, false, false, true], 'no link from a worker to itself');
  assert.equal(fabric.udpToWorker.length, 3);
  assert.equal(fabric.workerSlabs.length, 3);
  assert.equal(fabric.workerDoorbells.length, 3);
  const links = [...fabric.workerToWorker.filter((link) => link !== null), ...fabric.udpToWorker, fabric.udpToControl];
  const buffers = [
    fabric.udpSlab,
    fabric.controlDoorbell,
    fabric.peerTable,
    ...fabric.workerSlabs,
    ...fabric.workerDoorbells,
    ...links.flatMap((l) => [l!.ring, l!.returnRing]),
  ];
  assert.ok(buffers.every((b) => b instanceof SharedArrayBuffer));
  assert.equal(new Set(buffers).size, buffers.length, 'no buffer is shared by two roles');
  const worker = attachWorker(fabric, 2);
  assert.equal(worker.toWorker[2], null);
  assert.equal(worker.fromWorkers[2], null);
  assert.equal(worker.toWorker[0]!.ring.capacity, 4);
  assert.ok(worker.fromWorkers[1]!.returnRing.capacity >= 2, 'a return ring holds the producer\'s whole slab');
  assert.ok(worker.fromUdp.returnRing.capacity >= 8, 'a return ring holds the producer\'s whole slab');
  assert.equal(worker.pool.slab.slotCount, 2);
  assert.equal(worker.fromWorkers[1]!.slab.slotCount, 2, 'worker 1\'s slab');
});

test('udp reader → control and back, in one thread', () => {
  const fabric = createFabric({ workerCount: 2, readerSlots: 4, workerSlots: 2, peerCapacity: 16 });
  const udp = attachUdpReader(fabric);
  const control = attachControl(fabric);
  assert.equal(control.hasWork(), false);
  const slot = udp.pool.allocate();
  udp.pool.slab.payloadView(slot).set([1, 0, 0, 0]);
  udp.pool.slab.setPayloadLength(slot, 148);
  assert.equal(udp.toControl.ring.push(slot), true);
  udp.toControl.doorbell.ring();
  assert.equal(control.hasWork(), true);
  const got = control.fromUdp.ring.pop();
  assert.equal(got, slot);
  assert.equal(control.fromUdp.slab.payloadView(got)[0], 1, 'the control side sees the same bytes');
  assert.equal(control.fromUdp.slab.payloadLength(got), 148);
  returnSlot(control.fromUdp, got);
  assert.throws(() => {
    for (let i = 0; i < 16; i++) returnSlot(control.fromUdp, got);
  }, /full return ring/);
});

test('a posted fabric is shared: worker 0 → worker 1 → back, bytes changed in place', async () => {
  const count = 50;
  const fabric = createFabric({ workerCount: 2, readerSlots: 4, workerSlots: 64, ringCapacity: 64, peerCapacity: 16 });
  const producer = attachWorker(fabric, 0);
  const worker = runJob<{ seen: number[] }>({ kind: 'fabric-worker', fabric, index: 1, count, deadlineMs: 10_000 }, 20_000);
  const slab = producer.pool.slab;
  for (let i = 0; i < count; i++) {
    const slot = producer.pool.allocate();
    assert.equal(slot, i);
    slab.payloadView(slot).fill(i, SLOT_PLAINTEXT_OFFSET, SLOT_PLAINTEXT_OFFSET + 20);
    slab.setPayloadLength(slot, 20);
    slab.setPeerId(slot, 3);
    assert.equal(producer.toWorker[1]!.ring.push(slot), true);
    producer.toWorker[1]!.doorbell.ring();
  }
  const { seen } = await worker;
  assert.deepEqual(seen, Array.from({ length: count }, (_, i) => i));
  assert.equal(producer.pool.reclaim(), count, 'the worker returned every slot');
  // The worker wrote a header and flipped the plaintext in place: we see its bytes in our slab.
  for (let slot = 0; slot < count; slot++) {
    const payload = slab.payloadView(slot);
    assert.equal(slab.payloadLength(slot), SLOT_PLAINTEXT_OFFSET + 20);
    assert.deepEqual([payload[0], payload[1]], [4, 1]);
    assert.equal(payload[SLOT_PLAINTEXT_OFFSET + 19], slot ^ 0xff);
  }
  const stats = attachControl(fabric).peerTable.read(3, emptyPeerStats());
  assert.equal(stats.txAnyPackets, count);
  assert.equal(stats.txBytes, count * (SLOT_PLAINTEXT_OFFSET + 20));
  assert.equal(stats.publishCount, count);
  assert.equal(stats.lastSentMs, 1000 + count);
});
