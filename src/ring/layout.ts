// Every SharedArrayBuffer offset of the packet fabric, named once (ARCHITECTURE.md, "Shared memory
// in one place"). Other files in src/ring/ build views from these numbers and nothing else, so a
// layout change is a change here. Offsets are in bytes unless the name ends in _WORD (an index into
// an Int32Array/Uint32Array over the same buffer) or _F64 (an index into a Float64Array).
//
// Multi-byte fields are in host byte order (they are only ever read on this host). The cold-path
// DataView readers assume little-endian, which is what every platform Node ships for is; the check
// at the bottom of this file refuses to run anywhere else rather than misread headers.

import { MAX_SEGMENT_SIZE, MESSAGE_TRANSPORT_HEADER_SIZE } from '../wireguard/constants.ts';

/** One cache line. Fields written by different threads sit in different lines (no false sharing). */
export const CACHE_LINE_SIZE = 64;

// ─── Slot ────────────────────────────────────────────────────────────────────────────────────────
//
// A slab is `slotCount` slots back to back; slot i starts at byte i * SLOT_SIZE.
//
//   0         4         8         12   14   16        20        24                  32
//   ├─────────┼─────────┼─────────┼────┼────┼─────────┼─────────┼───────────────────┤
//   │ payload │ peer id │ flags   │rem.│rem.│ remote  │ local   │ spare (8 bytes,   │
//   │ length  │ (-1 =   │         │port│fam.│ IPv6    │ ifindex │ 8-aligned)        │
//   │         │  none)  │         │u16 │u16 │ scope id│         │                   │
//   32                                      48                                      64
//   ├───────────────────────────────────────┼───────────────────────────────────────┤
//   │ remote address (16 bytes)             │ local address (16 bytes)              │
//   64                                                                   64 + SLOT_PAYLOAD_SIZE
//   ├─────────────────────────────────────────────────────────────────────────────────┤
//   │ payload                                                                         │
//   │ 0      16 (SLOT_PLAINTEXT_OFFSET)                                               │
//   │ ├──────┼──────────────────────────────────────────────────┬──────────┬─────────┤ │
//   │ │ WG   │ IP packet (plaintext), up to 65535 bytes         │ padding  │ AEAD tag│ │
//   │ │header│                                                  │ (0..15)  │ (16)    │ │
//   └─────────────────────────────────────────────────────────────────────────────────┘
//
// Inbound (udp reader → worker): the datagram is read at payload offset 0, the worker decrypts it
// in place, so the plaintext comes out at SLOT_PLAINTEXT_OFFSET (whitepaper §5.4.6: the 16-byte
// transport header precedes the ciphertext). Outbound (a worker's TUN queue): the IP packet is read
// at SLOT_PLAINTEXT_OFFSET and the worker (or the worker it is passed to) encrypts it in place,
// writing the header into [0, 16). "payload length" counts the bytes that are meaningful at the
// stage the slot is in: the datagram length (starting at 0) for datagrams, the IP packet length
// (starting at SLOT_PLAINTEXT_OFFSET) for TUN packets. Each ring's contract names the stage.
//
// Addresses: remote family 4 or 6 (0: no endpoint); for family 4 an address takes bytes 0..3 and
// the other 12 bytes are zero (never v4-mapped); for family 6 all 16 bytes. The local address has
// the remote's family (a datagram's pktinfo is of its own family). Addresses are in network byte
// order (as in sockaddr); port, scope id and ifindex are plain numbers. An all-zero local address
// means "let the kernel choose the source" (no IP_PKTINFO); the scope id matters only for link-local
// IPv6 remotes.

export const SLOT_HEADER_SIZE = 64;
/** Room for a 16-byte transport header, a 65535-byte packet, up to 15 bytes of padding and the tag. */
export const SLOT_PAYLOAD_SIZE = MAX_SEGMENT_SIZE + 1 + 64;
export const SLOT_SIZE = SLOT_HEADER_SIZE + SLOT_PAYLOAD_SIZE;
/** Where the plaintext IP packet starts inside the payload (after the transport header). */
export const SLOT_PLAINTEXT_OFFSET = MESSAGE_TRANSPORT_HEADER_SIZE;

export const SLOT_PAYLOAD_LENGTH = 0;
export const SLOT_PEER_ID = 4;
export const SLOT_FLAGS = 8;
export const SLOT_REMOTE_PORT = 12;
export const SLOT_REMOTE_FAMILY = 14;
export const SLOT_REMOTE_SCOPE_ID = 16;
export const SLOT_LOCAL_IFINDEX = 20;
/** Eight bytes, 8-aligned, for the packet logic's own use (e.g. a timestamp as a float64). */
export const SLOT_SPARE = 24;
export const SLOT_REMOTE_ADDRESS = 32;
export const SLOT_LOCAL_ADDRESS = 48;
export const SLOT_ADDRESS_SIZE = 16;
/** The payload's first byte, relative to the slot's start. */
export const SLOT_PAYLOAD = SLOT_HEADER_SIZE;

/** Strides and indexes for Uint16Array/Int32Array/Float64Array views over a whole slab. */
export const SLOT_HALFWORDS = SLOT_SIZE / 2;
export const SLOT_WORDS = SLOT_SIZE / 4;
export const SLOT_F64S = SLOT_SIZE / 8;
export const SLOT_PAYLOAD_LENGTH_WORD = SLOT_PAYLOAD_LENGTH / 4;
export const SLOT_PEER_ID_WORD = SLOT_PEER_ID / 4;
export const SLOT_FLAGS_WORD = SLOT_FLAGS / 4;
export const SLOT_REMOTE_PORT_HALFWORD = SLOT_REMOTE_PORT / 2;
export const SLOT_REMOTE_FAMILY_HALFWORD = SLOT_REMOTE_FAMILY / 2;
export const SLOT_REMOTE_SCOPE_ID_WORD = SLOT_REMOTE_SCOPE_ID / 4;
export const SLOT_LOCAL_IFINDEX_WORD = SLOT_LOCAL_IFINDEX / 4;
export const SLOT_SPARE_F64 = SLOT_SPARE / 8;

/** `peer id` when the slot is not (yet) attributed to a peer. */
export const NO_PEER = -1;

/** A slab's slot count is bounded so that a slot index always fits a ring entry and a slab stays addressable. */
export const MAX_SLOT_COUNT = 1 << 16;

// ─── Ring (single producer, single consumer, uint32 entries) ─────────────────────────────────────
//
//   0                        64                       128                    128 + 4 * capacity
//   ├────────────────────────┼────────────────────────┼──────────────────────────────────────┤
//   │ write count (producer) │ read count (consumer)  │ entries: uint32[capacity]            │
//   │ int32, rest of line    │ int32, rest of line    │ entry of count c at index c & mask   │
//   │ unused                 │ unused                 │                                      │
//   └────────────────────────┴────────────────────────┴──────────────────────────────────────┘
//
// Both counts increase forever (wrapping at 2^32); their difference is the ring's size. Each sits in
// its own cache line so that the producer's stores do not evict the consumer's line and vice versa.

export const RING_WRITE_COUNT = 0;
export const RING_READ_COUNT = CACHE_LINE_SIZE;
export const RING_ENTRIES = 2 * CACHE_LINE_SIZE;
export const RING_ENTRY_SIZE = 4;
export const RING_WRITE_COUNT_WORD = RING_WRITE_COUNT / 4;
export const RING_READ_COUNT_WORD = RING_READ_COUNT / 4;
/** Capacities are powers of two so that `count & (capacity - 1)` is the entry index. */
export const RING_MAX_CAPACITY = 1 << 24;

// ─── Doorbell (one per consumer thread) ──────────────────────────────────────────────────────────
//
//   0          4          8                                                                64
//   ├──────────┼──────────┼──────────────────────────────────────────────────────────────────┤
//   │ counter  │ sleeping │ event fd │ unused (the doorbell owns the whole line)             │
//   │ (int32)  │ (int32)  │ (int32)  │                                                       │
//   └──────────┴──────────┴──────────────────────────────────────────────────────────────────┘
//
// counter: incremented by producers, only when `sleeping` is set; the consumer Atomics.waits on it.
// sleeping: written only by the consumer: 1 just before it waits, 0 when it runs again; 2 instead
//   of 1 when it waits in poll(2) (on a socket beside the doorbell): producers then also write the
//   eventfd whose descriptor the consumer stored in `event fd`.

export const DOORBELL_COUNTER_WORD = 0;
export const DOORBELL_SLEEPING_WORD = 1;
export const DOORBELL_EVENT_FD_WORD = 2;
export const DOORBELL_SIZE = CACHE_LINE_SIZE;

// ─── Peer table (one record per peer id) ─────────────────────────────────────────────────────────
//
//   record p starts at byte p * PEER_RECORD_SIZE
//   0          8          16         24         32         40         48         56         64
//   ├──────────┼──────────┼──────────┼──────────┼──────────┼──────────┼──────────┼──────────┤
//   │ tx bytes │ rx bytes │ tx data  │ tx any   │ rx data  │ rx any   │ last     │ last     │
//   │          │          │ packets  │ packets  │ packets  │ packets  │ sent ms  │ recv ms  │
//   ├──────────┴──────────┴──────────┴──────────┴──────────┴──────────┴──────────┴──────────┤
//   │ line 0: written only by the worker that owns the peer (all float64)                   │
//   64         72         76         80         88         96                                128
//   ├──────────┼──────────┼──────────┼──────────┼──────────┼──────────────────────────────────┤
//   │ last     │ publish  │ unused   │ control  │ control  │ unused                           │
//   │ handshake│ count    │          │ tx bytes │ rx bytes │                                  │
//   │ ms (f64) │ (int32)  │          │ (f64)    │ (f64)    │                                  │
//   └──────────┴──────────┴──────────┴──────────┴──────────┴──────────────────────────────────┘
//   last handshake ms, control tx/rx bytes: written only by the control thread (it sends and
//   receives the handshake and cookie messages; a peer's wire total is worker bytes + control bytes).
//   publish count: written only by the owning worker, with Atomics.store after a batch of updates.
//
// A record is 128 bytes so that the records of two peers owned by different workers never share a
// cache line. Counters are float64: exact up to 2^53, far beyond any byte or packet count.

export const PEER_RECORD_SIZE = 2 * CACHE_LINE_SIZE;
export const PEER_RECORD_F64S = PEER_RECORD_SIZE / 8;
export const PEER_RECORD_WORDS = PEER_RECORD_SIZE / 4;
export const PEER_TX_BYTES_F64 = 0;
export const PEER_RX_BYTES_F64 = 1;
export const PEER_TX_DATA_PACKETS_F64 = 2;
export const PEER_TX_ANY_PACKETS_F64 = 3;
export const PEER_RX_DATA_PACKETS_F64 = 4;
export const PEER_RX_ANY_PACKETS_F64 = 5;
export const PEER_LAST_SENT_MS_F64 = 6;
export const PEER_LAST_RECEIVED_MS_F64 = 7;
export const PEER_LAST_HANDSHAKE_MS_F64 = 8;
export const PEER_PUBLISH_COUNT_WORD = 18;
export const PEER_CONTROL_TX_BYTES_F64 = 10;
export const PEER_CONTROL_RX_BYTES_F64 = 11;
/** Peer ids are below the table's capacity, at most this (128 MiB; 65,536 peers take 8 MiB). */
export const PEER_TABLE_MAX_CAPACITY = 1 << 20;

// ─── Fabric (the whole set of buffers, see fabric.ts) ────────────────────────────────────────────
//
//   worker j ──── slab Wj ─┬─ ring Wj→w0 ─► worker 0 ─ return ring ──────┐ (no ring to itself: its
//   (its TUN reads and     ├─ ring Wj→w1 ─► worker 1 ─ return ring ──────┤ own peers' packets never
//    keepalives)           └─ …                                         ┘ leave it) back to Wj
//   udp reader ── slab U ──┬─ ring U→w0 ─► worker 0 ─ return ring w0→U ─┐
//                          ├─ ring U→w1 ─► worker 1 ─ return ring w1→U ─┤ back to U's free list
//                          ├─ …                                         │
//                          └─ ring U→c ──► control ─ return ring c→U ───┘
//   doorbell per consumer: worker 0 … worker n-1, control
//   peer table: one, shared by all

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error('ring: this layout assumes a little-endian host');
}
