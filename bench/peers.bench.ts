// Memory and configuration time per peer: a real `ztgate wg` device in a network namespace gets
// N peers (default 10,000), each with an IPv4 /32 and an IPv6 /128 allowed IP, through one
// `wg setconf`, and `wg show dump` reads them back. The daemon's resident memory (VmRSS of its
// process, every thread included) is read before and after; the difference divided by N is the
// cost of a peer. The goal is at most 4 KiB per peer. Needs root (network namespaces).
// Resident memory is noisy (page granularity, when V8 collects): `--rounds N` repeats the whole
// measurement on a fresh daemon N times and reports the median.
//
//   node bench/peers.bench.ts [--peers N] [--workers N] [--settle-ms MS] [--rounds N]
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseToolArgs } from '../test/support/tool-args.ts';
import { keyToBase64, generatePrivateKey, publicKeyOf } from '../src/wireguard/keys.ts';
import type { PeerConfig } from '../test/lab/lab.ts';
import { requireRoot, withLab, wg, wgSetconf, wgShowDump, ztgate } from '../test/lab/lab.ts';
import { describeMachine } from './harness.ts';

const values = parseToolArgs(import.meta.filename, {
  options: {
    peers: { type: 'string', default: '10000' },
    workers: { type: 'string', default: '2' },
    'settle-ms': { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '1' },
  },
});
const peerCount = Number(values.peers);
const workers = Number(values.workers);
const settleMs = Number(values['settle-ms']);
const rounds = Number(values.rounds);
if (!(Number.isInteger(peerCount) && peerCount >= 1 && peerCount <= 1 << 20) || !(Number.isInteger(workers) && workers >= 1) ||
  !(settleMs >= 0) || !(Number.isInteger(rounds) && rounds >= 1)) {
  throw new RangeError('bench: --peers (1 to 2^20), --workers (≥ 1), --settle-ms (≥ 0) and --rounds (≥ 1) must be numbers');
}

/** Resident memory of a process in KiB: VmRSS counts the pages of all its threads once. */
async function residentKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (match === null) throw new Error(`bench: no VmRSS for pid ${pid}`);
  return Number(match[1]);
}

function peerConfigs(count: number): PeerConfig[] {
  return Array.from({ length: count }, (_, i): PeerConfig => ({
    publicKey: keyToBase64(publicKeyOf(generatePrivateKey())),
    allowedIps: [`10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}/32`, `fd00::${i.toString(16)}/128`],
  }));
}

async function timed<T>(body: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await body();
  return { value, ms: performance.now() - start };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

await requireRoot();
console.log(describeMachine());
const peers = peerConfigs(peerCount);
const perPeerBytes: number[] = [];
const perPeerAfterDumpBytes: number[] = [];
for (let round = 0; round < rounds; round++) await withLab(async (lab) => {
  const ns = await lab.namespace('pb');
  const ifname = lab.name('wg');
  const daemon = await ztgate(workers).start(ns, ifname);
  const privateKey = keyToBase64(generatePrivateKey());
  // An interface key first, so that "before" already holds everything a peer does not add.
  await wgSetconf(ns, ifname, { privateKey, peers: [] });
  await sleep(settleMs);
  const before = await residentKiB(daemon.process.pid);
  const setconf = await timed(() => wgSetconf(ns, ifname, { privateKey, listenPort: 51820, peers }, 120_000));
  await sleep(settleMs);
  const after = await residentKiB(daemon.process.pid);
  const dump = await timed(() => wgShowDump(ns, ifname));
  if (dump.value.peers.length !== peerCount) throw new Error(`bench: dump lists ${dump.value.peers.length} peers, expected ${peerCount}`);
  const allowed = dump.value.peers.reduce((n, p) => n + p.allowedIps.length, 0);
  if (allowed !== 2 * peerCount) throw new Error(`bench: dump lists ${allowed} allowed IPs, expected ${2 * peerCount}`);
  const afterDump = await residentKiB(daemon.process.pid);
  const transfer = await timed(() => wg(ns, ['show', ifname, 'transfer']));
  if (transfer.value.split('\n').filter(Boolean).length !== peerCount) throw new Error('bench: wg show transfer is short');
  const perPeer = ((after - before) * 1024) / peerCount;
  perPeerBytes.push(perPeer);
  perPeerAfterDumpBytes.push(((afterDump - before) * 1024) / peerCount);
  console.log(`ztgate wg, ${workers} worker(s), ${peerCount} peers with 2 allowed IPs each${rounds > 1 ? ` (round ${round + 1} of ${rounds})` : ''}`);
  console.log(`  daemon VmRSS: ${before} KiB before, ${after} KiB after setconf, ${afterDump} KiB after the dump`);
  console.log(`  memory per peer: ${Math.round(perPeer)} bytes (${(perPeer / 1024).toFixed(2)} KiB; goal ≤ 4 KiB)`);
  console.log(`  wg setconf: ${setconf.ms.toFixed(0)} ms; wg show dump: ${dump.ms.toFixed(0)} ms; wg show transfer: ${transfer.ms.toFixed(0)} ms`);
  await daemon.stop();
});
if (rounds > 1) {
  const perPeer = median(perPeerBytes);
  console.log(`median of ${rounds} rounds: ${Math.round(perPeer)} bytes per peer (${(perPeer / 1024).toFixed(2)} KiB; goal ≤ 4 KiB), ` +
    `${(median(perPeerAfterDumpBytes) / 1024).toFixed(2)} KiB per peer after the dump; ` +
    `range ${(Math.min(...perPeerBytes) / 1024).toFixed(2)}–${(Math.max(...perPeerBytes) / 1024).toFixed(2)} KiB`);
}
