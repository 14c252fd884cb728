// Handshakes per second completed by a real `ztgate wg` daemon, end to end (issue 3: "≥ 5,000
// handshakes/s across workers" with 10,000 peers configured through UAPI). The daemon runs in one
// network namespace with N peers (default 10,000) set by one `wg setconf`; a load generator runs in
// another, across a veth. The generator is a child process of this bench with worker threads, each
// owning a slice of the peers' private keys (the bench made them): for every peer it prepares
// initiations before the clock starts (fresh ephemeral each, TAI64N timestamps increasing per peer,
// whitepaper §5.4.2), then during the timed window keeps a fixed number of initiations in flight
// per thread, mac1 (and mac2 once it holds a cookie) added at send time (§5.4.4). A cookie reply
// (the daemon under load, §5.3) is opened and the same initiation is sent again with mac2, as a
// peer that got a cookie would; cookie replies are counted separately. Every response received in
// the window is afterwards checked in full (mac1, then the initiator's consumeResponse: both ends
// must agree on the transcript) and only valid ones count. Reported: completed handshakes/s, the
// daemon's CPU time per thread over the window (from /proc/PID/task/*/stat), its drop records,
// and the UDP counters of its namespace (/proc/net/snmp: receive-buffer overflows).
//
//   node bench/handshake-daemon.bench.ts [--peers N] [--workers N] [--seconds S] [--threads T]
//                                        [--window W] [--per-peer K]
//
// --workers: the daemon's packet threads; --threads: generator threads; --window: initiations in
// flight per generator thread; --per-peer: initiations prepared per peer (the generator stops early
// if it runs out: then raise it). Needs root (network namespaces).
import { createSocket } from 'node:dgram';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseToolArgs } from '../test/support/tool-args.ts';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { CookieChecker, CookieGenerator } from '../src/wireguard/cookie.ts';
import {
  MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE, TIMESTAMP_SIZE,
} from '../src/wireguard/constants.ts';
import { generatePrivateKey, keyToBase64, parseKeyBase64, publicKeyOf, toPrivateKey, toPublicKey, zeroPresharedKey } from '../src/wireguard/keys.ts';
import { readU32LE } from '../src/wireguard/messages.ts';
import { consumeResponse, createInitiation, peerCrypto, type InitiatorState, type LocalIdentity, type PeerCrypto } from '../src/wireguard/noise.ts';
import { tai64nNow } from '../src/wireguard/tai64n.ts';
import type { PeerConfig } from '../test/lab/lab.ts';
import { requireRoot, withLab, wgSetconf, ztgate } from '../test/lab/lab.ts';
import { describeMachine } from './harness.ts';

/** Where the generator sends, and what each of its threads owns. */
interface GeneratorConfig {
  readonly host: string;
  readonly port: number;
  readonly daemonPublicKey: string;
  readonly peerPrivateKeys: readonly string[];
  readonly threads: number;
  readonly window: number;
  readonly perPeer: number;
  readonly seconds: number;
}

interface ThreadData {
  readonly kind: 'handshake-generator';
  readonly thread: number;
  readonly config: GeneratorConfig;
  readonly first: number;
  readonly end: number;
}

/** What one generator thread counted. */
interface ThreadResult {
  readonly sent: number;
  readonly resent: number;
  readonly responses: number;
  readonly validResponses: number;
  readonly invalidResponses: number;
  readonly lateResponses: number;
  readonly unexpected: number;
  readonly cookieReplies: number;
  readonly badCookieReplies: number;
  readonly timedOut: number;
  readonly exhausted: boolean;
  readonly windowMs: number;
  readonly prepareMs: number;
  readonly warmupResponses: number;
  readonly warmupCookieReplies: number;
  readonly warmupTimedOut: number;
  /** Milliseconds from the (last) send of an initiation to its response, for the window's responses. */
  readonly latenciesMs: readonly number[];
}

/** An initiation not answered within this long is counted as lost and its peer moves on. */
const ANSWER_TIMEOUT_MS = 1_000;
/** Above the responder's per-peer flood limit (HANDSHAKE_INITIATION_RATE, 50 ms) with a margin. */
const PER_PEER_GAP_MS = 60;
/** Successive prepared initiations of a peer are this far apart in TAI64N time (whitening is 16.8 ms). */
const TIMESTAMP_STEP_MS = 100;

// ---- generator thread ----------------------------------------------------------------------------

interface PreparedInitiation {
  readonly message: Uint8Array;
  readonly state: InitiatorState;
  readonly peer: number;
  response: Uint8Array | null;
  sentAt: number;
  /** Sent in the timed window (not the warm-up). */
  timed: boolean;
  late: boolean;
}

interface GeneratorPeer {
  readonly identity: LocalIdentity;
  readonly crypto: PeerCrypto;
  readonly cookies: CookieGenerator;
  /** Index into `prepared` of this peer's next initiation; its initiations are `perPeer` apart. */
  next: number;
  busy: boolean;
  lastSentAt: number;
}

async function runGeneratorThread(data: ThreadData): Promise<void> {
  const { config, thread } = data;
  const daemonPublic = toPublicKey(parseKeyBase64(config.daemonPublicKey, 'daemon public key'));
  const psk = zeroPresharedKey();
  const prepareStart = performance.now();
  const peers: GeneratorPeer[] = [];
  for (let i = data.first; i < data.end; i++) {
    const privateKey = toPrivateKey(parseKeyBase64(config.peerPrivateKeys[i]!, 'peer private key'));
    const identity = { privateKey, publicKey: publicKeyOf(privateKey) };
    peers.push({ identity, crypto: peerCrypto(identity, daemonPublic, psk), cookies: new CookieGenerator(daemonPublic), next: 0, busy: false, lastSentAt: -Infinity });
  }
  // Initiation k of peer p lives at prepared[k * peers.length + p]; its sender index is that
  // position plus the thread's prefix, so a reply finds it by its receiver index.
  const prepared: PreparedInitiation[] = [];
  const timestamp = new Uint8Array(TIMESTAMP_SIZE);
  const baseMs = Date.now();
  for (let k = 0; k < config.perPeer; k++) {
    tai64nNow(baseMs + k * TIMESTAMP_STEP_MS, timestamp);
    for (let p = 0; p < peers.length; p++) {
      const peer = peers[p]!;
      const message = new Uint8Array(MESSAGE_INITIATION_SIZE);
      const state = createInitiation(peer.identity, peer.crypto, indexOf(thread, prepared.length), timestamp, message);
      prepared.push({ message, state, peer: p, response: null, sentAt: 0, timed: false, late: false });
    }
  }
  const prepareMs = performance.now() - prepareStart;

  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, resolve));
  socket.setRecvBufferSize(4 << 20);
  socket.setSendBufferSize(4 << 20);
  const nextMessage = (): Promise<void> => new Promise<void>((resolve) => parentPort!.once('message', () => resolve()));
  parentPort!.postMessage({ kind: 'prepared' });
  await nextMessage();

  const zero = { sent: 0, resent: 0, responses: 0, lateResponses: 0, unexpected: 0, cookieReplies: 0, badCookieReplies: 0, timedOut: 0 };
  let counts = { ...zero };
  const inFlight = new Set<PreparedInitiation>();
  const latenciesMs: number[] = [];
  /** warm-up: every peer's first initiation, untimed, so each peer holds its cookie; then timed. */
  let phase: 'warmup' | 'timed' | 'over' = 'warmup';
  let deadline = Infinity;
  let exhausted = false;
  let cursor = 0;
  let warmed = 0;
  let onWarm: (() => void) | null = null;

  const send = (initiation: PreparedInitiation, now: number): void => {
    const peer = peers[initiation.peer]!;
    peer.cookies.addMacs(initiation.message, MESSAGE_INITIATION_SIZE, Date.now());
    initiation.sentAt = now;
    peer.lastSentAt = now;
    socket.send(initiation.message, config.port, config.host);
  };
  /** Keeps `window` initiations in flight: each from a peer with none outstanding and not sent to lately. */
  const refill = (): void => {
    const now = performance.now();
    for (let tries = 0; phase !== 'over' && inFlight.size < config.window && tries < peers.length; tries++) {
      const p = cursor;
      cursor = (cursor + 1) % peers.length;
      const peer = peers[p]!;
      if (peer.busy || now - peer.lastSentAt < PER_PEER_GAP_MS) continue;
      if (peer.next >= (phase === 'warmup' ? 1 : config.perPeer)) {
        if (phase === 'timed') exhausted = true;
        continue;
      }
      const initiation = prepared[peer.next * peers.length + p]!;
      initiation.timed = phase === 'timed';
      peer.next++;
      peer.busy = true;
      inFlight.add(initiation);
      counts.sent++;
      send(initiation, now);
    }
  };
  const finish = (initiation: PreparedInitiation): void => {
    inFlight.delete(initiation);
    peers[initiation.peer]!.busy = false;
    if (!initiation.timed && ++warmed === peers.length) onWarm?.();
  };

  socket.on('message', (msg: Buffer) => {
    const now = performance.now();
    const type = msg[0];
    const position = msg.length >= 12 ? positionOf(thread, readU32LE(msg, msg.length === MESSAGE_RESPONSE_SIZE ? 8 : 4)) : -1;
    const initiation = position >= 0 ? prepared[position] : undefined;
    if (initiation === undefined || !inFlight.has(initiation)) {
      counts.unexpected++;
      return;
    }
    if (type === MESSAGE_RESPONSE && msg.length === MESSAGE_RESPONSE_SIZE) {
      initiation.response = Uint8Array.from(msg);
      if (now > deadline) {
        initiation.late = true;
        counts.lateResponses++;
      } else {
        counts.responses++;
        if (initiation.timed) latenciesMs.push(now - initiation.sentAt);
      }
      finish(initiation);
    } else if (type === MESSAGE_COOKIE_REPLY && msg.length === MESSAGE_COOKIE_REPLY_SIZE) {
      const peer = peers[initiation.peer]!;
      if (peer.cookies.consumeReply(msg, msg.length, Date.now())) {
        counts.cookieReplies++;
        // The daemon did not consume it (no timestamp kept), so the same initiation, now with
        // mac2, is as fresh as a new one.
        if (phase !== 'over') {
          counts.resent++;
          send(initiation, now);
          return;
        }
      } else counts.badCookieReplies++;
      finish(initiation);
    } else counts.unexpected++;
    refill();
  });
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const initiation of inFlight) {
      if (now - initiation.sentAt > ANSWER_TIMEOUT_MS) {
        counts.timedOut++;
        finish(initiation);
      }
    }
    refill();
  }, 50);

  const warm = new Promise<void>((resolve) => (onWarm = resolve));
  refill();
  await warm;
  const warmup = counts;
  counts = { ...zero };
  parentPort!.postMessage({ kind: 'warm' });
  await nextMessage();

  phase = 'timed';
  const start = performance.now();
  deadline = start + config.seconds * 1000;
  refill();
  await sleep(Math.max(0, deadline - performance.now()));
  phase = 'over';
  const windowMs = performance.now() - start;
  parentPort!.postMessage({ kind: 'stopped' });
  // Answers already on their way still arrive (counted as late, not in the rate).
  await sleep(300);
  clearInterval(sweep);
  socket.close();

  // Every answer in the window, checked in full: mac1 for our public key, then the transcript.
  let validResponses = 0;
  let invalidResponses = 0;
  const checkers = peers.map((peer) => new CookieChecker(peer.identity.publicKey));
  for (const initiation of prepared) {
    if (initiation.response === null || !initiation.timed || initiation.late) continue;
    const peer = peers[initiation.peer]!;
    const ok = checkers[initiation.peer]!.checkMac1(initiation.response, MESSAGE_RESPONSE_SIZE) &&
      consumeResponse(initiation.state, peer.identity, peer.crypto, initiation.response) !== null;
    if (ok) validResponses++;
    else invalidResponses++;
  }
  const result: ThreadResult = {
    ...counts, validResponses, invalidResponses, exhausted, windowMs, prepareMs,
    warmupResponses: warmup.responses, warmupCookieReplies: warmup.cookieReplies, warmupTimedOut: warmup.timedOut, latenciesMs,
  };
  parentPort!.postMessage({ kind: 'result', result });
}

/** Sender indexes: the thread in the top byte, the prepared initiation's position below it. */
function indexOf(thread: number, position: number): number {
  if (position >= 1 << 24) throw new RangeError('bench: too many prepared initiations per thread (2^24)');
  return ((thread << 24) | position) >>> 0;
}

function positionOf(thread: number, index: number): number {
  return index >>> 24 === thread ? index & 0xffffff : -1;
}

// ---- generator process ---------------------------------------------------------------------------

async function runGenerator(configPath: string): Promise<void> {
  const config = JSON.parse(await readFile(configPath, 'utf8')) as GeneratorConfig;
  const total = config.peerPrivateKeys.length;
  const workers = Array.from({ length: config.threads }, (_, thread) => {
    const first = Math.floor((total * thread) / config.threads);
    const end = Math.floor((total * (thread + 1)) / config.threads);
    const data: ThreadData = { kind: 'handshake-generator', thread, config, first, end };
    return new Worker(new URL(import.meta.url), { workerData: data });
  });
  const message = (w: Worker, kind: string): Promise<{ kind: string; result?: ThreadResult }> => new Promise((resolve, reject) => {
    const onMessage = (m: { kind: string; result?: ThreadResult }): void => {
      if (m.kind !== kind) return;
      w.off('message', onMessage);
      resolve(m);
    };
    w.on('message', onMessage);
    w.once('error', reject);
  });
  const prepared = workers.map((w) => message(w, 'prepared'));
  const warm = workers.map((w) => message(w, 'warm'));
  const stopped = workers.map((w) => message(w, 'stopped'));
  const results = workers.map((w) => message(w, 'result'));
  await Promise.all(prepared);
  console.log('prepared');
  for (const w of workers) w.postMessage('warm up');
  await Promise.all(warm);
  console.log('ready');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  console.log('go');
  for (const w of workers) w.postMessage('go');
  await Promise.all(stopped);
  console.log('stopped');
  const done = (await Promise.all(results)).map((d) => d.result!);
  // The latencies are summarized here: the whole list would be a very long line.
  const latencies = done.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
  const percentile = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  console.log(`latency ${JSON.stringify({ p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99) })}`);
  console.log(`result ${JSON.stringify(done.map((r) => ({ ...r, latenciesMs: [] })))}`);
  await Promise.all(workers.map((w) => w.terminate()));
}

// ---- bench driver --------------------------------------------------------------------------------

/** CPU seconds (user + system) of each thread of `pid`, by thread id, with the thread's name. */
async function threadCpu(pid: number): Promise<Map<number, { name: string; seconds: number }>> {
  const out = new Map<number, { name: string; seconds: number }>();
  const ticksPerSecond = 100;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // The thread ended meanwhile.
    }
    const close = stat.lastIndexOf(')');
    const name = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the name.
    out.set(Number(tid), { name, seconds: (Number(fields[11]) + Number(fields[12])) / ticksPerSecond });
  }
  return out;
}

/** CPU seconds (user + system) of all of a process's threads. */
async function processCpu(pid: number): Promise<number> {
  let total = 0;
  for (const { seconds } of (await threadCpu(pid)).values()) total += seconds;
  return total;
}

/** The UDP line of /proc/net/snmp in a namespace, as name → count. */
async function udpCounters(run: (args: readonly string[]) => Promise<string>): Promise<Record<string, number>> {
  const lines = (await run(['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]!.split(/\s+/).slice(1);
  const values = lines[1]!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(names.map((n, i) => [n, values[i]!]));
}

/** The last "dropped packets" record of each thread in the daemon's log. */
function lastDropRecords(output: string): Record<string, Record<string, number>> {
  const records: Record<string, Record<string, number>> = {};
  for (const line of output.split('\n')) {
    if (!line.includes('"dropped packets"')) continue;
    try {
      const record = JSON.parse(line) as { thread?: string; drops?: Record<string, number> };
      if (record.thread !== undefined && record.drops !== undefined) records[record.thread] = record.drops;
    } catch {
      // A line cut by the output tail: the next record has the same counters, newer.
    }
  }
  return records;
}

async function runBench(): Promise<void> {
  const values = parseToolArgs(import.meta.filename, {
    options: {
      peers: { type: 'string', default: '10000' },
      workers: { type: 'string', default: '2' },
      seconds: { type: 'string', default: '8' },
      threads: { type: 'string', default: '2' },
      window: { type: 'string', default: '64' },
      'per-peer': { type: 'string', default: '10' },
    },
  });
  const peerCount = Number(values.peers);
  const workers = Number(values.workers);
  const seconds = Number(values.seconds);
  const threads = Number(values.threads);
  const window = Number(values.window);
  const perPeer = Number(values['per-peer']);
  const positive = (n: number): boolean => Number.isInteger(n) && n >= 1;
  if (!(positive(peerCount) && peerCount <= 1 << 20 && positive(workers) && seconds > 0 && positive(threads) && threads <= 255 &&
    positive(window) && positive(perPeer))) {
    throw new RangeError('bench: --peers (1 to 2^20), --workers, --threads (≤ 255), --window and --per-peer must be positive integers, --seconds positive');
  }
  if (Math.ceil(peerCount / threads) * perPeer >= 1 << 24) throw new RangeError('bench: --per-peer too large for this many peers per thread');

  await requireRoot();
  console.log(describeMachine());
  const peerKeys = Array.from({ length: peerCount }, () => generatePrivateKey());
  const peers = peerKeys.map((key, i): PeerConfig => ({
    publicKey: keyToBase64(publicKeyOf(key)),
    allowedIps: [`10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}/32`],
  }));
  const daemonKey = generatePrivateKey();
  await withLab(async (lab) => {
    const daemonNs = await lab.namespace('hd');
    const generatorNs = await lab.namespace('hg');
    await lab.veth(daemonNs, generatorNs, { labelA: 'vd', labelB: 'vg', addressesA: ['10.77.0.1/24'], addressesB: ['10.77.0.2/24'] });
    const ifname = lab.name('wg');
    const daemon = await ztgate(workers).start(daemonNs, ifname);
    const port = 51820;
    const setconfStart = performance.now();
    await wgSetconf(daemonNs, ifname, { privateKey: keyToBase64(daemonKey), listenPort: port, peers }, 120_000);
    console.log(`ztgate wg, ${workers} worker(s), ${peerCount} peers set in ${(performance.now() - setconfStart).toFixed(0)} ms`);

    const config: GeneratorConfig = {
      host: '10.77.0.1', port, daemonPublicKey: keyToBase64(toPublicKey(publicKeyOf(daemonKey))),
      peerPrivateKeys: peerKeys.map(keyToBase64), threads, window, perPeer, seconds,
    };
    const configPath = await lab.tempFile('generator.json', JSON.stringify(config));
    const generator = lab.spawn(generatorNs, process.execPath, [new URL(import.meta.url).pathname, '--generator', configPath], undefined, { stdin: true });
    let resultLine: string | null = null;
    let latencyLine = '{}';
    // Sampled the moment the generator stops sending (it then checks the responses at leisure).
    const windowEnd: { sample: Promise<{ cpu: Map<number, { name: string; seconds: number }>; generatorCpu: number; wallMs: number }> | null } = { sample: null };
    generator.onStdoutLine((line) => {
      if (line.startsWith('result ')) resultLine = line.slice('result '.length);
      if (line.startsWith('latency ')) latencyLine = line.slice('latency '.length);
      if (line === 'stopped') {
        windowEnd.sample = Promise.all([threadCpu(daemon.process.pid), processCpu(generator.pid)])
          .then(([cpu, generatorCpu]) => ({ cpu, generatorCpu, wallMs: performance.now() }));
      }
    });
    const prepareStart = performance.now();
    await generator.waitForOutput(/^prepared$/m, 600_000);
    console.log(`generator: ${threads} thread(s), ${perPeer} initiations prepared per peer in ${((performance.now() - prepareStart) / 1000).toFixed(1)} s, window ${window} per thread`);
    const warmStart = performance.now();
    await generator.waitForOutput(/^ready$/m, 600_000);
    const warmSeconds = (performance.now() - warmStart) / 1000;

    const daemonNsRun = async (args: readonly string[]): Promise<string> => (await daemonNs.exec(args[0]!, args.slice(1))).stdout;
    const generatorNsRun = async (args: readonly string[]): Promise<string> => (await generatorNs.exec(args[0]!, args.slice(1))).stdout;
    const udpBefore = await udpCounters(daemonNsRun);
    const generatorUdpBefore = await udpCounters(generatorNsRun);
    const cpuBefore = await threadCpu(daemon.process.pid);
    const generatorCpuBefore = await processCpu(generator.pid);
    const wallStart = performance.now();
    generator.write('go\n');
    await generator.waitForOutput(/^stopped$/m, (seconds + 600) * 1000);
    const udpAfter = await udpCounters(daemonNsRun);
    const generatorUdpAfter = await udpCounters(generatorNsRun);
    await generator.waitForOutput(/^result /m, 600_000);
    if (windowEnd.sample === null) throw new Error('bench: the generator did not say when it stopped');
    const { cpu: cpuAfter, generatorCpu, wallMs } = await windowEnd.sample;
    const wallSeconds = (wallMs - wallStart) / 1000;
    await sleep(2_500); // Drop records are written at most every 2 s.
    const drops = lastDropRecords(daemon.process.output());
    await daemon.stop();

    if (resultLine === null) throw new Error('bench: the generator printed no result');
    const results = JSON.parse(resultLine) as ThreadResult[];
    const sum = (key: keyof ThreadResult): number => results.reduce((n, r) => n + Number(r[key]), 0);
    const windowSeconds = Math.max(...results.map((r) => r.windowMs)) / 1000;
    const valid = sum('validResponses');
    console.log(`warm-up (one handshake per peer, untimed): ${warmSeconds.toFixed(1)} s, ${sum('warmupResponses')} responses, ` +
      `${sum('warmupCookieReplies')} cookie replies, ${sum('warmupTimedOut')} unanswered after ${ANSWER_TIMEOUT_MS} ms`);
    console.log(`window ${windowSeconds.toFixed(2)} s: sent ${sum('sent')} initiations (+${sum('resent')} resent with mac2 after a cookie reply)`);
    console.log(`  responses ${sum('responses')} (valid ${valid}, invalid ${sum('invalidResponses')}), late ${sum('lateResponses')}, ` +
      `cookie replies ${sum('cookieReplies')} (bad ${sum('badCookieReplies')}), unanswered after ${ANSWER_TIMEOUT_MS} ms ${sum('timedOut')}, ` +
      `unexpected ${sum('unexpected')}${results.some((r) => r.exhausted) ? '; GENERATOR RAN OUT of prepared initiations: raise --per-peer' : ''}`);
    console.log(`  handshakes completed: ${(valid / windowSeconds).toFixed(0)}/s (goal ≥ 5,000/s)`);
    const latency = JSON.parse(latencyLine) as Record<string, number>;
    console.log(`  initiation → response: ${Object.entries(latency).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ')} (with ${window * threads} in flight)`);
    let total = 0;
    const byName = new Map<string, number>();
    for (const [tid, after] of cpuAfter) {
      const used = after.seconds - (cpuBefore.get(tid)?.seconds ?? 0);
      total += used;
      const name = tid === daemon.process.pid ? 'control (main thread)' : after.name;
      byName.set(name, (byName.get(name) ?? 0) + used);
    }
    const control = byName.get('control (main thread)') ?? 0;
    console.log(`  daemon CPU over ${wallSeconds.toFixed(2)} s: ${total.toFixed(2)} s in all (${(total / wallSeconds * 100).toFixed(0)} % of a core), ` +
      `control thread ${control.toFixed(2)} s (${(control / wallSeconds * 100).toFixed(0)} %); ` +
      `${valid > 0 ? ((total / valid) * 1e6).toFixed(0) : '-'} µs of daemon CPU and ${valid > 0 ? ((control / valid) * 1e6).toFixed(0) : '-'} µs of control-thread CPU per handshake`);
    console.log(`  generator CPU (same machine): ${(generatorCpu - generatorCpuBefore).toFixed(2)} s`);
    console.log(`  by thread: ${[...byName].sort((a, b) => b[1] - a[1]).map(([n, s]) => `${n} ${s.toFixed(2)} s`).join(', ')}`);
    const udpDelta = (after: Record<string, number>, before: Record<string, number>): string => JSON.stringify(Object.fromEntries(
      ['InDatagrams', 'RcvbufErrors', 'InErrors', 'OutDatagrams', 'SndbufErrors'].map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)])));
    console.log(`  UDP in the window: daemon namespace ${udpDelta(udpAfter, udpBefore)}; generator namespace ${udpDelta(generatorUdpAfter, generatorUdpBefore)}`);
    console.log(`  daemon drop records (cumulative): ${JSON.stringify(drops)}`);
  });
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === 'handshake-generator') {
  await runGeneratorThread(workerData as ThreadData);
} else if (isMainThread && import.meta.main) {
  const at = process.argv.indexOf('--generator');
  if (at >= 0) await runGenerator(process.argv[at + 1]!);
  else await runBench();
}
