// Handshakes per second: one complete Noise_IKpsk2 exchange (whitepaper §5.4.2–§5.4.5) with its
// macs (§5.4.4): the initiator creates an initiation and adds mac1, the responder checks mac1,
// consumes it and creates a response with mac1, the initiator checks that mac1 and consumes the
// response. Before timing, both ends must hold the same keys, crossed over. Timed on one thread,
// and on N worker threads at once (each thread its own pair of identities), since handshakes are
// the control thread's CPU-bound work and the question is how far they spread over cores.
// A responder under load does only its half: check mac1, consume the initiation, create and mac the
// response (3 X25519 + 1 base-point multiplication); that half is timed on its own too, against a
// pool of initiations from different peers, on one thread and on N threads.
// Run alone: node bench/handshake.bench.ts (or as part of npm run bench).
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { BenchCase } from './harness.ts';
import { runStandalone } from './harness.ts';
import { CookieChecker, CookieGenerator } from '../src/wireguard/cookie.ts';
import { MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, TIMESTAMP_SIZE } from '../src/wireguard/constants.ts';
import { generatePrivateKey, publicKeyOf, zeroPresharedKey } from '../src/wireguard/keys.ts';
import type { PublicKey } from '../src/wireguard/keys.ts';
import { consumeInitiation, consumeResponse, createInitiation, createResponse, peerCrypto } from '../src/wireguard/noise.ts';
import type { LocalIdentity, PeerCrypto, SessionKeys } from '../src/wireguard/noise.ts';
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

const RESPONDER_PEERS = 16;

/**
 * A responder with RESPONDER_PEERS configured peers, each of which has sent one initiation;
 * `respond()` answers the next one in turn (the replay check on timestamps is the engine's, not
 * timed here) and returns the responder's transport keys.
 */
export function responderHalf(): () => SessionKeys {
  const responder = identity();
  const psk = zeroPresharedKey();
  const checker = new CookieChecker(responder.publicKey);
  const timestamp = tai64nNow(Date.now(), new Uint8Array(TIMESTAMP_SIZE));
  const peers = new Map<string, { readonly crypto: PeerCrypto; readonly macs: CookieGenerator }>();
  const initiations: Uint8Array[] = [];
  for (let i = 0; i < RESPONDER_PEERS; i++) {
    const initiator = identity();
    const initiation = new Uint8Array(MESSAGE_INITIATION_SIZE);
    createInitiation(initiator, peerCrypto(initiator, responder.publicKey, psk), i, timestamp, initiation);
    new CookieGenerator(responder.publicKey).addMacs(initiation, MESSAGE_INITIATION_SIZE, NOW);
    initiations.push(initiation);
    peers.set(Buffer.from(initiator.publicKey).toString('binary'), {
      crypto: peerCrypto(responder, initiator.publicKey, psk), macs: new CookieGenerator(initiator.publicKey),
    });
  }
  const lookup = (key: PublicKey) => peers.get(Buffer.from(key).toString('binary'))?.crypto;
  const response = new Uint8Array(MESSAGE_RESPONSE_SIZE);
  let next = 0;
  let index = 1;
  return () => {
    const initiation = initiations[next]!;
    next = (next + 1) % RESPONDER_PEERS;
    if (!checker.checkMac1(initiation, MESSAGE_INITIATION_SIZE)) throw new Error('bench: initiation mac1 rejected');
    const consumed = consumeInitiation(responder, initiation, lookup);
    if (consumed === null) throw new Error('bench: initiation rejected');
    const peer = peers.get(Buffer.from(consumed.remoteStatic).toString('binary'))!;
    const keys = createResponse(consumed, peer.crypto, index++ >>> 0, response);
    peer.macs.addMacs(response, MESSAGE_RESPONSE_SIZE, NOW);
    return keys;
  };
}

function checkKeys(keys: { initiator: SessionKeys; responder: SessionKeys }): void {
  if (Buffer.compare(keys.initiator.sendKey, keys.responder.receiveKey) !== 0 ||
    Buffer.compare(keys.initiator.receiveKey, keys.responder.sendKey) !== 0) {
    throw new Error('the two ends derived different transport keys');
  }
  if (Buffer.compare(keys.initiator.sendKey, keys.initiator.receiveKey) === 0) throw new Error('send and receive keys are equal');
}

type ShardKind = 'handshake-shard' | 'responder-shard';

if (!isMainThread && ['handshake-shard', 'responder-shard'].includes((workerData as { kind?: string } | null)?.kind ?? '')) {
  const kind = (workerData as { kind: ShardKind }).kind;
  const handshake = kind === 'handshake-shard' ? handshakePair() : responderHalf();
  if (kind === 'handshake-shard') checkKeys(handshakePair()());
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

/** A pool of `threads` worker threads of one kind; `run()` has each do `perRequest` handshakes at once. */
async function shardPool(kind: ShardKind, threads: number, perRequest: number): Promise<{ run: () => Promise<number>; close: () => Promise<void> }> {
  const workers = Array.from({ length: threads }, () => new Worker(new URL(import.meta.url), { workerData: { kind } }));
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
  return {
    run: async () => (await Promise.all(workers.map(request))).reduce((a, b) => a + b, 0),
    close: async () => void (await Promise.all(workers.map((w) => w.terminate()))),
  };
}

/** Handshakes on this thread, and on `threads` worker threads at once; `close` stops the workers. */
export async function handshakeCases(threads: number): Promise<{ cases: BenchCase[]; close: () => Promise<void> }> {
  const handshake = handshakePair();
  const respond = responderHalf();
  const perRequest = 50;
  const full = await shardPool('handshake-shard', threads, perRequest);
  const responders = await shardPool('responder-shard', threads, perRequest);
  const checkCount = (done: number): void => {
    if (done !== threads * perRequest) throw new Error(`workers completed ${done} handshakes, expected ${threads * perRequest}`);
  };
  return {
    cases: [
      {
        group: 'handshakes', name: 'initiation + response + consume, with mac1, 1 thread', unit: 'handshake', opsPerRun: 1,
        check: () => checkKeys(handshake()),
        run: () => void handshake(),
      },
      {
        group: 'handshakes', name: `the same on ${threads} worker threads at once`, unit: 'handshake', opsPerRun: threads * perRequest,
        check: async () => checkCount(await full.run()),
        run: async () => void (await full.run()),
      },
      {
        group: 'handshakes', name: 'responder half (mac1 check, consume, respond), 1 thread', unit: 'handshake', opsPerRun: 1,
        check() {
          const keys = respond();
          if (Buffer.compare(keys.sendKey, keys.receiveKey) === 0) throw new Error('send and receive keys are equal');
        },
        run: () => void respond(),
      },
      {
        group: 'handshakes', name: `responder half on ${threads} worker threads at once`, unit: 'handshake', opsPerRun: threads * perRequest,
        check: async () => checkCount(await responders.run()),
        run: async () => void (await responders.run()),
      },
    ],
    close: async () => void (await Promise.all([full.close(), responders.close()])),
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
