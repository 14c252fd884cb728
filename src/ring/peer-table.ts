// Per-peer counters and timestamps in shared memory (layout.ts, "Peer table"), so the control thread
// can drive the WireGuard timers (whitepaper §6) and answer UAPI `get` without asking the workers.
//
// Single-writer rule, per field (each field has exactly one writing thread, so no field needs a
// read-modify-write instruction and none is ever lost):
//   owning worker:  tx/rx bytes, tx/rx data packets, tx/rx any packets, last sent/received ms,
//                   publish count; and clearTraffic() when the worker takes over a peer id.
//   control thread: last handshake ms, control tx/rx bytes.
// Any thread may read any field at any time, without locks.
//
// "any" packets are every transport message (data and keepalives); "data" packets are those that
// carry an inner packet (non-empty plaintext). Bytes are whole datagrams as sent or received.
//
// Reads are lock-free samples. Each float64 sits 8-aligned and is stored with one 8-byte store, which
// x64 and arm64 perform single-copy atomically, so a reader sees an old or a new value, never a mix.
// Fields are independent samples (two fields read together may come from different batches), which
// is all the timers need: they compare each counter with its value at the previous tick. The
// publish count gives a real happens-before edge: after the worker's Atomics.store of it, a reader
// that Atomics.loads that value sees every update made before it, and an unchanged count lets the
// control thread skip an idle peer.

import {
  PEER_CONTROL_RX_BYTES_F64,
  PEER_CONTROL_TX_BYTES_F64,
  PEER_LAST_HANDSHAKE_MS_F64,
  PEER_LAST_RECEIVED_MS_F64,
  PEER_LAST_SENT_MS_F64,
  PEER_PUBLISH_COUNT_WORD,
  PEER_RECORD_F64S,
  PEER_RECORD_SIZE,
  PEER_RECORD_WORDS,
  PEER_RX_ANY_PACKETS_F64,
  PEER_RX_BYTES_F64,
  PEER_RX_DATA_PACKETS_F64,
  PEER_TABLE_MAX_CAPACITY,
  PEER_TX_ANY_PACKETS_F64,
  PEER_TX_BYTES_F64,
  PEER_TX_DATA_PACKETS_F64,
} from './layout.ts';

/** One peer's record as read by `PeerTable.read` into a caller-owned object (reused across reads). */
export interface PeerStats {
  txBytes: number;
  rxBytes: number;
  txDataPackets: number;
  txAnyPackets: number;
  rxDataPackets: number;
  rxAnyPackets: number;
  /** Milliseconds on the caller's clock, 0 when never. */
  lastSentMs: number;
  lastReceivedMs: number;
  lastHandshakeMs: number;
  controlTxBytes: number;
  controlRxBytes: number;
  publishCount: number;
}

export function emptyPeerStats(): PeerStats {
  return {
    txBytes: 0,
    rxBytes: 0,
    txDataPackets: 0,
    txAnyPackets: 0,
    rxDataPackets: 0,
    rxAnyPackets: 0,
    lastSentMs: 0,
    lastReceivedMs: 0,
    lastHandshakeMs: 0,
    controlTxBytes: 0,
    controlRxBytes: 0,
    publishCount: 0,
  };
}

export class PeerTable {
  readonly buffer: SharedArrayBuffer;
  /** Peer ids are 0 .. capacity - 1. */
  readonly capacity: number;
  readonly #f64s: Float64Array;
  readonly #words: Int32Array;

  /** Views over an existing table buffer (possibly created in another thread). */
  constructor(buffer: SharedArrayBuffer) {
    const capacity = buffer.byteLength / PEER_RECORD_SIZE;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > PEER_TABLE_MAX_CAPACITY) {
      throw new RangeError(`peer-table: a buffer of ${buffer.byteLength} bytes is not a peer table`);
    }
    this.buffer = buffer;
    this.capacity = capacity;
    this.#f64s = new Float64Array(buffer);
    this.#words = new Int32Array(buffer);
  }

  static create(capacity: number): PeerTable {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > PEER_TABLE_MAX_CAPACITY) {
      throw new RangeError(`peer-table: capacity must be an integer in 1..${PEER_TABLE_MAX_CAPACITY}, got ${capacity}`);
    }
    return new PeerTable(new SharedArrayBuffer(capacity * PEER_RECORD_SIZE));
  }

  // ── owning worker ──

  /** Owning worker: count transport messages sent (`dataPackets` of them carrying data). */
  addSent(peer: number, bytes: number, dataPackets: number, anyPackets: number, nowMs: number): void {
    const base = peer * PEER_RECORD_F64S;
    const f = this.#f64s;
    f[base + PEER_TX_BYTES_F64]! += bytes;
    f[base + PEER_TX_DATA_PACKETS_F64]! += dataPackets;
    f[base + PEER_TX_ANY_PACKETS_F64]! += anyPackets;
    f[base + PEER_LAST_SENT_MS_F64] = nowMs;
  }

  /** Owning worker: count authenticated transport messages received (`dataPackets` of them carrying data). */
  addReceived(peer: number, bytes: number, dataPackets: number, anyPackets: number, nowMs: number): void {
    const base = peer * PEER_RECORD_F64S;
    const f = this.#f64s;
    f[base + PEER_RX_BYTES_F64]! += bytes;
    f[base + PEER_RX_DATA_PACKETS_F64]! += dataPackets;
    f[base + PEER_RX_ANY_PACKETS_F64]! += anyPackets;
    f[base + PEER_LAST_RECEIVED_MS_F64] = nowMs;
  }

  /** Owning worker, after a batch of updates to `peer`: make them visible (release) and mark the peer active. */
  publish(peer: number): void {
    const index = peer * PEER_RECORD_WORDS + PEER_PUBLISH_COUNT_WORD;
    Atomics.store(this.#words, index, (this.#words[index]! + 1) | 0);
  }

  /** Owning worker, when it is handed a peer id: zero the fields it owns (a reused id starts afresh). */
  clearTraffic(peer: number): void {
    this.#check(peer);
    const base = peer * PEER_RECORD_F64S;
    this.#f64s.fill(0, base + PEER_TX_BYTES_F64, base + PEER_LAST_RECEIVED_MS_F64 + 1);
    this.publish(peer);
  }

  // ── control thread ──

  /** Control thread: a handshake with `peer` completed at `nowMs`. */
  setLastHandshake(peer: number, nowMs: number): void {
    this.#check(peer);
    this.#f64s[peer * PEER_RECORD_F64S + PEER_LAST_HANDSHAKE_MS_F64] = nowMs;
  }

  /** Control thread: count handshake/cookie bytes it sent to and received from `peer`. */
  addControlBytes(peer: number, sentBytes: number, receivedBytes: number): void {
    this.#check(peer);
    const base = peer * PEER_RECORD_F64S;
    this.#f64s[base + PEER_CONTROL_TX_BYTES_F64]! += sentBytes;
    this.#f64s[base + PEER_CONTROL_RX_BYTES_F64]! += receivedBytes;
  }

  /** Control thread (control fields only): zero them when a peer id is given to a new peer. */
  clearControl(peer: number): void {
    this.#check(peer);
    const base = peer * PEER_RECORD_F64S;
    this.#f64s[base + PEER_LAST_HANDSHAKE_MS_F64] = 0;
    this.#f64s[base + PEER_CONTROL_TX_BYTES_F64] = 0;
    this.#f64s[base + PEER_CONTROL_RX_BYTES_F64] = 0;
  }

  // ── any thread ──

  /** The owning worker's publish count (acquire): unchanged since the last look means no traffic was published. */
  publishCount(peer: number): number {
    return Atomics.load(this.#words, peer * PEER_RECORD_WORDS + PEER_PUBLISH_COUNT_WORD);
  }

  /** Copy `peer`'s record into `out` (allocates nothing). */
  read(peer: number, out: PeerStats): PeerStats {
    this.#check(peer);
    out.publishCount = this.publishCount(peer);
    const base = peer * PEER_RECORD_F64S;
    const f = this.#f64s;
    out.txBytes = f[base + PEER_TX_BYTES_F64]!;
    out.rxBytes = f[base + PEER_RX_BYTES_F64]!;
    out.txDataPackets = f[base + PEER_TX_DATA_PACKETS_F64]!;
    out.txAnyPackets = f[base + PEER_TX_ANY_PACKETS_F64]!;
    out.rxDataPackets = f[base + PEER_RX_DATA_PACKETS_F64]!;
    out.rxAnyPackets = f[base + PEER_RX_ANY_PACKETS_F64]!;
    out.lastSentMs = f[base + PEER_LAST_SENT_MS_F64]!;
    out.lastReceivedMs = f[base + PEER_LAST_RECEIVED_MS_F64]!;
    out.lastHandshakeMs = f[base + PEER_LAST_HANDSHAKE_MS_F64]!;
    out.controlTxBytes = f[base + PEER_CONTROL_TX_BYTES_F64]!;
    out.controlRxBytes = f[base + PEER_CONTROL_RX_BYTES_F64]!;
    return out;
  }

  #check(peer: number): void {
    if (!Number.isInteger(peer) || peer < 0 || peer >= this.capacity) {
      throw new RangeError(`peer-table: peer id ${peer} is outside 0..${this.capacity - 1}`);
    }
  }
}
