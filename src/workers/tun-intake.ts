// A packet worker's TUN intake: reads IP packets from the worker's own TUN queue straight into slots
// of its slab (at the plaintext offset, leaving room for the transport header), finds the peer by
// destination address in the cryptokey routing table (whitepaper §2) and hands each packet, with
// its peer, to the worker, which encrypts it or passes it to the worker owning that peer. Packets
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

/** Where the intake's packets go: `slot` holds an IP packet for `peer` and now belongs to the target. */
export interface IntakeTarget {
  deliver(slot: number, peer: number, ipLength: number): void;
}

export class TunIntake {
  readonly drops = { noRoute: 0, notIp: 0, noFreeSlot: 0, badOffload: 0 };
  readonly #fd: number;
  readonly #pool: SlotPool;
  readonly #routes: AllowedIps;
  readonly #target: IntakeTarget;
  readonly #vnetHeader: boolean;
  /** Per slot, the part of its payload a read goes into. */
  readonly #readViews: Uint8Array[];
  /** The whole slab memory, so a super-packet is cut into slots without a view per segment. */
  readonly #bytes: Uint8Array;
  readonly #header = new VirtioHeader();
  readonly #segmenter = new Segmenter();

  constructor(fd: number, pool: SlotPool, routes: AllowedIps, vnetHeader: boolean, target: IntakeTarget) {
    this.#fd = fd;
    this.#pool = pool;
    this.#routes = routes;
    this.#target = target;
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
   * Reads once from the queue and delivers what it held. Returns the packets delivered, or -1
   * when the queue was empty (or no slot was free: counted). The caller makes sure there is room
   * for MAX_SEGMENTS_PER_READ packets first. Throws SyscallError when the device is gone.
   */
  readOnce(): number {
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
    return this.#vnetHeader ? this.#deliverOffloaded(slot, length - TUN_VNET_HDR_SIZE) : this.#deliver(slot, length);
  }

  /** A read with a virtio header: a plain packet (maybe with a checksum to finish) or a super-packet to cut. */
  #deliverOffloaded(slot: number, length: number): number {
    const at = plaintextAt(slot);
    if (length < 0) return this.#dropOffloaded(slot);
    const header = this.#header;
    header.read(this.#bytes, at - TUN_VNET_HDR_SIZE);
    if (header.gsoType === VIRTIO_NET_HDR_GSO_NONE) {
      if ((header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0 && !completeChecksum(this.#bytes, at, length, header.csumStart, header.csumOffset)) {
        return this.#dropOffloaded(slot);
      }
      return this.#deliver(slot, length);
    }
    const segments = this.#segmenter.begin(this.#bytes, at, length, header);
    if (segments < 0) return this.#dropOffloaded(slot);
    let count = 0;
    for (let k = 0; k < segments; k++) {
      const segment = this.#pool.allocate();
      if (segment < 0) {
        this.drops.noFreeSlot += segments - k;
        break;
      }
      count += this.#deliver(segment, this.#segmenter.write(k, plaintextAt(segment)));
    }
    this.#pool.release(slot);
    return count;
  }

  #dropOffloaded(slot: number): number {
    this.drops.badOffload++;
    this.#pool.release(slot);
    return 0;
  }

  /** Hands the IP packet in `slot` to the target with its peer; returns 1, or 0 when it was dropped. */
  #deliver(slot: number, length: number): number {
    const slab = this.#pool.slab;
    const payload = slab.payloadView(slot);
    const version = payload[SLOT_PLAINTEXT_OFFSET]! >> 4;
    let peer = -1;
    if (version === 4 && length >= 20) peer = this.#routes.lookupV4(payload, SLOT_PLAINTEXT_OFFSET + 16);
    else if (version === 6 && length >= 40) peer = this.#routes.lookupV6(payload, SLOT_PLAINTEXT_OFFSET + 24);
    else {
      this.drops.notIp++;
      this.#pool.release(slot);
      return 0;
    }
    if (peer < 0) {
      this.drops.noRoute++;
      this.#pool.release(slot);
      return 0;
    }
    slab.setPayloadLength(slot, length);
    slab.setPeerId(slot, peer);
    this.#target.deliver(slot, peer, length);
    return 1;
  }
}

/** Where slot `slot`'s plaintext starts in the slab's bytes. */
function plaintextAt(slot: number): number {
  return slot * SLOT_SIZE + SLOT_PAYLOAD + SLOT_PLAINTEXT_OFFSET;
}
