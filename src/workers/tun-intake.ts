// A packet worker's TUN intake: reads IP packets from the worker's own TUN queue straight into slots
// of its slab (at the plaintext offset, leaving room for the transport header), finds the peer by
// destination address in the cryptokey routing table (whitepaper §2) and lists each packet with
// its peer for the worker, which encrypts it or passes it to the worker owning that peer. Packets
// for no peer are dropped and counted, as wireguard-go does.
//
// With TUN offloads on, each read starts with a virtio-net header and may be a TCP or UDP
// super-packet of up to 64 KiB: it is read into a slot with its header just before the plaintext
// offset, then cut into IP packets, each in its own slot (offload.ts). A read can thus fill up to
// MAX_SEGMENTS_PER_READ slots: the worker reads only while it has room for that many, and otherwise
// leaves packets in the TUN queue, whose filling pushes back on the sender instead of dropping.
import { SLOT_PAYLOAD, SLOT_PLAINTEXT_OFFSET, SLOT_SIZE } from '../ring/layout.ts';
import type { SlotPool } from '../ring/slab.ts';
import { MAX_SEGMENT_SIZE } from '../wireguard/constants.ts';
import type { AllowedIps } from '../wireguard/allowedips.ts';
import { TUN_VNET_HDR_SIZE, tunRead } from '../io/tun.ts';
import { Segmenter, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VirtioHeader, completeChecksum } from './offload.ts';

/**
 * The most segments one read may need: a 64 KiB super-packet cut at the smallest segment size a
 * 1280-byte IPv6 MTU allows (the kernel picks the segment size from the MTU). More are dropped.
 */
export const MAX_SEGMENTS_PER_READ = 64;

export class TunIntake {
  readonly drops = { noRoute: 0, notIp: 0, noFreeSlot: 0, badOffload: 0, tooManySegments: 0 };
  /**
   * What the last readOnce brought, packet k at index k: its slot (now the caller's, with payload
   * length and peer id set), its peer and its IP length.
   */
  readonly slots = new Int32Array(MAX_SEGMENTS_PER_READ);
  readonly peers = new Int32Array(MAX_SEGMENTS_PER_READ);
  readonly lengths = new Int32Array(MAX_SEGMENTS_PER_READ);
  readonly #fd: number;
  readonly #pool: SlotPool;
  readonly #routes: AllowedIps;
  #count = 0;
  readonly #vnetHeader: boolean;
  /** Per slot, the part of its payload a read goes into. */
  readonly #readViews: Uint8Array[];
  /** The whole slab memory, so a super-packet is cut into slots without a view per segment. */
  readonly #bytes: Uint8Array;
  readonly #header = new VirtioHeader();
  readonly #segmenter = new Segmenter();

  constructor(fd: number, pool: SlotPool, routes: AllowedIps, vnetHeader: boolean) {
    this.#fd = fd;
    this.#pool = pool;
    this.#routes = routes;
    this.#vnetHeader = vnetHeader;
    const slab = pool.slab;
    // Where a read lands in a slot's payload: the packet at the plaintext offset, its virtio header before it.
    const readOffset = vnetHeader ? SLOT_PLAINTEXT_OFFSET - TUN_VNET_HDR_SIZE : SLOT_PLAINTEXT_OFFSET;
    this.#readViews = Array.from({ length: slab.slotCount }, (_, slot) =>
      slab.payloadView(slot).subarray(readOffset, SLOT_PLAINTEXT_OFFSET + MAX_SEGMENT_SIZE),
    );
    this.#bytes = slab.bytes;
  }

  /**
   * Reads once from the queue and lists the packets it held in `slots`, `peers` and `lengths`.
   * Returns how many (0 when all were dropped), or -1 when the queue was empty (or no slot was
   * free: counted). The caller makes sure the pool has MAX_SEGMENTS_PER_READ free slots first.
   * Throws SyscallError when the device is gone.
   */
  readOnce(): number {
    this.#count = 0;
    const slot = this.#pool.allocate();
    if (slot < 0) {
      this.drops.noFreeSlot++;
      return -1;
    }
    const length = tunRead(this.#fd, this.#readViews[slot]!);
    if (length === 0) {
      this.#pool.release(slot);
      return -1;
    }
    if (this.#vnetHeader) this.#listOffloaded(slot, length - TUN_VNET_HDR_SIZE);
    else this.#list(slot, length);
    return this.#count;
  }

  /** A read with a virtio header: a plain packet (maybe with a checksum to finish) or a super-packet to cut. */
  #listOffloaded(slot: number, length: number): void {
    const at = plaintextAt(slot);
    if (length < 0) return this.#dropOffloaded(slot);
    const header = this.#header;
    header.read(this.#bytes, at - TUN_VNET_HDR_SIZE);
    if (header.gsoType === VIRTIO_NET_HDR_GSO_NONE) {
      if ((header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !completeChecksum(this.#bytes, at, length, header.csumStart, header.csumOffset)) {
        return this.#dropOffloaded(slot);
      }
      return this.#list(slot, length);
    }
    const cut = this.#segmenter.begin(this.#bytes, at, length, header);
    if (cut < 0) return this.#dropOffloaded(slot);
    // The kernel's segment size follows the MTU, so a real super-packet stays within the bound.
    const segments = Math.min(cut, MAX_SEGMENTS_PER_READ);
    this.drops.tooManySegments += cut - segments;
    for (let k = 0; k < segments; k++) {
      const segment = this.#pool.allocate();
      if (segment < 0) {
        this.drops.noFreeSlot += segments - k;
        break;
      }
      this.#list(segment, this.#segmenter.write(k, plaintextAt(segment)));
    }
    this.#pool.release(slot);
  }

  #dropOffloaded(slot: number): void {
    this.drops.badOffload++;
    this.#pool.release(slot);
  }

  /** Lists the IP packet in `slot` with its peer, or drops it (counted) when it has none. */
  #list(slot: number, length: number): void {
    const slab = this.#pool.slab;
    const payload = slab.payloadView(slot);
    const version = payload[SLOT_PLAINTEXT_OFFSET]! >> 4;
    let peer = -1;
    if (version === 4 && length >= 20) peer = this.#routes.lookupV4(payload, SLOT_PLAINTEXT_OFFSET + 16);
    else if (version === 6 && length >= 40) peer = this.#routes.lookupV6(payload, SLOT_PLAINTEXT_OFFSET + 24);
    else {
      this.drops.notIp++;
      this.#pool.release(slot);
      return;
    }
    if (peer < 0) {
      this.drops.noRoute++;
      this.#pool.release(slot);
      return;
    }
    slab.setPayloadLength(slot, length);
    slab.setPeerId(slot, peer);
    const k = this.#count++;
    this.slots[k] = slot;
    this.peers[k] = peer;
    this.lengths[k] = length;
  }
}

/** Where slot `slot`'s plaintext starts in the slab's bytes. */
function plaintextAt(slot: number): number {
  return slot * SLOT_SIZE + SLOT_PAYLOAD + SLOT_PLAINTEXT_OFFSET;
}
