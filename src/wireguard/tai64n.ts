// TAI64N timestamps for handshake initiations (whitepaper §5.1, §5.4.2): 8 bytes big-endian
// seconds (2^62 + 10 + Unix seconds, the TAI64 label as WireGuard writes it) then 4 bytes big-endian
// nanoseconds. Responders only accept a timestamp greater than the last one from the same peer,
// which stops replayed initiations.

import { TIMESTAMP_SIZE } from './constants.ts';

const TAI64_BASE = 0x400000000000000an;
// Like wireguard-go (tai64n.go whitenerMask), drop the low 24 bits of the nanoseconds (≈16.8 ms
// steps) so the timestamp does not reveal fine-grained timing of the sender.
const NANOSECOND_WHITENER = 0xffffff;

/** Writes the TAI64N timestamp of `epochMs` (milliseconds since the Unix epoch) into out[0, 12). */
export function tai64nNow(epochMs: number, out: Uint8Array): Uint8Array {
  if (!Number.isFinite(epochMs) || epochMs < 0) throw new RangeError(`tai64n: bad epoch time ${epochMs}`);
  if (out.length < TIMESTAMP_SIZE) throw new RangeError('tai64n: output must hold 12 bytes');
  const seconds = Math.floor(epochMs / 1000);
  const nanoseconds = Math.floor((epochMs - seconds * 1000) * 1_000_000);
  const view = new DataView(out.buffer, out.byteOffset, TIMESTAMP_SIZE);
  view.setBigUint64(0, TAI64_BASE + BigInt(seconds));
  view.setUint32(8, (nanoseconds & ~NANOSECOND_WHITENER) >>> 0);
  return out;
}

/** Orders two timestamps: negative, zero or positive as a is before, equal to or after b. */
export function compareTimestamps(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TIMESTAMP_SIZE; i++) {
    const diff = a[i]! - b[i]!;
    if (diff !== 0) return diff;
  }
  return 0;
}
