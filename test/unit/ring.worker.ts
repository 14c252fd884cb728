// Worker-side halves of the cross-thread ring, slab and doorbell tests. Each job runs in its own
// Worker, reports one result message, and gives up by itself after `deadlineMs` so no test can hang.
import { parentPort, workerData } from 'node:worker_threads';
import { Doorbell, waitForWork, waitForWorkOrReadable, type WakeReason } from '../../src/ring/doorbell.ts';
import { closeFd, createEventFd } from '../../src/io/libc.ts';
import { attachWorker, returnSlot, type FabricDescription } from '../../src/ring/fabric.ts';
import { SLOT_PLAINTEXT_OFFSET } from '../../src/ring/layout.ts';
import { Ring } from '../../src/ring/ring.ts';
import { Slab, SlotPool } from '../../src/ring/slab.ts';

/**
 * `doorbell` wakes the consumer when entries arrive; `spaceDoorbell` wakes the producer when the
 * consumer makes room (a full ring or an empty pool), so neither side busy-waits on a loaded machine.
 */
interface RingJob<K extends string> {
  kind: K;
  ring: SharedArrayBuffer;
  doorbell: SharedArrayBuffer;
  spaceDoorbell: SharedArrayBuffer;
  count: number;
  deadlineMs: number;
}

interface SlotJob<K extends string> extends RingJob<K> {
  slab: SharedArrayBuffer;
  returnRing: SharedArrayBuffer;
}

export type Job =
  | RingJob<'ring-producer'>
  | RingJob<'ring-consumer'>
  | SlotJob<'slot-producer'>
  | SlotJob<'slot-consumer'>
  | { kind: 'idle'; ring: SharedArrayBuffer; doorbell: SharedArrayBuffer; durationMs: number; timeoutMs: number }
  | { kind: 'wake'; ring: SharedArrayBuffer; doorbell: SharedArrayBuffer; timeoutMs: number }
  | { kind: 'wake-in-poll'; ring: SharedArrayBuffer; doorbell: SharedArrayBuffer; pollFd: number; alsoPollFd: number; timeoutMs: number }
  | { kind: 'fabric-worker'; fabric: FabricDescription; index: number; count: number; deadlineMs: number }
  | { kind: 'push-later'; ring: SharedArrayBuffer; doorbell: SharedArrayBuffer; value: number; delayMs: number };

/** Deterministic payload byte j of message i, so both sides agree without sharing state. */
export function payloadByte(i: number, j: number): number {
  return (i * 31 + j * 7) & 0xff;
}

/** Payload length of message i: 1..1500, crossing the small and MTU sizes. */
export function payloadLength(i: number): number {
  return 1 + ((i * 7919) % 1500);
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function expired(start: number, deadlineMs: number): boolean {
  return performance.now() - start > deadlineMs;
}

function ringProducer(job: Extract<Job, { kind: 'ring-producer' }>): unknown {
  const ring = new Ring(job.ring);
  const doorbell = new Doorbell(job.doorbell);
  const spaceDoorbell = new Doorbell(job.spaceDoorbell);
  const hasSpace = (): boolean => ring.size < ring.capacity;
  const batch = new Uint32Array(64);
  const start = performance.now();
  let next = 0;
  let seed = 0x9e3779b9;
  let fullSpins = 0;
  while (next < job.count) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    const size = Math.min(1 + ((seed >>> 0) % 64), job.count - next);
    if (size === 1) {
      if (ring.push(next)) next++;
    } else {
      for (let i = 0; i < size; i++) batch[i] = next + i;
      next += ring.pushBatch(batch, size);
    }
    doorbell.ring();
    if (ring.size === ring.capacity) {
      fullSpins++;
      waitForWork(spaceDoorbell, 2000, hasSpace);
      if (expired(start, job.deadlineMs)) break;
    }
  }
  return { pushed: next, fullSpins };
}

function ringConsumer(job: Extract<Job, { kind: 'ring-consumer' }>): unknown {
  const ring = new Ring(job.ring);
  const doorbell = new Doorbell(job.doorbell);
  const spaceDoorbell = new Doorbell(job.spaceDoorbell);
  const out = new Uint32Array(48);
  const reasons: Record<WakeReason, number> = { work: 0, rung: 0, 'timed-out': 0 };
  const hasWork = (): boolean => !ring.isEmpty();
  const start = performance.now();
  let expected = 0;
  let outOfOrder = 0;
  let sum = 0;
  let useBatch = false;
  while (expected < job.count && !expired(start, job.deadlineMs)) {
    let n = 0;
    if (useBatch) {
      n = ring.popBatch(out);
      for (let i = 0; i < n; i++) {
        if (out[i] !== expected) outOfOrder++;
        sum = (sum + out[i]!) >>> 0;
        expected++;
      }
    } else {
      const v = ring.pop();
      if (v !== -1) {
        if (v !== expected) outOfOrder++;
        sum = (sum + v) >>> 0;
        expected++;
        n = 1;
      }
    }
    useBatch = !useBatch;
    if (n === 0) reasons[waitForWork(doorbell, 2000, hasWork)]++;
    else spaceDoorbell.ring();
  }
  return { received: expected, outOfOrder, sum, reasons, leftOver: ring.size };
}

function slotProducer(job: Extract<Job, { kind: 'slot-producer' }>): unknown {
  const slab = new Slab(job.slab);
  const returnRing = new Ring(job.returnRing);
  const pool = new SlotPool(slab, [returnRing]);
  const ring = new Ring(job.ring);
  const doorbell = new Doorbell(job.doorbell);
  const spaceDoorbell = new Doorbell(job.spaceDoorbell);
  const slotsReturned = (): boolean => !returnRing.isEmpty();
  const start = performance.now();
  let exhausted = 0;
  let sent = 0;
  while (sent < job.count && !expired(start, job.deadlineMs)) {
    pool.reclaim();
    const slot = pool.allocate();
    if (slot === -1) {
      exhausted++;
      waitForWork(spaceDoorbell, 2000, slotsReturned);
      continue;
    }
    const length = payloadLength(sent);
    const payload = slab.payloadView(slot);
    for (let j = 0; j < length; j++) payload[j] = payloadByte(sent, j);
    slab.setPayloadLength(slot, length);
    slab.setPeerId(slot, sent % 1000);
    slab.setFlags(slot, sent);
    slab.setRemote(slot, 6, sent & 0xffff);
    slab.remoteAddressView(slot)[15] = sent & 0xff;
    slab.setSpare(slot, sent * 0.5);
    if (!ring.push(slot)) throw new Error('forward ring holds the whole slab, so it cannot be full');
    doorbell.ring();
    sent++;
  }
  // Every slot must come home: wait for the consumer's last returns.
  while (pool.available + pool.reclaim() < slab.slotCount && !expired(start, job.deadlineMs)) {
    waitForWork(spaceDoorbell, 100, slotsReturned);
  }
  return { sent, exhausted, available: pool.available, slotCount: slab.slotCount };
}

function slotConsumer(job: Extract<Job, { kind: 'slot-consumer' }>): unknown {
  const slab = new Slab(job.slab);
  const link = { slab, ring: new Ring(job.ring), returnRing: new Ring(job.returnRing) };
  const doorbell = new Doorbell(job.doorbell);
  const spaceDoorbell = new Doorbell(job.spaceDoorbell);
  const hasWork = (): boolean => !link.ring.isEmpty();
  const start = performance.now();
  const slotsSeen = new Set<number>();
  const reasons: Record<WakeReason, number> = { work: 0, rung: 0, 'timed-out': 0 };
  let received = 0;
  let headerErrors = 0;
  let payloadErrors = 0;
  while (received < job.count && !expired(start, job.deadlineMs)) {
    const slot = link.ring.pop();
    if (slot === -1) {
      reasons[waitForWork(doorbell, 2000, hasWork)]++;
      continue;
    }
    slotsSeen.add(slot);
    const i = received;
    const length = slab.payloadLength(slot);
    if (
      length !== payloadLength(i) ||
      slab.peerId(slot) !== i % 1000 ||
      slab.flags(slot) !== i ||
      slab.remoteFamily(slot) !== 6 ||
      slab.remotePort(slot) !== (i & 0xffff) ||
      slab.remoteAddressView(slot)[15] !== (i & 0xff) ||
      slab.spare(slot) !== i * 0.5
    ) {
      headerErrors++;
    }
    const payload = slab.payloadView(slot);
    for (let j = 0; j < length; j++) {
      if (payload[j] !== payloadByte(i, j)) {
        payloadErrors++;
        break;
      }
    }
    // Scribble over the payload before giving it back: the producer must rewrite every byte it sends.
    payload.fill(0xee, 0, length);
    returnSlot(link, slot);
    spaceDoorbell.ring();
    received++;
  }
  return { received, headerErrors, payloadErrors, distinctSlots: slotsSeen.size, reasons };
}

function idle(job: Extract<Job, { kind: 'idle' }>): unknown {
  const ring = new Ring(job.ring);
  const doorbell = new Doorbell(job.doorbell);
  const hasWork = (): boolean => !ring.isEmpty();
  const reasons: Record<WakeReason, number> = { work: 0, rung: 0, 'timed-out': 0 };
  const cpuBefore = process.threadCpuUsage();
  const start = performance.now();
  while (performance.now() - start < job.durationMs) reasons[waitForWork(doorbell, job.timeoutMs, hasWork)]++;
  const cpu = process.threadCpuUsage(cpuBefore);
  return { cpuMicros: cpu.user + cpu.system, wallMs: performance.now() - start, reasons };
}

function wake(job: Extract<Job, { kind: 'wake' }>): unknown {
  const ring = new Ring(job.ring);
  const doorbell = new Doorbell(job.doorbell);
  const start = performance.now();
  const reason = waitForWork(doorbell, job.timeoutMs, () => !ring.isEmpty());
  return { reason, elapsedMs: performance.now() - start, value: ring.pop(), sleepingAfter: doorbell.sleeping };
}

/** As `wake`, but sleeping in poll(2) on `pollFd`, `alsoPollFd` and the doorbell's eventfd. */
function wakeInPoll(job: Extract<Job, { kind: 'wake-in-poll' }>): unknown {
  const ring = new Ring(job.ring);
  const doorbell = new Doorbell(job.doorbell);
  const eventFd = createEventFd();
  doorbell.useEventFd(eventFd);
  try {
    const start = performance.now();
    const ready = waitForWorkOrReadable(doorbell, eventFd, job.pollFd, job.alsoPollFd, job.timeoutMs, () => !ring.isEmpty());
    return { ready, elapsedMs: performance.now() - start, value: ring.pop(), sleepingAfter: doorbell.sleeping };
  } finally {
    closeFd(eventFd);
  }
}

function fabricWorker(job: Extract<Job, { kind: 'fabric-worker' }>): unknown {
  const end = attachWorker(job.fabric, job.index);
  // Packets come from worker 0 (the test's thread), as a worker's TUN reads for another's peers.
  const link = end.fromWorkers[0]!;
  const start = performance.now();
  const seen: number[] = [];
  while (seen.length < job.count && !expired(start, job.deadlineMs)) {
    const slot = link.ring.pop();
    if (slot === -1) {
      waitForWork(end.doorbell, 2000, end.hasWork);
      continue;
    }
    // Stand-in for "encrypt in place": read the plaintext at its offset, write a header before it.
    const slab = link.slab;
    const payload = slab.payloadView(slot);
    const length = slab.payloadLength(slot);
    seen.push(payload[SLOT_PLAINTEXT_OFFSET]!);
    payload[0] = 4;
    payload[1] = job.index;
    for (let j = SLOT_PLAINTEXT_OFFSET; j < SLOT_PLAINTEXT_OFFSET + length; j++) payload[j] = payload[j]! ^ 0xff;
    slab.setPayloadLength(slot, SLOT_PLAINTEXT_OFFSET + length);
    end.peerTable.addSent(slab.peerId(slot), SLOT_PLAINTEXT_OFFSET + length, 1, 1, 1000 + seen.length);
    end.peerTable.publish(slab.peerId(slot));
    returnSlot(link, slot);
  }
  return { seen };
}

function pushLater(job: Extract<Job, { kind: 'push-later' }>): unknown {
  sleepMs(job.delayMs);
  const pushed = new Ring(job.ring).push(job.value);
  new Doorbell(job.doorbell).ring();
  return { pushed };
}

function run(job: Job): unknown {
  switch (job.kind) {
    case 'ring-producer':
      return ringProducer(job);
    case 'ring-consumer':
      return ringConsumer(job);
    case 'slot-producer':
      return slotProducer(job);
    case 'slot-consumer':
      return slotConsumer(job);
    case 'idle':
      return idle(job);
    case 'wake':
      return wake(job);
    case 'wake-in-poll':
      return wakeInPoll(job);
    case 'fabric-worker':
      return fabricWorker(job);
    case 'push-later':
      return pushLater(job);
  }
}

if (parentPort !== null) parentPort.postMessage(run(workerData as Job));
