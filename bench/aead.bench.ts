// Per-packet AEAD cost of each backend: sealTransport / openTransport of 64-byte and 1420-byte
// packets in place in a SharedArrayBuffer slot, as the workers do. The backends' outputs are
// compared before anything is timed.
// Run: node bench/aead.bench.ts
import { Bench } from 'tinybench';
import { nobleAead, sodiumAead } from '../src/wireguard/aead.ts';
import type { AeadBackend } from '../src/wireguard/aead.ts';
import { randomBytes } from '../src/wireguard/crypto.ts';
import { openTransport, sealTransport } from '../src/wireguard/transport.ts';

const SIZES = [64, 1420];
const key = randomBytes(new Uint8Array(32));
const slot = new Uint8Array(new SharedArrayBuffer(2048));

function sealOnce(aead: AeadBackend, size: number, counter: number): Uint8Array {
  slot.fill(0x5a, 16, 16 + size);
  const len = sealTransport(aead, key, 1, counter, slot, size);
  return slot.slice(0, len);
}

for (const size of SIZES) {
  const a = sealOnce(sodiumAead, size, 42);
  const b = sealOnce(nobleAead, size, 42);
  if (Buffer.compare(a, b) !== 0) throw new Error(`bench: backends disagree at ${size} bytes`);
}

const bench = new Bench({ time: 1500, warmupTime: 300 });
for (const aead of [sodiumAead, nobleAead]) {
  for (const size of SIZES) {
    let counter = 0;
    bench.add(`seal ${aead.name} ${size}`, () => {
      sealTransport(aead, key, 1, counter++, slot, size);
    });
    const sealed = sealOnce(aead, size, 7);
    bench.add(`open ${aead.name} ${size}`, () => {
      slot.set(sealed);
      if (openTransport(aead, key, slot, sealed.length) < 0) throw new Error('bench: open failed');
    });
  }
}
await bench.run();
for (const task of bench.tasks) {
  const result = task.result;
  if (result.state !== 'completed') throw new Error(`bench: ${task.name} ${result.state}`);
  console.log(`aead: ${task.name}: ${(result.latency.mean * 1000).toFixed(2)} µs per packet (±${result.latency.rme.toFixed(1)}%)`);
}
