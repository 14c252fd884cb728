// Messages between the control thread and the packet threads, typed once. Only configuration and
// key material travel this way (postMessage); packet bytes never do — they move through the rings.
import type { Endpoint } from '../wireguard/endpoint.ts';
import type { KeypairMaterial } from '../wireguard/session.ts';

/** How often a thread reports (and the control thread logs) drop counters that changed. */
export const DROP_REPORT_INTERVAL_MS = 2_000;

/** A change to the cryptokey routing table (whitepaper §2), mirrored in every packet thread. */
export type RouteChange =
  | { readonly op: 'insert'; readonly bytes: Uint8Array; readonly prefixLength: number; readonly peer: number }
  | { readonly op: 'remove'; readonly bytes: Uint8Array; readonly prefixLength: number; readonly peer: number }
  | { readonly op: 'removePeer'; readonly peer: number };

/** Control thread → a worker (peer commands go to the worker owning the peer). */
export type WorkerCommand =
  | { readonly kind: 'addPeer'; readonly peer: number }
  | { readonly kind: 'removePeer'; readonly peer: number }
  | { readonly kind: 'routes'; readonly changes: readonly RouteChange[] }
  | { readonly kind: 'endpoint'; readonly peer: number; readonly endpoint: Endpoint }
  | { readonly kind: 'installKeypair'; readonly peer: number; readonly keypair: KeypairMaterial }
  | { readonly kind: 'sendKeepalive'; readonly peer: number }
  | { readonly kind: 'clearStaged'; readonly peer: number }
  | { readonly kind: 'zeroKeys'; readonly peer: number }
  | { readonly kind: 'mtu'; readonly mtu: number }
  | { readonly kind: 'stop' };

/** Control thread → the TUN reader. */
export type ReaderCommand =
  | { readonly kind: 'routes'; readonly changes: readonly RouteChange[] }
  | { readonly kind: 'stop' };

/** Control thread → the UDP reader. */
export type UdpReaderCommand =
  /** ICE mode: the TURN servers whose ChannelData carrying WireGuard data the reader unwraps. */
  | { readonly kind: 'relays'; readonly servers: readonly Endpoint[] }
  | { readonly kind: 'stop' };

/** A packet thread → the control thread. */
export type ControlNotice =
  | { readonly kind: 'requestHandshake'; readonly peer: number }
  | { readonly kind: 'endpoint'; readonly peer: number; readonly endpoint: Endpoint }
  | { readonly kind: 'sessionConfirmed'; readonly peer: number }
  | { readonly kind: 'drops'; readonly thread: string; readonly counts: Readonly<Record<string, number>> }
  | { readonly kind: 'ready'; readonly thread: string }
  | { readonly kind: 'fatal'; readonly thread: string; readonly message: string };

/** What every packet thread is started with (workerData). SharedArrayBuffers are shared, not copied. */
export interface ThreadInit {
  readonly fabric: import('../ring/fabric.ts').FabricDescription;
  readonly udpFd: number;
  readonly tunFds: readonly number[];
  /** TUN offloads are on: every read and write starts with a virtio-net header. */
  readonly tunVnetHeader: boolean;
  /** Int32 per consumer thread (workers, then readers): bumped by the control thread after each postMessage. */
  readonly commandSignals: SharedArrayBuffer;
  readonly workerIndex: number;
  /** Readers: an eventfd they poll beside their socket, signalled with each command (-1 for workers). */
  readonly wakeFd: number;
  readonly logLevel: string;
  readonly mtu: number;
  /** Static mode: a peer's endpoint follows its packets. ICE mode: ICE alone sets it. */
  readonly roaming: boolean;
}

/** Index of a thread's word in `commandSignals`: workers first, then the TUN reader, then the UDP reader. */
export function commandSignalIndex(role: 'worker' | 'tunReader' | 'udpReader', workerIndex: number, workerCount: number): number {
  if (role === 'worker') return workerIndex;
  return role === 'tunReader' ? workerCount : workerCount + 1;
}
