// Warm-up of the control thread's handshake path before the device serves anything. A peer's
// first packet waits for a handshake, and a fresh daemon ran that handshake's code (the engine, the
// Noise steps, BLAKE2s, the MACs) unoptimized: a whole handshake, both sides, cost about 6 ms the
// first time and 0.3–0.4 ms once V8 had compiled it, which took about 100 handshakes (measured
// with bench/handshake.bench.ts's pair). So two scratch engines with random keys complete that
// many handshakes with each other here (about 80 ms); nothing touches a real peer or socket.
// Measured in the lab, first ping through a fresh ztgate pair, two runs each: 20.6/21.1 → 14.6/16.2
// ms (wireguard-go 1.3–1.8 ms); the responder's handling of the initiation 5.2/7.1 → 2.4/2.7 ms,
// the initiator's of the response 2.0/2.2 → 0.6/0.7 ms.
import { WireGuardEngine, type Transmit } from './engine.ts';
import type { Endpoint } from './endpoint.ts';
import { generatePrivateKey, zeroPresharedKey } from './keys.ts';
import { REKEY_TIMEOUT_MS } from './constants.ts';

/** About as many handshakes as V8 needed to optimize the path (see above). */
export const HANDSHAKE_WARMUP_ROUNDS = 120;

/** Addresses from the documentation range (RFC 5737): they exist only in the scratch engines. */
const SCRATCH_A: Endpoint = { family: 4, address: Uint8Array.of(192, 0, 2, 1), port: 51820, localAddress: null, localIfindex: 0 };
const SCRATCH_B: Endpoint = { family: 4, address: Uint8Array.of(192, 0, 2, 2), port: 51820, localAddress: null, localIfindex: 0 };

/**
 * Runs `rounds` handshakes between two scratch engines, A initiating, each answered and confirmed
 * as on the wire. `now` is the engine clock to start from. Returns how many completed on both
 * sides (all of them, or a bug).
 */
export function warmHandshakePaths(now: number, rounds: number = HANDSHAKE_WARMUP_ROUNDS): number {
  // Each handshake's TAI64N timestamp must be newer than the last one the responder took.
  let wallMs = Date.now();
  const engine = (): WireGuardEngine => {
    const made = new WireGuardEngine({ shardCount: 1, random: Math.random, wallClock: () => wallMs });
    made.setPrivateKey(generatePrivateKey());
    return made;
  };
  const a = engine();
  const b = engine();
  a.addPeer(0, 0, b.publicKey!, zeroPresharedKey());
  b.addPeer(0, 0, a.publicKey!, zeroPresharedKey());
  a.setEndpoint(0, SCRATCH_B);
  let completed = 0;
  for (let round = 0; round < rounds; round++) {
    // Past the retry interval, so every request starts a new handshake.
    now += REKEY_TIMEOUT_MS + 1;
    wallMs += REKEY_TIMEOUT_MS + 1;
    a.requestHandshake(0, now);
    deliver(a.pollTransmit(), b, SCRATCH_A, now);
    deliver(b.pollTransmit(), a, SCRATCH_B, now);
    let done = 0;
    for (const side of [a, b]) {
      for (let event = side.pollEvent(); event !== undefined; event = side.pollEvent()) {
        if (event.kind === 'installKeypair') done++;
      }
      while (side.pollTransmit() !== undefined) { /* nothing else goes out */ }
    }
    // The responder's session is confirmed by the initiator's first data packet.
    b.sessionConfirmed(0);
    if (done === 2) completed++;
  }
  return completed;
}

function deliver(transmit: Transmit | undefined, to: WireGuardEngine, from: Endpoint, now: number): void {
  if (transmit !== undefined) to.handleHandshakeDatagram(transmit.bytes, transmit.bytes.length, from, now, false);
}
