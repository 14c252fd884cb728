// Messages between the control thread and the packet threads, typed once. Only configuration and
// key material travel this way (postMessage); packet bytes never do — they move through the rings.
import type { Endpoint } from '../wireguard/endpoint.ts';
import type { KeypairMaterial } from '../wireguard/session.ts';

/** How often a thread reports (and the control thread logs) drop counters that changed. */
export const DROP_REPORT_INTERVAL_MS = 2_000;

/**
 * A batch of changes to the cryptokey routing table (whitepaper §2), mirrored in every packet
 * thread. Packed into one byte array, ROUTE_RECORD_BYTES per change, so that a `wg setconf` of
 * 10,000 peers reaches each thread as one buffer to copy rather than tens of thousands of small
 * objects (and ArrayBuffers) to clone and collect. Built with RouteChangeBatch.
 */
export interface RouteChanges {
  readonly count: number;
  readonly records: Uint8Array;
}

/** One change: op (u8), address length (u8: 4 or 16), prefix length (u8), pad, peer (u32 LE), address (16). */
export const ROUTE_RECORD_BYTES = 24;
export const ROUTE_INSERT = 1;
export const ROUTE_REMOVE = 2;
export const ROUTE_REMOVE_PEER = 3;
export const ROUTE_PEER_OFFSET = 4;
export const ROUTE_ADDRESS_OFFSET = 8;

/** Collects route changes in order; `finish()` returns them packed to their exact size. */
export class RouteChangeBatch {
  #records: Uint8Array;
  #view: DataView;
  #count = 0;

  /** `expected`: how many changes are likely, room for which is made up front (more still fit). */
  constructor(expected = 0) {
    if (!(expected >= 0)) throw new RangeError(`messages: expected route changes must be ≥ 0, got ${expected}`);
    this.#records = new Uint8Array(Math.max(64, Math.ceil(expected)) * ROUTE_RECORD_BYTES);
    this.#view = new DataView(this.#records.buffer);
  }

  get count(): number {
    return this.#count;
  }

  insert(bytes: Uint8Array, prefixLength: number, peer: number): void {
    this.#push(ROUTE_INSERT, bytes, prefixLength, peer);
  }

  remove(bytes: Uint8Array, prefixLength: number, peer: number): void {
    this.#push(ROUTE_REMOVE, bytes, prefixLength, peer);
  }

  removePeer(peer: number): void {
    this.#push(ROUTE_REMOVE_PEER, null, 0, peer);
  }

  /**
   * A copy holding exactly the changes so far, in shared memory: posted to every packet thread, it
   * is one buffer they all read rather than a clone per thread (with 10,000 peers, 700 KB each).
   * Nothing writes to it after this.
   */
  finish(): RouteChanges {
    const length = this.#count * ROUTE_RECORD_BYTES;
    const records = new Uint8Array(new SharedArrayBuffer(length));
    records.set(this.#records.subarray(0, length));
    return { count: this.#count, records };
  }

  #push(op: number, bytes: Uint8Array | null, prefixLength: number, peer: number): void {
    if (bytes !== null && bytes.length !== 4 && bytes.length !== 16) {
      throw new TypeError('messages: a route address must be a Uint8Array of 4 or 16 bytes');
    }
    if (!Number.isInteger(peer) || peer < 0 || peer > 0xffff_ffff) throw new RangeError(`messages: bad peer id ${peer}`);
    let at = this.#count * ROUTE_RECORD_BYTES;
    if (at + ROUTE_RECORD_BYTES > this.#records.length) {
      const bigger = new Uint8Array(this.#records.length * 2);
      bigger.set(this.#records);
      this.#records = bigger;
      this.#view = new DataView(bigger.buffer);
    }
    const records = this.#records;
    records[at] = op;
    records[at + 1] = bytes === null ? 0 : bytes.length;
    records[at + 2] = prefixLength;
    this.#view.setUint32(at + ROUTE_PEER_OFFSET, peer, true);
    at += ROUTE_ADDRESS_OFFSET;
    records.fill(0, at, at + 16);
    if (bytes !== null) records.set(bytes, at);
    this.#count++;
  }
}

/** Control thread → a worker (peer commands go to the worker owning the peer). */
export type WorkerCommand =
  | { readonly kind: 'addPeer'; readonly peer: number }
  | { readonly kind: 'removePeer'; readonly peer: number }
  | { readonly kind: 'routes'; readonly changes: RouteChanges }
  | { readonly kind: 'endpoint'; readonly peer: number; readonly endpoint: Endpoint }
  | { readonly kind: 'installKeypair'; readonly peer: number; readonly keypair: KeypairMaterial }
  | { readonly kind: 'sendKeepalive'; readonly peer: number }
  | { readonly kind: 'clearStaged'; readonly peer: number }
  | { readonly kind: 'zeroKeys'; readonly peer: number }
  | { readonly kind: 'mtu'; readonly mtu: number }
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
  /** The thread's socket of the steered group: worker k's own, else the reader's (io/udp.ts). */
  readonly udpFd: number;
  readonly tunFds: readonly number[];
  /** TUN offloads are on: every read and write starts with a virtio-net header. */
  readonly tunVnetHeader: boolean;
  /** The TUN device takes UDP super-packets (USO): workers may coalesce UDP datagrams. */
  readonly tunUdpSegmentation: boolean;
  /** Int32 per consumer thread (workers, then readers): bumped by the control thread after each postMessage. */
  readonly commandSignals: SharedArrayBuffer;
  readonly workerIndex: number;
  /** The UDP reader: an eventfd it polls beside its socket, signalled with each command (-1 for workers). */
  readonly wakeFd: number;
  readonly logLevel: string;
  readonly mtu: number;
  /** Static mode: a peer's endpoint follows its packets. ICE mode: ICE alone sets it. */
  readonly roaming: boolean;
  /** How long after its last data packet a worker keeps its path warm (workers/keep-warm.ts); 0: never. */
  readonly keepWarmMs: number;
}

/** Index of a thread's word in `commandSignals`: workers first, then the UDP reader. */
export function commandSignalIndex(role: 'worker' | 'udpReader', workerIndex: number, workerCount: number): number {
  return role === 'worker' ? workerIndex : workerCount;
}
