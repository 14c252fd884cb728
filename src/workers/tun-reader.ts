// The TUN reader thread: reads IP packets from its TUN queue straight into slots of its slab (at
// the plaintext offset, leaving room for the transport header), finds the peer by destination
// address in the cryptokey routing table (whitepaper §2), and hands the slot to the worker that
// owns that peer. Packets for no peer are dropped and counted, as wireguard-go does.
import { commandSignalIndex, type ReaderCommand } from '../control/messages.ts';
import { attachTunReader } from '../ring/fabric.ts';
import { SLOT_PLAINTEXT_OFFSET } from '../ring/layout.ts';
import { MAX_SEGMENT_SIZE } from '../wireguard/constants.ts';
import { AllowedIps } from '../wireguard/allowedips.ts';
import { waitReadable } from '../io/libc.ts';
import { tunRead } from '../io/tun.ts';
import { SyscallError } from '../errors.ts';
import { applyRouteChanges } from './commands.ts';
import { CommandInbox, DropReporter, notifyControl, threadInit } from './thread-support.ts';

const BATCH = 64;
/** A poll(2) wakes on commands through the wake eventfd; the timeout is only a safety net. */
const POLL_TIMEOUT_MS = 1_000;

const init = threadInit();
const fabric = attachTunReader(init.fabric);
const workerCount = init.fabric.workerCount;
const fd = init.tunFds[0]!;
const inbox = new CommandInbox<ReaderCommand>(init.commandSignals, commandSignalIndex('tunReader', 0, workerCount));
const routes = new AllowedIps();
const drops = { noRoute: 0, notIp: 0, noFreeSlot: 0, ringFull: 0 };
const reporter = new DropReporter('tunReader');
const slab = fabric.pool.slab;
/** Per slot, the part of its payload a packet is read into: after the 16-byte transport header. */
const readViews = Array.from({ length: slab.slotCount }, (_, slot) =>
  slab.payloadView(slot).subarray(SLOT_PLAINTEXT_OFFSET, SLOT_PLAINTEXT_OFFSET + MAX_SEGMENT_SIZE),
);
const touched = new Uint8Array(workerCount);
let running = true;

function readBatch(): number {
  fabric.pool.reclaim();
  let count = 0;
  for (; count < BATCH; count++) {
    const slot = fabric.pool.allocate();
    if (slot < 0) {
      drops.noFreeSlot++;
      break;
    }
    const length = tunRead(fd, readViews[slot]!);
    if (length === 0) {
      fabric.pool.release(slot);
      break;
    }
    dispatch(slot, length);
  }
  for (let k = 0; k < workerCount; k++) {
    if (touched[k] === 0) continue;
    touched[k] = 0;
    fabric.toWorker[k]!.doorbell.ring();
  }
  return count;
}

function dispatch(slot: number, length: number): void {
  const payload = slab.payloadView(slot);
  const version = payload[SLOT_PLAINTEXT_OFFSET]! >> 4;
  let peer = -1;
  if (version === 4 && length >= 20) peer = routes.lookupV4(payload, SLOT_PLAINTEXT_OFFSET + 16);
  else if (version === 6 && length >= 40) peer = routes.lookupV6(payload, SLOT_PLAINTEXT_OFFSET + 24);
  else {
    drops.notIp++;
    fabric.pool.release(slot);
    return;
  }
  if (peer < 0) {
    drops.noRoute++;
    fabric.pool.release(slot);
    return;
  }
  slab.setPayloadLength(slot, length);
  slab.setPeerId(slot, peer);
  // Peer ids are assigned so that id % workerCount is the owning worker (see the control thread).
  const shard = peer % workerCount;
  if (fabric.toWorker[shard]!.ring.push(slot)) touched[shard] = 1;
  else {
    drops.ringFull++;
    fabric.pool.release(slot);
  }
}

notifyControl({ kind: 'ready', thread: 'tunReader' });
try {
  while (running) {
    inbox.drain((command) => {
      if (command.kind === 'stop') running = false;
      else applyRouteChanges(routes, command.changes);
    });
    if (!running) break;
    if (readBatch() === 0) waitReadable(fd, POLL_TIMEOUT_MS, init.wakeFd);
    reporter.maybeReport(() => drops, performance.now());
  }
} catch (error) {
  // EBADFD: the interface was deleted under us; the control thread sees it too and shuts down.
  const message = error instanceof SyscallError ? error.message : String(error);
  notifyControl({ kind: 'fatal', thread: 'tunReader', message });
}
reporter.maybeReport(() => drops, performance.now(), true);
