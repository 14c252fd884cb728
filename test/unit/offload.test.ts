// TUN offload helpers: the checksum against a naive RFC 1071 reference, cutting TCP and UDP
// super-packets the way the kernel's GSO does (checked field by field against an independent
// checksum), and TCP and UDP coalescing, whose result cut again must give back the very same packets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  Segmenter, Coalescer, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_SIZE, VirtioHeader, completeChecksum, onesComplementSum,
} from '../../src/workers/offload.ts';

/** Naive one's-complement sum of 16-bit big-endian words (odd byte padded with zero). */
function referenceSum(bytes: Uint8Array): number {
  let sum = 0;
  for (let k = 0; k < bytes.length; k += 2) sum += (bytes[k]! << 8) + (k + 1 < bytes.length ? bytes[k + 1]! : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

function pseudo(packet: Uint8Array, version: number, protocol: number, l4Length: number): Uint8Array {
  const out = version === 4 ? new Uint8Array(12) : new Uint8Array(40);
  if (version === 4) {
    out.set(packet.subarray(12, 20));
    out[9] = protocol;
    out[10] = l4Length >> 8;
    out[11] = l4Length & 0xff;
  } else {
    out.set(packet.subarray(8, 40));
    out[34] = l4Length >> 8;
    out[35] = l4Length & 0xff;
    out[39] = protocol;
  }
  return out;
}

/** True when the packet's IPv4 header checksum (if any) and its TCP/UDP checksum verify. */
function checksumsValid(packet: Uint8Array): boolean {
  const version = packet[0]! >> 4;
  const ip = version === 4 ? (packet[0]! & 15) * 4 : 40;
  if (version === 4 && referenceSum(packet.subarray(0, ip)) !== 0xffff) return false;
  const protocol = version === 4 ? packet[9]! : packet[6]!;
  const l4 = packet.subarray(ip);
  const both = new Uint8Array([...pseudo(packet, version, protocol, l4.length), ...l4]);
  return referenceSum(both) === 0xffff;
}

const be16 = (b: Uint8Array, at: number): number => (b[at]! << 8) | b[at + 1]!;
const be32 = (b: Uint8Array, at: number): number => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;

/** A TCP or UDP packet with `payload`, headers filled in, checksums left at zero. */
function buildPacket(version: 4 | 6, protocol: 6 | 17, payload: Uint8Array, options: { seq?: number; flags?: number; id?: number; tcpOptions?: number } = {}): Uint8Array {
  const ip = version === 4 ? 20 : 40;
  const l4h = protocol === 6 ? 20 + (options.tcpOptions ?? 12) : 8;
  const packet = new Uint8Array(ip + l4h + payload.length);
  const total = packet.length;
  if (version === 4) {
    packet[0] = 0x45;
    packet[1] = 0x02;
    packet[2] = total >> 8; packet[3] = total & 0xff;
    packet[4] = (options.id ?? 0x1234) >> 8; packet[5] = (options.id ?? 0x1234) & 0xff;
    packet[6] = 0x40; // DF
    packet[8] = 64;
    packet[9] = protocol;
    packet.set([10, 0, 0, 1, 10, 0, 0, 2], 12);
  } else {
    packet[0] = 0x60; packet[1] = 0x01; packet[2] = 0x23; packet[3] = 0x45;
    packet[4] = (total - 40) >> 8; packet[5] = (total - 40) & 0xff;
    packet[6] = protocol;
    packet[7] = 64;
    packet[8] = 0xfd; packet[23] = 1;
    packet[24] = 0xfd; packet[39] = 2;
  }
  packet.set([0x9c, 0x40, 0x14, 0x51], ip); // ports 40000 → 5201
  if (protocol === 6) {
    const seq = options.seq ?? 0xfffff000;
    packet.set([seq >>> 24, (seq >>> 16) & 0xff, (seq >>> 8) & 0xff, seq & 0xff], ip + 4);
    packet.set([0, 1, 2, 3], ip + 8);
    packet[ip + 12] = (l4h / 4) << 4;
    packet[ip + 13] = options.flags ?? 0x18;
    packet[ip + 14] = 0x01; packet[ip + 15] = 0xf5;
    for (let k = 20; k < l4h; k++) packet[ip + k] = k === 20 ? 1 : k; // NOP then filler options
  } else {
    packet[ip + 4] = (l4h + payload.length) >> 8; packet[ip + 5] = (l4h + payload.length) & 0xff;
  }
  packet.set(payload, ip + l4h);
  return packet;
}

/** What the kernel hands a TUN reader: a valid IPv4 header checksum and a partial L4 checksum. */
function asSuperPacket(packet: Uint8Array): Uint8Array {
  const version = packet[0]! >> 4;
  const ip = version === 4 ? 20 : 40;
  const protocol = version === 4 ? packet[9]! : packet[6]!;
  if (version === 4) {
    const s = ~referenceSum(packet.subarray(0, 20)) & 0xffff;
    packet[10] = s >> 8; packet[11] = s & 0xff;
  }
  const partial = referenceSum(pseudo(packet, version, protocol, packet.length - ip));
  const at = ip + (protocol === 6 ? 16 : 6);
  packet[at] = partial >> 8; packet[at + 1] = partial & 0xff;
  return packet;
}

function header(fields: Partial<VirtioHeader>): VirtioHeader {
  return Object.assign(new VirtioHeader(), fields);
}

/** Cuts `packet` with the Segmenter inside one big array, returning copies of the segments. */
function cut(packet: Uint8Array, h: VirtioHeader): Uint8Array[] | null {
  const arena = new Uint8Array(packet.length + 70 * 2048);
  arena.set(packet);
  const segmenter = new Segmenter();
  const count = segmenter.begin(arena, 0, packet.length, h);
  if (count < 0) return null;
  const out: Uint8Array[] = [];
  for (let k = 0; k < count; k++) {
    const to = packet.length + k * 2048;
    const length = segmenter.write(k, to);
    out.push(arena.slice(to, to + length));
  }
  return out;
}

test('onesComplementSum matches the naive sum for any bytes, range and initial value', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat(0xffff), (bytes, initial) => {
    const expected = referenceSum(new Uint8Array([initial >> 8, initial & 0xff, ...bytes]));
    assert.equal(onesComplementSum(bytes, 0, bytes.length, initial), expected);
  }), { numRuns: 300 });
});

test('onesComplementSum matches the naive sum over any sub-range, at any alignment, of any view', () => {
  // Ranges long enough for the word-wise path, starting at every alignment, inside views that
  // start at every alignment of their buffer (shared, like a slab, or not).
  fc.assert(fc.property(fc.uint8Array({ minLength: 64, maxLength: 4000 }), fc.nat(7), fc.nat(200), fc.nat(200), fc.nat(0xffff),
    fc.boolean(), (content, viewOffset, cutFront, cutBack, initial, shared) => {
      const buffer = shared ? new SharedArrayBuffer(content.length + 8) : new ArrayBuffer(content.length + 8);
      const view = new Uint8Array(buffer, viewOffset, content.length);
      view.set(content);
      const from = Math.min(cutFront, content.length);
      const to = Math.max(from, content.length - cutBack);
      const expected = referenceSum(new Uint8Array([initial >> 8, initial & 0xff, ...content.subarray(from, to)]));
      assert.equal(onesComplementSum(view, from, to, initial), expected);
    }), { numRuns: 400 });
  const ones = new Uint8Array(4096).fill(0xff);
  assert.equal(onesComplementSum(ones, 0, ones.length), 0xffff);
  assert.equal(onesComplementSum(new Uint8Array(4096), 0, 4096), 0);
});

for (const version of [4, 6] as const) {
  test(`a TCPv${version} super-packet is cut like the kernel's GSO would`, () => {
    const mss = 1380;
    const payload = Uint8Array.from({ length: 10 * mss + 123 }, (_, k) => (k * 13 + 7) & 0xff);
    const seq = 0xfffff000; // wraps around 2^32 inside the packet
    const packet = asSuperPacket(buildPacket(version, 6, payload, { seq, flags: 0x18 | 0x01 | 0x80, id: 0xfffe }));
    const gsoType = version === 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
    const ip = version === 4 ? 20 : 40;
    const segments = cut(packet, header({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType, headerLength: ip + 32, gsoSize: mss, csumStart: ip, csumOffset: 16 }));
    assert.ok(segments);
    assert.equal(segments.length, 11);
    const joined: number[] = [];
    segments.forEach((s, k) => {
      const chunk = k < 10 ? mss : 123;
      assert.equal(s.length, ip + 32 + chunk);
      assert.ok(checksumsValid(s), `checksums of segment ${k}`);
      if (version === 4) {
        assert.equal(be16(s, 2), s.length);
        assert.equal(be16(s, 4), (0xfffe + k) & 0xffff);
      } else {
        assert.equal(be16(s, 4), s.length - 40);
      }
      assert.equal(be32(s, ip + 4), (seq + k * mss) >>> 0);
      const flags = s[ip + 13]!;
      assert.equal(flags & 0x10, 0x10);
      assert.equal((flags & 0x09) !== 0, k === 10, `FIN/PSH only on the last (segment ${k})`);
      assert.equal((flags & 0x80) !== 0, k === 0, `CWR only on the first (segment ${k})`);
      assert.deepEqual(s.subarray(ip + 20, ip + 32), packet.subarray(ip + 20, ip + 32), 'options copied');
      joined.push(...s.subarray(ip + 32));
    });
    assert.deepEqual(new Uint8Array(joined), payload);
  });

  test(`a UDPv${version} super-packet (USO) is cut into datagrams with their own lengths and checksums`, () => {
    const payload = Uint8Array.from({ length: 3 * 1200 + 1 }, (_, k) => (k * 5) & 0xff);
    const packet = asSuperPacket(buildPacket(version, 17, payload));
    const ip = version === 4 ? 20 : 40;
    const segments = cut(packet, header({ flags: 1, gsoType: VIRTIO_NET_HDR_GSO_UDP_L4, headerLength: ip + 8, gsoSize: 1200, csumStart: ip, csumOffset: 6 }));
    assert.ok(segments);
    assert.deepEqual(segments.map((s) => s.length - ip - 8), [1200, 1200, 1200, 1]);
    for (const s of segments) {
      assert.equal(be16(s, ip + 4), s.length - ip);
      assert.ok(checksumsValid(s));
    }
    assert.deepEqual(new Uint8Array(segments.flatMap((s) => [...s.subarray(ip + 8)])), payload);
  });
}

test('a header that disagrees with its packet is refused', () => {
  const v4 = asSuperPacket(buildPacket(4, 6, new Uint8Array(3000)));
  const good = { flags: 1, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, headerLength: 52, gsoSize: 1000, csumStart: 20, csumOffset: 16 };
  assert.equal(cut(v4, header(good))?.length, 3);
  assert.equal(cut(v4, header({ ...good, gsoType: VIRTIO_NET_HDR_GSO_TCPV6 })), null);
  assert.equal(cut(v4, header({ ...good, gsoType: VIRTIO_NET_HDR_GSO_UDP_L4 })), null);
  assert.equal(cut(v4, header({ ...good, gsoSize: 0 })), null);
  assert.equal(cut(v4, header({ ...good, csumStart: 24 })), null);
  assert.equal(cut(v4.subarray(0, 30), header(good)), null);
  assert.equal(cut(new Uint8Array(100), header(good)), null);
});

test('completeChecksum finishes the partial checksum the kernel leaves', () => {
  for (const [version, protocol] of [[4, 6], [6, 6], [4, 17], [6, 17]] as const) {
    const packet = asSuperPacket(buildPacket(version, protocol, Uint8Array.from({ length: 999 }, (_, k) => k & 0xff)));
    const ip = version === 4 ? 20 : 40;
    assert.equal(checksumsValid(packet), false);
    assert.ok(completeChecksum(packet, 0, packet.length, ip, protocol === 6 ? 16 : 6));
    assert.ok(checksumsValid(packet));
  }
  assert.equal(completeChecksum(new Uint8Array(30), 0, 30, 20, 16), false);
});

/** Segments as a sender's stack would emit them: consecutive seq and ids, valid checksums. */
/** Feeds `packets` to a coalescer (each must join) and returns what it writes: header and packet. */
function coalesced(packets: readonly Uint8Array[]): { h: VirtioHeader; packet: Uint8Array } {
  const coalescer = new Coalescer(true);
  for (const p of packets) assert.ok(coalescer.add(p, 0, p.length));
  const length = coalescer.finish();
  const h = new VirtioHeader();
  h.read(coalescer.buffer, 0);
  return { h, packet: Uint8Array.from(coalescer.buffer.subarray(VIRTIO_NET_HDR_SIZE, length)) };
}

function segmentsOf(version: 4 | 6, sizes: readonly number[], lastFlags = 0x18): Uint8Array[] {
  let seq = 0xffffff00;
  return sizes.map((size, k) => {
    const payload = Uint8Array.from({ length: size }, (_, i) => (i * 3 + k * 11) & 0xff);
    const packet = buildPacket(version, 6, payload, { seq, id: 100 + k, flags: k === sizes.length - 1 ? lastFlags : 0x10 });
    seq = (seq + size) >>> 0;
    asSuperPacket(packet);
    const ip = version === 4 ? 20 : 40;
    completeChecksum(packet, 0, packet.length, ip, 16);
    return packet;
  });
}

for (const version of [4, 6] as const) {
  test(`TCPv${version} coalescing: the super-packet, cut again, gives back the same packets`, () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 1400 }), fc.boolean(), (count, last, psh) => {
      const sizes = [...new Array<number>(count - 1).fill(1400), last];
      const packets = segmentsOf(version, sizes, psh ? 0x18 : 0x10);
      const { h, packet } = coalesced(packets);
      if (count === 1) {
        assert.equal(h.gsoType, 0);
        assert.equal(h.flags, 0);
        assert.deepEqual(packet, packets[0]);
        return;
      }
      assert.equal(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
      assert.equal(h.gsoType, version === 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6);
      assert.equal(h.gsoSize, 1400);
      assert.equal(h.headerLength, (version === 4 ? 20 : 40) + 32);
      // What the kernel would check: lengths and the IPv4 header checksum are right as written.
      if (version === 4) assert.equal(referenceSum(packet.subarray(0, 20)), 0xffff);
      assert.deepEqual(cut(packet, h), packets);
    }), { numRuns: 60 });
  });
}

test('coalescing stops at anything that does not continue the flow', () => {
  const coalescer = new Coalescer(true);
  const [a, b, c] = segmentsOf(4, [1000, 1000, 1000]) as [Uint8Array, Uint8Array, Uint8Array];
  const otherPort = a.slice(); otherPort[21] = 0x41;
  const syn = segmentsOf(4, [1000], 0x02)[0]!;
  const longer = segmentsOf(4, [1000, 1200])[1]!;
  assert.equal(coalescer.add(syn, 0, syn.length), false, 'a SYN never opens a group');
  assert.ok(coalescer.add(a, 0, a.length));
  assert.equal(coalescer.add(c, 0, c.length), false, 'out of order');
  assert.equal(coalescer.add(otherPort, 0, otherPort.length), false, 'another flow');
  const otherTtl = b.slice(); otherTtl[8] = 63;
  assert.equal(coalescer.add(otherTtl, 0, otherTtl.length), false, 'another TTL');
  const otherWindow = b.slice(); otherWindow[35] = 0;
  assert.equal(coalescer.add(otherWindow, 0, otherWindow.length), false, 'another window');
  assert.equal(coalescer.add(longer, 0, longer.length), false, 'longer than the first');
  assert.ok(coalescer.add(b, 0, b.length));
  assert.equal(coalescer.finish() > 0, true);
  assert.equal(coalescer.pending, false);
  const [d, e, f] = segmentsOf(6, [1000, 500, 500]) as [Uint8Array, Uint8Array, Uint8Array];
  assert.ok(coalescer.add(d, 0, d.length));
  assert.ok(coalescer.add(e, 0, e.length));
  assert.equal(coalescer.add(f, 0, f.length), false, 'a shorter segment ends the group');
});

/** Datagrams as a sender's stack would emit them: one flow, consecutive IPv4 ids, valid checksums. */
function datagramsOf(version: 4 | 6, sizes: readonly number[], firstId = 0xfffd): Uint8Array[] {
  return sizes.map((size, k) => {
    const payload = Uint8Array.from({ length: size }, (_, i) => (i * 7 + k * 29 + 1) & 0xff);
    const packet = asSuperPacket(buildPacket(version, 17, payload, { id: (firstId + k) & 0xffff }));
    completeChecksum(packet, 0, packet.length, version === 4 ? 20 : 40, 6);
    return packet;
  });
}

for (const version of [4, 6] as const) {
  test(`UDPv${version} coalescing: the super-packet, cut again, gives back the same datagrams`, () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 1000 }),
      fc.nat(0xffff), (count, size, lastSize, firstId) => {
        const last = Math.min(size, lastSize);
        const datagrams = datagramsOf(version, [...new Array<number>(count - 1).fill(size), last], firstId);
        const { h, packet } = coalesced(datagrams);
        if (count === 1) {
          assert.equal(h.gsoType, 0);
          assert.equal(h.flags, 0);
          assert.deepEqual(packet, datagrams[0]);
          return;
        }
        const ip = version === 4 ? 20 : 40;
        assert.equal(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert.equal(h.gsoType, VIRTIO_NET_HDR_GSO_UDP_L4);
        assert.equal(h.gsoSize, size);
        assert.equal(h.headerLength, ip + 8);
        assert.equal(h.csumStart, ip);
        assert.equal(h.csumOffset, 6);
        if (version === 4) assert.equal(referenceSum(packet.subarray(0, 20)), 0xffff);
        assert.equal(be16(packet, ip + 4), packet.length - ip, 'UDP length of the whole group');
        // The partial checksum is the pseudo-header sum for the group's length.
        assert.equal(be16(packet, ip + 6), referenceSum(pseudo(packet, version, 17, packet.length - ip)));
        assert.deepEqual(cut(packet, h), datagrams);
      }), { numRuns: 80 });
  });
}

test('UDP coalescing stops at anything that does not continue the flow', () => {
  const coalescer = new Coalescer(true);
  const [a, b, c] = datagramsOf(4, [1000, 1000, 1000], 7) as [Uint8Array, Uint8Array, Uint8Array];
  assert.ok(coalescer.add(a, 0, a.length));
  assert.equal(coalescer.add(c, 0, c.length), false, 'an IPv4 id that does not follow');
  const otherPort = b.slice(); otherPort[23] = 0x52;
  assert.equal(coalescer.add(otherPort, 0, otherPort.length), false, 'another destination port');
  const otherSource = b.slice(); otherSource[15] = 9;
  assert.equal(coalescer.add(otherSource, 0, otherSource.length), false, 'another source address');
  const otherTos = b.slice(); otherTos[1] = 0;
  assert.equal(coalescer.add(otherTos, 0, otherTos.length), false, 'another TOS');
  const otherTtl = b.slice(); otherTtl[8] = 63;
  assert.equal(coalescer.add(otherTtl, 0, otherTtl.length), false, 'another TTL');
  const noDf = b.slice(); noDf[6] = 0;
  assert.equal(coalescer.add(noDf, 0, noDf.length), false, 'DF differs');
  const longer = datagramsOf(4, [1000, 1001], 7)[1]!;
  assert.equal(coalescer.add(longer, 0, longer.length), false, 'longer than the first');
  const badLength = b.slice(); badLength[25] ^= 1;
  assert.equal(coalescer.add(badLength, 0, badLength.length), false, 'a UDP length that disagrees');
  const [tcp] = segmentsOf(4, [1000]) as [Uint8Array];
  assert.equal(coalescer.add(tcp, 0, tcp.length), false, 'TCP never joins a UDP group');
  assert.ok(coalescer.add(b, 0, b.length));
  assert.ok(coalescer.finish() > 0);
  assert.equal(coalescer.pending, false);

  const [d, e, f] = datagramsOf(6, [900, 400, 400]) as [Uint8Array, Uint8Array, Uint8Array];
  assert.ok(coalescer.add(d, 0, d.length));
  const otherFlowLabel = e.slice(); otherFlowLabel[3] ^= 1;
  assert.equal(coalescer.add(otherFlowLabel, 0, otherFlowLabel.length), false, 'another flow label');
  const otherHopLimit = e.slice(); otherHopLimit[7] = 1;
  assert.equal(coalescer.add(otherHopLimit, 0, otherHopLimit.length), false, 'another hop limit');
  assert.ok(coalescer.add(e, 0, e.length));
  assert.equal(coalescer.add(f, 0, f.length), false, 'a shorter datagram ends the group');
  coalescer.finish();

  const zeroChecksum = datagramsOf(6, [500])[0]!;
  zeroChecksum[46] = 0; zeroChecksum[47] = 0;
  assert.equal(coalescer.add(zeroChecksum, 0, zeroChecksum.length), false, 'an IPv6 zero checksum is left to the kernel');
  const fragment = datagramsOf(4, [500])[0]!;
  fragment[6] = 0x20;
  assert.equal(coalescer.add(fragment, 0, fragment.length), false, 'an IPv4 fragment never opens a group');
  const empty = datagramsOf(4, [0])[0]!;
  assert.equal(coalescer.add(empty, 0, empty.length), false, 'an empty datagram never opens a group');
});

test('a UDP group ends after 64 datagrams, as the kernel GRO does', () => {
  const coalescer = new Coalescer(true);
  const datagrams = datagramsOf(4, new Array<number>(65).fill(100));
  for (const d of datagrams.slice(0, 64)) assert.ok(coalescer.add(d, 0, d.length));
  assert.equal(coalescer.add(datagrams[64]!, 0, datagrams[64]!.length), false);
  assert.equal(coalescer.datagrams, 64);
  coalescer.finish();
  assert.equal(coalescer.datagrams, 0, 'none once the group is written');
});

test('datagrams counts a UDP group only: a TCP group holds none', () => {
  const coalescer = new Coalescer(true);
  const [a, b] = datagramsOf(6, [500, 500]) as [Uint8Array, Uint8Array];
  assert.ok(coalescer.add(a, 0, a.length));
  assert.equal(coalescer.datagrams, 1);
  assert.ok(coalescer.add(b, 0, b.length));
  assert.equal(coalescer.datagrams, 2);
  coalescer.finish();
  const [s, t] = segmentsOf(4, [1000, 1000]) as [Uint8Array, Uint8Array];
  assert.ok(coalescer.add(s, 0, s.length));
  assert.ok(coalescer.add(t, 0, t.length));
  assert.equal(coalescer.datagrams, 0);
});

test('without USO on the TUN device, UDP datagrams are never coalesced but TCP segments still are', () => {
  const coalescer = new Coalescer(false);
  const [a] = datagramsOf(4, [1000, 1000]) as [Uint8Array];
  assert.equal(coalescer.add(a, 0, a.length), false);
  const [s, t] = segmentsOf(4, [1000, 1000]) as [Uint8Array, Uint8Array];
  assert.ok(coalescer.add(s, 0, s.length));
  assert.ok(coalescer.add(t, 0, t.length));
});
