// TUN offloads without I/O (ARCHITECTURE.md, "Syscall budget"): with IFF_VNET_HDR every TUN read
// and write starts with a 10-byte virtio-net header (virtio spec §5.1.6 "struct virtio_net_hdr",
// legacy layout, host byte order), and with TUNSETOFFLOAD the kernel hands us TCP and UDP
// "super-packets" of up to 64 KiB that it would otherwise have cut into MTU-sized segments.
//
// Outbound, `Segmenter` cuts a super-packet into the IP packets the kernel's own GSO would have
// produced (tcp_gso_segment / __udp_gso_segment): headers copied to every segment, IPv4 total
// length, identification and header checksum, IPv6 payload length, TCP sequence numbers, FIN and
// PSH only on the last segment, CWR only on the first, and the transport checksum computed in
// full (the kernel leaves a partial one: the pseudo-header sum only).
//
// Inbound, `Coalescer` does the reverse, like the kernel's GRO (tcp_gro_receive,
// udp_gro_receive): it appends consecutive in-order TCP segments, or UDP datagrams of equal size,
// of one flow with matching headers into one super-packet written with a GSO header and a
// partial checksum, so the kernel takes up to 64 packets per write instead of one. Everything works in caller-provided buffers and allocates nothing.

import { Buffer } from 'node:buffer';

/** sizeof(struct virtio_net_hdr) without num_buffers: what TUNSETVNETHDRSZ is set to. */
export const VIRTIO_NET_HDR_SIZE = 10;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
const TCP_CWR = 0x80;
/** The kernel's GRO stops at 64 segments per super-packet too (MAX_GRO_SKBS-style bound). */
const MAX_COALESCED_SEGMENTS = 64;
const MAX_IP_PACKET = 65_535;

// ---- copies ---------------------------------------------------------------------------------------

// Packets live in slabs of SharedArrayBuffer memory, where TypedArray set and copyWithin go through
// V8's relaxed-atomic copy: ~500 ns for 1.4 KB here against ~80 ns for Buffer.copy, a plain
// memmove. Copies therefore go through a Buffer over the whole underlying buffer, kept for the last
// buffer asked for (one slab per thread, mostly).
let copyBuffer: ArrayBufferLike | null = null;
let copyView: Buffer = Buffer.alloc(0);

/** A Buffer over all of `bytes.buffer` (index it with bytes.byteOffset + k). */
function wholeBufferOf(bytes: Uint8Array): Buffer {
  const buffer = bytes.buffer;
  if (buffer !== copyBuffer) {
    copyView = Buffer.from(buffer);
    copyBuffer = buffer;
  }
  return copyView;
}

/** Copies bytes[from, end) to target[to, ...) with memmove. */
function copyBytes(bytes: Uint8Array, from: number, end: number, target: Buffer, to: number): void {
  const offset = bytes.byteOffset;
  wholeBufferOf(bytes).copy(target, to, offset + from, offset + end);
}

// ---- checksums (RFC 1071) -------------------------------------------------------------------------

/**
 * Whether 32-bit loads see bytes in little-endian order: then the sum runs over 32-bit words
 * (RFC 1071 §2: the sum may be taken over wider words and in either byte order, folded and swapped
 * back at the end), a quarter of the loads of the byte-wise loop.
 */
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** Below this many bytes the byte-wise loop is as fast (no word view to look up). */
const WORD_SUM_MIN_BYTES = 64;
let wordsBuffer: ArrayBufferLike | null = null;
let words: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

/** A 32-bit view of the whole buffer, kept for the last buffer asked for (a slab, mostly). */
function wordsOf(buffer: ArrayBufferLike): Uint32Array {
  if (buffer !== wordsBuffer) {
    words = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
    wordsBuffer = buffer;
  }
  return words;
}

/**
 * The 16-bit one's-complement sum of bytes[from, to) added to `initial`, folded to 16 bits (not
 * complemented). An odd trailing byte counts as its high half.
 */
export function onesComplementSum(bytes: Uint8Array, from: number, to: number, initial = 0): number {
  let sum = initial;
  let k = from;
  const start = bytes.byteOffset + from;
  // Words only when the 16-bit pairs starting at `from` line up with them (an even start).
  if (LITTLE_ENDIAN_HOST && to - from >= WORD_SUM_MIN_BYTES && (start & 1) === 0) {
    if ((start & 2) !== 0) {
      sum += (bytes[k]! << 8) | bytes[k + 1]!;
      k += 2;
    }
    const view = wordsOf(bytes.buffer);
    const first = (bytes.byteOffset + k) >>> 2;
    const end = first + ((to - k) >>> 2);
    // Each word adds its two byte-swapped 16-bit halves at once; the total stays an exact
    // integer (below 2^48 for 64 KiB), folded once at the end.
    let swapped = 0;
    let w = first;
    for (; w + 4 <= end; w += 4) swapped += view[w]! + view[w + 1]! + view[w + 2]! + view[w + 3]!;
    for (; w < end; w++) swapped += view[w]!;
    while (swapped > 0xffff) swapped = (swapped % 0x10000) + Math.floor(swapped / 0x10000);
    sum += ((swapped & 0xff) << 8) | (swapped >>> 8);
    k += (end - first) * 4;
  }
  // Eight bytes per round, folded often enough that the sum stays a small integer.
  while (k + 8 <= to) {
    sum += ((bytes[k]! << 8) | bytes[k + 1]!) + ((bytes[k + 2]! << 8) | bytes[k + 3]!)
      + ((bytes[k + 4]! << 8) | bytes[k + 5]!) + ((bytes[k + 6]! << 8) | bytes[k + 7]!);
    k += 8;
    if (sum > 0x3fff_ffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  for (; k + 2 <= to; k += 2) sum += (bytes[k]! << 8) | bytes[k + 1]!;
  if (k < to) sum += bytes[k]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The sum of the IPv4 or IPv6 pseudo-header (RFC 793 §3.1, RFC 8200 §8.1) for an L4 length. */
function pseudoHeaderSum(bytes: Uint8Array, ip: number, version: number, protocol: number, l4Length: number): number {
  const sum = version === 4
    ? onesComplementSum(bytes, ip + 12, ip + 20)
    : onesComplementSum(bytes, ip + 8, ip + 40);
  return foldAdd(sum, protocol + (l4Length >>> 16) + (l4Length & 0xffff));
}

function foldAdd(a: number, b: number): number {
  let sum = a + b;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function readU16(bytes: Uint8Array, at: number): number {
  return (bytes[at]! << 8) | bytes[at + 1]!;
}

function writeU16(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 8;
  bytes[at + 1] = value;
}

function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

function writeU32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value >>> 24;
  bytes[at + 1] = value >>> 16;
  bytes[at + 2] = value >>> 8;
  bytes[at + 3] = value;
}

function setIpv4HeaderChecksum(bytes: Uint8Array, ip: number, headerLength: number): void {
  writeU16(bytes, ip + 10, 0);
  writeU16(bytes, ip + 10, ~onesComplementSum(bytes, ip, ip + headerLength) & 0xffff);
}

/**
 * Completes a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the kernel has put the
 * pseudo-header sum at csumStart + csumOffset and wants the one's complement of the sum from
 * csumStart to the end there. False when the offsets do not fit the packet.
 */
export function completeChecksum(bytes: Uint8Array, at: number, length: number, csumStart: number, csumOffset: number): boolean {
  if (csumStart + csumOffset + 2 > length) return false;
  const field = at + csumStart + csumOffset;
  const sum = onesComplementSum(bytes, at + csumStart, at + length);
  let check = ~sum & 0xffff;
  // A UDP checksum of zero means "none" (RFC 768): send its other representation.
  if (check === 0 && csumOffset === 6) check = 0xffff;
  writeU16(bytes, field, check);
  return true;
}

// ---- the virtio-net header -----------------------------------------------------------------------

/** The fields of a virtio-net header (multi-byte fields little-endian on every supported host). */
export class VirtioHeader {
  flags = 0;
  gsoType = 0;
  headerLength = 0;
  gsoSize = 0;
  csumStart = 0;
  csumOffset = 0;

  read(bytes: Uint8Array, at: number): void {
    this.flags = bytes[at]!;
    this.gsoType = bytes[at + 1]!;
    this.headerLength = bytes[at + 2]! | (bytes[at + 3]! << 8);
    this.gsoSize = bytes[at + 4]! | (bytes[at + 5]! << 8);
    this.csumStart = bytes[at + 6]! | (bytes[at + 7]! << 8);
    this.csumOffset = bytes[at + 8]! | (bytes[at + 9]! << 8);
  }
}

/** Writes a virtio-net header; all zero means a plain packet with a complete checksum. */
export function writeVirtioHeader(bytes: Uint8Array, at: number, flags: number, gsoType: number, headerLength: number,
  gsoSize: number, csumStart: number, csumOffset: number): void {
  bytes[at] = flags;
  bytes[at + 1] = gsoType;
  bytes[at + 2] = headerLength;
  bytes[at + 3] = headerLength >>> 8;
  bytes[at + 4] = gsoSize;
  bytes[at + 5] = gsoSize >>> 8;
  bytes[at + 6] = csumStart;
  bytes[at + 7] = csumStart >>> 8;
  bytes[at + 8] = csumOffset;
  bytes[at + 9] = csumOffset >>> 8;
}

// ---- outbound: cutting super-packets ------------------------------------------------------------

/**
 * Cuts one TCP or UDP super-packet (read from a TUN device with offloads) into IP packets. Call
 * `begin` with the packet and its header, then `write(k, ...)` for k in 0..count-1. Source and
 * destinations live in the same byte array (e.g. a whole slab), so copies are moves within it.
 */
export class Segmenter {
  private bytes: Uint8Array = new Uint8Array(0);
  /** A Buffer over all of bytes.buffer, and where `bytes` starts in it. */
  private whole: Buffer = Buffer.alloc(0);
  private base = 0;
  private at = 0;
  private version = 4;
  private protocol = IPPROTO_TCP;
  private ipHeaderLength = 0;
  private l4Offset = 0;
  private headersLength = 0;
  private payloadLength = 0;
  private segmentSize = 0;
  private segments = 0;
  private firstId = 0;
  private firstSeq = 0;

  /**
   * Prepares to cut bytes[at, at + length) as `header` describes. Returns the number of segments,
   * or -1 when the packet does not match its header (the caller drops it).
   */
  begin(bytes: Uint8Array, at: number, length: number, header: VirtioHeader): number {
    const gsoType = header.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    if (length < 20) return -1;
    const version = bytes[at]! >> 4;
    let protocol: number;
    let ipHeaderLength: number;
    if (version === 4) {
      ipHeaderLength = (bytes[at]! & 0x0f) * 4;
      protocol = bytes[at + 9]!;
      if (gsoType === VIRTIO_NET_HDR_GSO_TCPV6) return -1;
    } else if (version === 6) {
      // Extension headers are not cut here (the kernel's csum_start would point past them).
      ipHeaderLength = 40;
      protocol = bytes[at + 6]!;
      if (gsoType === VIRTIO_NET_HDR_GSO_TCPV4) return -1;
    } else {
      return -1;
    }
    const wantProtocol = gsoType === VIRTIO_NET_HDR_GSO_UDP_L4 ? IPPROTO_UDP : IPPROTO_TCP;
    if (gsoType !== VIRTIO_NET_HDR_GSO_TCPV4 && gsoType !== VIRTIO_NET_HDR_GSO_TCPV6 && gsoType !== VIRTIO_NET_HDR_GSO_UDP_L4) return -1;
    if (protocol !== wantProtocol || ipHeaderLength < 20 || header.csumStart !== ipHeaderLength || header.gsoSize === 0) return -1;
    const l4HeaderLength = protocol === IPPROTO_TCP ? (bytes[at + ipHeaderLength + 12]! >> 4) * 4 : 8;
    if ((protocol === IPPROTO_TCP && l4HeaderLength < 20) || ipHeaderLength + l4HeaderLength > length) return -1;
    this.bytes = bytes;
    this.whole = wholeBufferOf(bytes);
    this.base = bytes.byteOffset;
    this.at = at;
    this.version = version;
    this.protocol = protocol;
    this.ipHeaderLength = ipHeaderLength;
    this.l4Offset = ipHeaderLength;
    this.headersLength = ipHeaderLength + l4HeaderLength;
    this.payloadLength = length - this.headersLength;
    this.segmentSize = header.gsoSize;
    this.segments = Math.max(1, Math.ceil(this.payloadLength / header.gsoSize));
    this.firstId = version === 4 ? readU16(bytes, at + 4) : 0;
    this.firstSeq = protocol === IPPROTO_TCP ? readU32(bytes, at + ipHeaderLength + 4) : 0;
    return this.segments;
  }

  /** Writes segment k as a complete IP packet at bytes[to, ...); returns its length. */
  write(k: number, to: number): number {
    const bytes = this.bytes;
    const at = this.at;
    const headers = this.headersLength;
    const start = k * this.segmentSize;
    const chunk = Math.min(this.segmentSize, this.payloadLength - start);
    const total = headers + chunk;
    const whole = this.whole;
    const base = this.base;
    whole.copy(whole, base + to, base + at, base + at + headers);
    whole.copy(whole, base + to + headers, base + at + headers + start, base + at + headers + start + chunk);
    if (this.version === 4) {
      writeU16(bytes, to + 2, total);
      writeU16(bytes, to + 4, (this.firstId + k) & 0xffff);
      setIpv4HeaderChecksum(bytes, to, this.ipHeaderLength);
    } else {
      writeU16(bytes, to + 4, total - 40);
    }
    const l4 = to + this.l4Offset;
    const l4Length = total - this.l4Offset;
    let checkAt: number;
    if (this.protocol === IPPROTO_TCP) {
      writeU32(bytes, l4 + 4, (this.firstSeq + start) >>> 0);
      let flags = bytes[l4 + 13]!;
      if (k < this.segments - 1) flags &= ~(TCP_FIN | TCP_PSH);
      if (k > 0) flags &= ~TCP_CWR;
      bytes[l4 + 13] = flags;
      checkAt = l4 + 16;
    } else {
      writeU16(bytes, l4 + 4, l4Length);
      checkAt = l4 + 6;
    }
    writeU16(bytes, checkAt, 0);
    const sum = onesComplementSum(bytes, l4, to + total, pseudoHeaderSum(bytes, to, this.version, this.protocol, l4Length));
    let check = ~sum & 0xffff;
    if (check === 0 && this.protocol === IPPROTO_UDP) check = 0xffff;
    writeU16(bytes, checkAt, check);
    return total;
  }
}

// ---- inbound: coalescing TCP segments and UDP datagrams ------------------------------------------

/**
 * Collects consecutive packets of one flow into one super-packet in its own buffer, after room for
 * the virtio-net header, so that one TUN write hands the kernel up to 64 of them.
 *
 * TCP, like tcp_gro_receive: in-order segments whose IP and TCP headers agree except for the
 * fields GSO rewrites (lengths, IPv4 id and checksum, sequence number, checksum, PSH on the last):
 * same addresses, ports, TOS/traffic class, TTL, DF, ACK number, window and options; only ACK
 * (and PSH on the last) set; every segment but the last exactly as long as the first.
 *
 * UDP, like udp_gro_receive_segment and wireguard-go's UDP coalescing for USO (TUN_F_USO4/6,
 * Linux 6.2): datagrams of one flow (addresses and ports) with the same TOS/traffic class, flow
 * label, TTL/hop limit and DF, every one but the last exactly as long as the first. The kernel
 * cuts the group back into datagrams with consecutive IPv4 ids (inet_gso_segment), so IPv4
 * datagrams only join when their ids are consecutive: what comes out is then the very packets
 * that went in. IPv6 datagrams with a zero checksum never join: the kernel drops them (RFC 8200
 * §8.1), and a group's checksum is computed afresh.
 *
 * Neither checks the inner checksums before vouching for them with a partial checksum: the packet
 * passed the AEAD, so it is exactly what the peer sent, and the kernel's WireGuard marks decrypted
 * packets CHECKSUM_UNNECESSARY for the same reason (drivers/net/wireguard/receive.c).
 *
 * Any packet that does not continue the open group ends it (the caller writes it alone or opens
 * a group with it), so the order of packets is kept.
 */
export class Coalescer {
  /** Virtio header at [0, 10), then the super-packet. */
  readonly buffer: Buffer;
  private packetLength = 0;
  private segments = 0;
  private protocol = IPPROTO_TCP;
  private version = 4;
  private ipHeaderLength = 0;
  private headersLength = 0;
  private segmentSize = 0;
  /** TCP: the sequence number the next segment must have; UDP over IPv4: the next IP id. */
  private next = 0;
  private closed = false;
  private readonly udp: boolean;

  /** `udp`: coalesce UDP datagrams too (only when the TUN device takes USO super-packets). */
  constructor(udp: boolean) {
    this.buffer = Buffer.alloc(VIRTIO_NET_HDR_SIZE + MAX_IP_PACKET);
    this.udp = udp;
  }

  /** Whether a group is open (flush it before writing anything else). */
  get pending(): boolean {
    return this.packetLength > 0;
  }

  /** How many UDP datagrams the open group holds (0 when none is open or it is TCP). */
  get datagrams(): number {
    return this.packetLength > 0 && this.protocol === IPPROTO_UDP ? this.segments : 0;
  }

  /**
   * Appends bytes[at, at + length) to the open group if it continues it, or opens a group with it
   * when none is open and it qualifies. False: the caller flushes and retries, or writes it alone.
   */
  add(bytes: Uint8Array, at: number, length: number): boolean {
    if (this.packetLength === 0) return this.open(bytes, at, length);
    return this.protocol === IPPROTO_UDP ? this.appendUdp(bytes, at, length) : this.appendTcp(bytes, at, length);
  }

  private open(bytes: Uint8Array, at: number, length: number): boolean {
    const version = bytes[at]! >> 4;
    const protocol = version === 4 ? bytes[at + 9]! : bytes[at + 6]!;
    let ipHeaderLength: number;
    let headersLength: number;
    if (protocol === IPPROTO_UDP) {
      if (!this.udp) return false;
      ipHeaderLength = udpShape(bytes, at, length);
      if (ipHeaderLength === 0) return false;
      headersLength = ipHeaderLength + 8;
      this.next = version === 4 ? (readU16(bytes, at + 4) + 1) & 0xffff : 0;
    } else {
      const shape = tcpShape(bytes, at, length);
      if (shape === 0) return false;
      ipHeaderLength = shape & 0xff;
      headersLength = shape >>> 8;
    }
    const payload = length - headersLength;
    if (payload === 0) return false;
    copyBytes(bytes, at, at + length, this.buffer, VIRTIO_NET_HDR_SIZE);
    this.packetLength = length;
    this.segments = 1;
    this.protocol = protocol;
    this.version = version;
    this.ipHeaderLength = ipHeaderLength;
    this.headersLength = headersLength;
    this.segmentSize = payload;
    if (protocol === IPPROTO_TCP) {
      this.next = (readU32(bytes, at + ipHeaderLength + 4) + payload) >>> 0;
      this.closed = (bytes[at + ipHeaderLength + 13]! & TCP_PSH) !== 0;
    } else {
      this.closed = false;
    }
    return true;
  }

  /** Whether the IP header at bytes[at] agrees with the group's in every field GSO keeps. */
  private sameIpHeader(bytes: Uint8Array, at: number): boolean {
    const own = this.buffer;
    const base = VIRTIO_NET_HDR_SIZE;
    if (this.version === 4) {
      // Version/IHL, TOS; flags and fragment offset; TTL and protocol; addresses.
      if (bytes[at] !== own[base] || bytes[at + 1] !== own[base + 1] || bytes[at + 6] !== own[base + 6]
        || bytes[at + 7] !== own[base + 7] || bytes[at + 8] !== own[base + 8] || bytes[at + 9] !== own[base + 9]) return false;
      for (let k = 12; k < 20; k++) if (bytes[at + k] !== own[base + k]) return false;
    } else {
      // Version, traffic class and flow label; next header and hop limit; addresses.
      for (let k = 0; k < 4; k++) if (bytes[at + k] !== own[base + k]) return false;
      for (let k = 6; k < 40; k++) if (bytes[at + k] !== own[base + k]) return false;
    }
    return true;
  }

  private canGrow(payload: number): boolean {
    return !this.closed && this.segments < MAX_COALESCED_SEGMENTS && payload > 0 && payload <= this.segmentSize
      && this.packetLength + payload <= MAX_IP_PACKET;
  }

  private appendTcp(bytes: Uint8Array, at: number, length: number): boolean {
    const headers = this.headersLength;
    const payload = length - headers;
    if (!this.canGrow(payload)) return false;
    if (tcpShape(bytes, at, length) !== (this.ipHeaderLength | (headers << 8))) return false;
    const ip = this.ipHeaderLength;
    if (readU32(bytes, at + ip + 4) !== this.next || !this.sameIpHeader(bytes, at)) return false;
    // Ports, then ACK number, data offset, window (skipping sequence number, flags, checksum),
    // urgent pointer and options.
    const own = this.buffer;
    const tcp = at + ip;
    const ownTcp = VIRTIO_NET_HDR_SIZE + ip;
    for (let k = 0; k < 4; k++) if (bytes[tcp + k] !== own[ownTcp + k]) return false;
    for (let k = 8; k < 13; k++) if (bytes[tcp + k] !== own[ownTcp + k]) return false;
    if (bytes[tcp + 14] !== own[ownTcp + 14] || bytes[tcp + 15] !== own[ownTcp + 15]) return false;
    for (let k = 18; k < headers - ip; k++) if (bytes[tcp + k] !== own[ownTcp + k]) return false;
    const flags = bytes[tcp + 13]!;
    copyBytes(bytes, at + headers, at + length, own, VIRTIO_NET_HDR_SIZE + this.packetLength);
    this.packetLength += payload;
    this.segments++;
    this.next = (this.next + payload) >>> 0;
    if ((flags & TCP_PSH) !== 0) own[ownTcp + 13] = own[ownTcp + 13]! | TCP_PSH;
    this.closed = (flags & TCP_PSH) !== 0 || payload < this.segmentSize;
    return true;
  }

  private appendUdp(bytes: Uint8Array, at: number, length: number): boolean {
    const headers = this.headersLength;
    const payload = length - headers;
    if (!this.canGrow(payload) || udpShape(bytes, at, length) !== this.ipHeaderLength) return false;
    if (this.version === 4 && readU16(bytes, at + 4) !== this.next) return false;
    if (!this.sameIpHeader(bytes, at)) return false;
    const own = this.buffer;
    const udp = at + this.ipHeaderLength;
    const ownUdp = VIRTIO_NET_HDR_SIZE + this.ipHeaderLength;
    for (let k = 0; k < 4; k++) if (bytes[udp + k] !== own[ownUdp + k]) return false;
    copyBytes(bytes, at + headers, at + length, own, VIRTIO_NET_HDR_SIZE + this.packetLength);
    this.packetLength += payload;
    this.segments++;
    this.next = (this.next + 1) & 0xffff;
    this.closed = payload < this.segmentSize;
    return true;
  }

  /**
   * Ends the group: fixes its headers and writes the virtio header. Returns how many bytes of
   * `buffer` to write (header included), or 0 when no group was open.
   */
  finish(): number {
    const length = this.packetLength;
    if (length === 0) return 0;
    const own = this.buffer;
    const base = VIRTIO_NET_HDR_SIZE;
    if (this.segments === 1) {
      // A lone packet is written as it came: its checksum is complete.
      writeVirtioHeader(own, 0, 0, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0);
    } else {
      const ip = this.ipHeaderLength;
      if (this.version === 4) {
        writeU16(own, base + 2, length);
        setIpv4HeaderChecksum(own, base, ip);
      } else {
        writeU16(own, base + 4, length - 40);
      }
      // CHECKSUM_PARTIAL: the pseudo-header sum, not complemented, where the checksum goes; the
      // kernel trusts it for local delivery and completes it if the packet is forwarded.
      let gsoType: number;
      let checkOffset: number;
      if (this.protocol === IPPROTO_UDP) {
        // The kernel gives each datagram cut from the group its own length (__udp_gso_segment).
        writeU16(own, base + ip + 4, length - ip);
        gsoType = VIRTIO_NET_HDR_GSO_UDP_L4;
        checkOffset = 6;
      } else {
        gsoType = this.version === 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
        checkOffset = 16;
      }
      writeU16(own, base + ip + checkOffset, pseudoHeaderSum(own, base, this.version, this.protocol, length - ip));
      writeVirtioHeader(own, 0, VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType, this.headersLength, this.segmentSize, ip, checkOffset);
    }
    this.packetLength = 0;
    this.segments = 0;
    return base + length;
  }
}

/**
 * The IP header length of a packet that may be coalesced as `protocol` with at least `minimum`
 * bytes in all, or 0 when it may not: IPv4 options or fragments, IPv6 extension headers, another
 * protocol, or a length that disagrees with the IP header.
 */
function coalescableIpHeader(bytes: Uint8Array, at: number, length: number, protocol: number, minimum: number): number {
  if (length < minimum) return 0;
  const version = bytes[at]! >> 4;
  if (version === 4) {
    if (bytes[at] !== 0x45 || bytes[at + 9] !== protocol || readU16(bytes, at + 2) !== length) return 0;
    return (readU16(bytes, at + 6) & 0x3fff) === 0 ? 20 : 0; // MF or a fragment offset
  }
  if (version === 6) return bytes[at + 6] === protocol && readU16(bytes, at + 4) === length - 40 ? 40 : 0;
  return 0;
}

/**
 * For a UDP datagram that may be coalesced: its IP header length, or 0 when it may not (see
 * coalescableIpHeader; also an IPv6 zero checksum, or a UDP length that disagrees).
 */
function udpShape(bytes: Uint8Array, at: number, length: number): number {
  const ip = coalescableIpHeader(bytes, at, length, IPPROTO_UDP, (bytes[at]! >> 4) === 4 ? 29 : 49);
  if (ip === 0 || (ip === 40 && readU16(bytes, at + 46) === 0)) return 0;
  return readU16(bytes, at + ip + 4) === length - ip ? ip : 0;
}

/**
 * For a TCP packet that may be coalesced: (IP header length) | (IP + TCP header length) << 8, or
 * 0 when it may not (see coalescableIpHeader; also flags other than ACK and PSH).
 */
function tcpShape(bytes: Uint8Array, at: number, length: number): number {
  const ip = coalescableIpHeader(bytes, at, length, IPPROTO_TCP, (bytes[at]! >> 4) === 4 ? 40 : 60);
  if (ip === 0) return 0;
  const tcpHeaderLength = (bytes[at + ip + 12]! >> 4) * 4;
  const flags = bytes[at + ip + 13]!;
  if (tcpHeaderLength < 20 || ip + tcpHeaderLength > length || (flags & ~TCP_PSH) !== TCP_ACK) return 0;
  return ip | ((ip + tcpHeaderLength) << 8);
}
