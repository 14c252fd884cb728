// Applying the control thread's commands to a worker's datapath. Shared by the worker thread and
// the simulation tests, so both exercise the same glue.
import { ROUTE_ADDRESS_OFFSET, ROUTE_INSERT, ROUTE_PEER_OFFSET, ROUTE_RECORD_BYTES, ROUTE_REMOVE, ROUTE_REMOVE_PEER, type RouteChanges, type WorkerCommand } from '../control/messages.ts';
import type { AllowedIps } from '../wireguard/allowedips.ts';
import type { Datapath } from './datapath.ts';

/** What a command asks of the worker shell beyond the datapath's own state. */
export interface CommandEffects {
  /** Encrypt and send an empty transport packet, or stage one and ask for a handshake. */
  sendKeepalive(peer: number): void;
  /** A session became usable for `peer`: send what was staged (initiators send a keepalive if nothing was). */
  sessionReady(peer: number, isInitiator: boolean): void;
  stop(): void;
}

export function applyWorkerCommand(datapath: Datapath, command: WorkerCommand, effects: CommandEffects): void {
  switch (command.kind) {
    case 'addPeer':
      datapath.addPeer(command.peer);
      return;
    case 'removePeer':
      datapath.removePeer(command.peer);
      return;
    case 'routes':
      applyRouteChanges(datapath.routes, command.changes);
      return;
    case 'endpoint':
      datapath.setEndpoint(command.peer, command.endpoint);
      return;
    case 'installKeypair':
      datapath.installKeypair(command.peer, command.keypair);
      if (command.keypair.isInitiator) effects.sessionReady(command.peer, true);
      return;
    case 'sendKeepalive':
      effects.sendKeepalive(command.peer);
      return;
    case 'clearStaged':
      datapath.clearStaged(command.peer);
      return;
    case 'zeroKeys':
      datapath.zeroKeys(command.peer);
      return;
    case 'mtu':
      datapath.mtu = command.mtu;
      return;
    case 'stop':
      effects.stop();
      return;
  }
}

/** Applies a packed batch in order (see RouteChanges); the address views are only read, never kept. */
export function applyRouteChanges(routes: AllowedIps, changes: RouteChanges): void {
  const { records, count } = changes;
  if (records.length < count * ROUTE_RECORD_BYTES) throw new RangeError('commands: route batch shorter than its count');
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  let inserts = 0;
  for (let at = 0; at < count * ROUTE_RECORD_BYTES; at += ROUTE_RECORD_BYTES) if (records[at] === ROUTE_INSERT) inserts++;
  routes.expectInsertions(inserts);
  for (let i = 0, at = 0; i < count; i++, at += ROUTE_RECORD_BYTES) {
    const op = records[at];
    const peer = view.getUint32(at + ROUTE_PEER_OFFSET, true);
    if (op === ROUTE_REMOVE_PEER) {
      routes.removePeer(peer);
      continue;
    }
    const address = records.subarray(at + ROUTE_ADDRESS_OFFSET, at + ROUTE_ADDRESS_OFFSET + records[at + 1]);
    if (op === ROUTE_INSERT) routes.insert(address, records[at + 2], peer);
    else if (op === ROUTE_REMOVE) routes.remove(address, records[at + 2], peer);
  }
}
