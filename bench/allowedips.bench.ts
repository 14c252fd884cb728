// Longest-prefix lookups in a gateway-sized table: 10,000 peers, each with two IPv4 and two IPv6
// prefixes that nest inside shared networks (as tunnel addresses and routed subnets do).
// Run alone: node bench/allowedips.bench.ts (or as part of npm run bench).
import type { BenchCase } from './harness.ts';
import { runStandalone, seeded } from './harness.ts';
import { AllowedIps, formatCidr } from '../src/wireguard/allowedips.ts';

export const PEERS = 10_000;
const BATCH = 4096;

export interface Prefix {
  readonly bytes: Uint8Array;
  readonly prefixLength: number;
  readonly peer: number;
}

export function prefixesOf(peer: number): Prefix[] {
  const hi = peer >>> 8;
  const lo = peer & 0xff;
  return [
    // Tunnel address in 100.64.0.0/10 (CGNAT space, as Firezone assigns).
    { bytes: Uint8Array.of(100, 64 + (peer >>> 16), hi, lo), prefixLength: 32, peer },
    // A routed /24 inside 10.0.0.0/8.
    { bytes: Uint8Array.of(10, hi, lo, 0), prefixLength: 24, peer },
    // Tunnel address fd00:6a::<peer>/128 and a routed /48 under 2001:db8::/32.
    { bytes: Uint8Array.of(0xfd, 0, 0, 0x6a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, hi, lo), prefixLength: 128, peer },
    { bytes: Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, hi, lo, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), prefixLength: 48, peer },
  ];
}

function naiveLookup(prefixes: readonly Prefix[], address: Uint8Array, offset: number, length: number): number {
  let best = -1;
  let bestLength = -1;
  for (const p of prefixes) {
    if (p.bytes.length !== length || p.prefixLength <= bestLength) continue;
    let matches = true;
    for (let bit = 0; bit < p.prefixLength && matches; bit++) {
      const mask = 0x80 >>> (bit & 7);
      matches = (p.bytes[bit >>> 3] & mask) === (address[offset + (bit >>> 3)] & mask);
    }
    if (matches) {
      best = p.peer;
      bestLength = p.prefixLength;
    }
  }
  return best;
}

/** A table holding the prefixes of `peers` peers, ids 0 .. peers - 1. */
export function gatewayTable(peers: number): { table: AllowedIps; prefixes: Prefix[]; insertMs: number } {
  const prefixes: Prefix[] = [];
  for (let peer = 0; peer < peers; peer++) prefixes.push(...prefixesOf(peer));
  const table = new AllowedIps();
  const insertStarted = performance.now();
  for (const { bytes, prefixLength, peer } of prefixes) table.insert(bytes, prefixLength, peer);
  return { table, prefixes, insertMs: performance.now() - insertStarted };
}

export function allowedIpsCases(): BenchCase[] {
  const { table, prefixes, insertMs } = gatewayTable(PEERS);
  // Destination addresses packed back to back, as if read from packet headers: 90% inside some
  // peer's prefixes (a random host), 10% random (mostly misses).
  const random = seeded(7);
  const v4Addresses = new Uint8Array(BATCH * 4);
  const v6Addresses = new Uint8Array(BATCH * 16);
  for (let i = 0; i < BATCH; i++) {
    const [tunnel4, routed4, tunnel6, routed6] = prefixesOf(Math.floor(random() * PEERS));
    const hit = random() < 0.9;
    const v4 = hit ? Uint8Array.from(random() < 0.5 ? tunnel4!.bytes : routed4!.bytes) : new Uint8Array(4);
    const v6 = hit ? Uint8Array.from(random() < 0.5 ? tunnel6!.bytes : routed6!.bytes) : new Uint8Array(16);
    if (hit) {
      v4[3] = v4[3] === 0 ? Math.floor(random() * 256) : v4[3]!;
      for (let b = 6; b < 16 && v6[0] === 0x20; b++) v6[b] = Math.floor(random() * 256);
    } else {
      for (let b = 0; b < 4; b++) v4[b] = Math.floor(random() * 256);
      for (let b = 0; b < 16; b++) v6[b] = Math.floor(random() * 256);
    }
    v4Addresses.set(v4, i * 4);
    v6Addresses.set(v6, i * 16);
  }
  const memory = `${table.size} prefixes, ${(table.byteLength / table.size).toFixed(0)} B/entry, built in ${insertMs.toFixed(0)} ms`;
  let sink = 0;
  // Results must match the linear-scan reference before anything is timed.
  const check = (): void => {
    for (let i = 0; i < BATCH; i += 8) {
      const expected4 = naiveLookup(prefixes, v4Addresses, i * 4, 4);
      const expected6 = naiveLookup(prefixes, v6Addresses, i * 16, 16);
      if (table.lookupV4(v4Addresses, i * 4) !== expected4 || table.lookupV6(v6Addresses, i * 16) !== expected6) {
        throw new Error(`lookup mismatch for address ${i} (${formatCidr(v4Addresses.subarray(i * 4, i * 4 + 4), 32)})`);
      }
    }
  };
  return [
    {
      group: 'allowedips', name: `lookupV4, ${PEERS} peers`, unit: 'lookup', opsPerRun: BATCH, check, note: memory,
      run() {
        for (let i = 0; i < BATCH; i++) sink ^= table.lookupV4(v4Addresses, i * 4);
        if (sink === 0.5) throw new Error('unreachable; keeps the lookups from being optimised away');
      },
    },
    {
      group: 'allowedips', name: `lookupV6, ${PEERS} peers`, unit: 'lookup', opsPerRun: BATCH, check,
      run() {
        for (let i = 0; i < BATCH; i++) sink ^= table.lookupV6(v6Addresses, i * 16);
        if (sink === 0.5) throw new Error('unreachable; keeps the lookups from being optimised away');
      },
    },
  ];
}

if (import.meta.main) await runStandalone(allowedIpsCases());
