// Applying the control thread's commands to a worker's datapath. Shared by the worker thread and
// the simulation tests, so both exercise the same glue.
import type { WorkerCommand, RouteChange } from '../control/messages.ts';
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

export function applyRouteChanges(routes: AllowedIps, changes: readonly RouteChange[]): void {
  for (const change of changes) {
    if (change.op === 'insert') routes.insert(change.bytes, change.prefixLength, change.peer);
    else if (change.op === 'remove') routes.remove(change.bytes, change.prefixLength, change.peer);
    else routes.removePeer(change.peer);
  }
}
