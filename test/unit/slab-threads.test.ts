// Slots cycling between a producer thread and a consumer thread through a ring and a return ring:
// every message arrives with its header and payload intact, the pool runs dry and recovers, and at
// the end every slot is back in the producer's free list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Doorbell } from '../../src/ring/doorbell.ts';
import { Ring } from '../../src/ring/ring.ts';
import { createSlabBuffer } from '../../src/ring/slab.ts';
import { runJob } from './ring-helpers.ts';

test('200,000 slots cycle producer → consumer → producer with intact contents and no leak', async () => {
  const count = 200_000;
  const slotCount = 16;
  const shared = {
    slab: createSlabBuffer(slotCount),
    ring: Ring.create(16).buffer,
    returnRing: Ring.create(16).buffer,
    doorbell: Doorbell.create().buffer,
    spaceDoorbell: Doorbell.create().buffer,
    count,
    deadlineMs: 20_000,
  };
  const [consumer, producer] = await Promise.all([
    runJob<{ received: number; headerErrors: number; payloadErrors: number; distinctSlots: number; reasons: object }>(
      { kind: 'slot-consumer', ...shared },
      30_000,
    ),
    runJob<{ sent: number; exhausted: number; available: number; slotCount: number }>(
      { kind: 'slot-producer', ...shared },
      30_000,
    ),
  ]);
  assert.equal(producer.sent, count);
  assert.equal(consumer.received, count);
  assert.equal(consumer.headerErrors, 0);
  assert.equal(consumer.payloadErrors, 0);
  assert.equal(consumer.distinctSlots, slotCount, 'every slot was used');
  assert.equal(producer.available, slotCount, 'every slot came back');
  console.log(`# pool exhausted ${producer.exhausted} times; consumer waits ${JSON.stringify(consumer.reasons)}`);
});
