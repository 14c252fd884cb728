// Per-packet AEAD cost of each backend: sealTransport / openTransport of 64-byte and 1420-byte
// packets in place in a SharedArrayBuffer slot, as the workers do. Before timing, the two backends
// must produce the same datagram and each must open what it sealed back to the original bytes.
// Run alone: node bench/aead.bench.ts (or as part of npm run bench).
import type { BenchCase } from './harness.ts';
import { runStandalone } from './harness.ts';
import { nobleAead, sodiumAead } from '../src/wireguard/aead.ts';
import type { AeadBackend } from '../src/wireguard/aead.ts';
import { randomBytes } from '../src/wireguard/crypto.ts';
import { openTransport, sealTransport } from '../src/wireguard/transport.ts';

export const PACKET_SIZES = [64, 1420] as const;

function plaintextOf(size: number): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => (i * 7 + 3) & 0xff);
}

export function aeadCases(): BenchCase[] {
  const key = randomBytes(new Uint8Array(32));
  const slot = new Uint8Array(new SharedArrayBuffer(2048));

  const seal = (aead: AeadBackend, size: number, counter: number): Uint8Array => {
    slot.set(plaintextOf(size), 16);
    const length = sealTransport(aead, key, 1, counter, slot, size);
    return slot.slice(0, length);
  };

  const cases: BenchCase[] = [];
  for (const aead of [sodiumAead, nobleAead]) {
    const other = aead === sodiumAead ? nobleAead : sodiumAead;
    for (const size of PACKET_SIZES) {
      const sealed = seal(aead, size, 7);
      let counter = 0;
      cases.push({
        group: 'aead',
        name: `seal ${aead.name} ${size} B`,
        unit: 'packet',
        opsPerRun: 1,
        check() {
          if (Buffer.compare(seal(aead, size, 42), seal(other, size, 42)) !== 0) throw new Error(`backends disagree at ${size} bytes`);
        },
        run() {
          sealTransport(aead, key, 1, counter++, slot, size);
        },
      });
      cases.push({
        group: 'aead',
        name: `open ${aead.name} ${size} B`,
        unit: 'packet',
        opsPerRun: 1,
        check() {
          slot.set(sealed);
          const length = openTransport(aead, key, slot, sealed.length);
          if (length !== sealed.length - 32) throw new Error(`open returned ${length}`);
          if (Buffer.compare(slot.subarray(16, 16 + size), plaintextOf(size)) !== 0) throw new Error('open gave other bytes');
          slot.set(sealed);
          slot[20]! ^= 1;
          if (openTransport(aead, key, slot, sealed.length) !== -1) throw new Error('a flipped bit authenticated');
        },
        run() {
          slot.set(sealed);
          if (openTransport(aead, key, slot, sealed.length) < 0) throw new Error('bench: open failed');
        },
      });
    }
  }
  return cases;
}

if (import.meta.main) await runStandalone(aeadCases());
