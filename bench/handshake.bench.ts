// Handshakes per second: one complete Noise_IKpsk2 exchange (whitepaper §5.4.2–§5.4.5) with its
// macs (§5.4.4): the initiator creates an initiation and adds mac1, the responder checks mac1,
// consumes it and creates a response with mac1, the initiator checks that mac1 and consumes the
// response. Before timing, both ends must hold the same keys, crossed over. Timed on one thread,
// and on N worker threads at once (each thread its own pair of identities), since handshakes are
// the control thread's CPU-bound work and the question is how far they spread over cores.
// Run alone: node bench/handshake.bench.ts (or as part of npm run bench).
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { BenchCase } from './harness.ts';
import { runStandalone } from './harness.ts';
import { CookieChecker, CookieGenerator } from '../src/wireguard/cookie.ts';
import { MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, TIMESTAMP_SIZE } from '../src/wireguard/constants.ts';
import { generatePrivateKey, publicKeyOf, zeroPresharedKey } from '../src/wireguard/keys.ts';
import type { PublicKey } from '../src/wireguard/keys.ts';
import { consumeInitiation, consumeResponse, createInitiation, createResponse, peerCrypto } from '../src/wireguard/noise.ts';
import type { LocalIdentity, SessionKeys } from '../src/wireguard/noise.ts';
import { tai64nNow } from '../src/wireguard/tai64n.ts';

const NOW = 1_000_000;

function identity(): LocalIdentity {
  const privateKey = generatePrivateKey();
  return { privateKey, publicKey: publicKeyOf(privateKey) };
}

/** Two identities configured as each other's peer; `handshake()` runs one full exchange. */
export function handshakePair(): () => { initiator: SessionKeys; responder: SessionKeys } {
  const initiator = identity();
  const responder = identity();
  const psk = zeroPresharedKey();
  const responderAtInitiator = peerCrypto(initiator, responder.publicKey, psk);
  const initiatorAtResponder = peerCrypto(responder, initiator.publicKey, psk);
  const macsToResponder = new CookieGenerator(responder.publicKey);
  const macsToInitiator = new CookieGenerator(initiator.publicKey);
  const responderChecker = new CookieChecker(responder.publicKey);
  const initiatorChecker = new CookieChecker(initiator.publicKey);
  const lookup = (key: PublicKey) => (Buffer.compare(key, initiator.publicKey) === 0 ? initiatorAtResponder : undefined);
  const timestamp = tai64nNow(Date.now(), new Uint8Array(TIMESTAMP_SIZE));
  const initiation = new Uint8Array(MESSAGE_INITIATION_SIZE);
  const response = new Uint8Array(MESSAGE_RESPONSE_SIZE);
  let index = 1;
  return () => {
    const state = createInitiation(initiator, responderAtInitiator, index++ >>> 0, timestamp, initiation);
    macsToResponder.addMacs(initiation, MESSAGE_INITIATION_SIZE, NOW);
    if (!responderChecker.checkMac1(initiation, MESSAGE_INITIATION_SIZE)) throw new Error('bench: initiation mac1 rejected');
    const consumed = consumeInitiation(responder, initiation, lookup);
    if (consumed === null) throw new Error('bench: initiation rejected');
    const responderKeys = createResponse(consumed, initiatorAtResponder, index++ >>> 0, response);
    macsToInitiator.addMacs(response, MESSAGE_RESPONSE_SIZE, NOW);
    if (!initiatorChecker.checkMac1(response, MESSAGE_RESPONSE_SIZE)) throw new Error('bench: response mac1 rejected');
    const result = consumeResponse(state, initiator, responderAtInitiator, response);
    if (result === null) throw new Error('bench: response rejected');
    return { initiator: result.keys, responder: responderKeys };
  };
}

function checkKeys(keys: { initiator: SessionKeys; responder: SessionKeys }): void {
  if (Buffer.compare(keys.initiator.sendKey, keys.responder.receiveKey) !== 0 ||
    Buffer.compare(keys.initiator.receiveKey, keys.responder.sendKey) !== 0) {
    throw new Error('the two ends derived different transport keys');
  }
  if (Buffer.compare(keys.initiator.sendKey, keys.initiator.receiveKey) === 0) throw new Error('send and receive keys are equal');
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === 'handshake-shard') {
  const handshake = handshakePair();
  checkKeys(handshake());
  parentPort!.on('message', (count: number) => {
    let done = 0;
    for (let i = 0; i < count; i++) {
      handshake();
      done++;
    }
    parentPort!.postMessage(done);
  });
  parentPort!.postMessage('ready');
}

/** Handshakes on this thread, and on `threads` worker threads at once; `close` stops the workers. */
export async function handshakeCases(threads: number): Promise<{ cases: BenchCase[]; close: () => Promise<void> }> {
  const handshake = handshakePair();
  const perRequest = 50;
  const workers = Array.from({ length: threads }, () => new Worker(new URL(import.meta.url), { workerData: { kind: 'handshake-shard' } }));
  await Promise.all(workers.map((w) => new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('message', () => resolve());
  })));
  const request = (w: Worker): Promise<number> => new Promise((resolve, reject) => {
    w.once('error', reject);
    w.once('message', (done: number) => {
      w.off('error', reject);
      resolve(done);
    });
    w.postMessage(perRequest);
  });
  const runAll = async (): Promise<number> => (await Promise.all(workers.map(request))).reduce((a, b) => a + b, 0);
  return {
    cases: [
      {
        group: 'handshakes', name: 'initiation + response + consume, with mac1, 1 thread', unit: 'handshake', opsPerRun: 1,
        check: () => checkKeys(handshake()),
        run: () => void handshake(),
      },
      {
        group: 'handshakes', name: `the same on ${threads} worker threads at once`, unit: 'handshake', opsPerRun: threads * perRequest,
        async check() {
          const done = await runAll();
          if (done !== threads * perRequest) throw new Error(`workers completed ${done} handshakes, expected ${threads * perRequest}`);
        },
        run: async () => void (await runAll()),
      },
    ],
    close: async () => void (await Promise.all(workers.map((w) => w.terminate()))),
  };
}

if (isMainThread && import.meta.main) {
  const { cases, close } = await handshakeCases(Number(process.argv[2] ?? 2));
  try {
    await runStandalone(cases);
  } finally {
    await close();
  }
}
