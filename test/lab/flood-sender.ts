// Sends a bounded flood of bad datagrams at one UDP address, for the bad-input lab test. Run inside
// a lab namespace: `node flood-sender.ts HOST PORT COUNT SEED [REPLAY_FILE]`. Prints one JSON line
// with how many of each kind it sent. REPLAY_FILE holds captured transport datagrams (length-
// prefixed) that are sent again verbatim: replayed counters.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';

const [host, portText, countText, seedText, replayFile] = process.argv.slice(2);
if (host === undefined || portText === undefined || countText === undefined || seedText === undefined) {
  process.stderr.write('usage: flood-sender.ts HOST PORT COUNT SEED [REPLAY_FILE]\n');
  process.exit(2);
}
const port = Number(portText);
const count = Number(countText);
let seed = Number(seedText) >>> 0;
/** mulberry32: a seeded PRNG so a failing run can be replayed. */
function random(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n: number): number => Math.floor(random() * n);
function randomBytes(length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = int(256);
  return b;
}
function typed(type: number, length: number): Buffer {
  const b = randomBytes(length);
  if (length > 0) b[0] = type;
  if (length > 3) b.fill(0, 1, 4);
  return b;
}

const replays: Buffer[] = [];
if (replayFile !== undefined) {
  const data = readFileSync(replayFile);
  for (let at = 0; at + 2 <= data.length; ) {
    const length = data.readUInt16BE(at);
    replays.push(data.subarray(at + 2, at + 2 + length));
    at += 2 + length;
  }
}

const kinds = {
  random: () => randomBytes(int(1600)),
  oversize: () => randomBytes(1600 + int(30_000)),
  forgedInitiation: () => typed(1, 148),
  truncatedInitiation: () => typed(1, int(148)),
  forgedResponse: () => typed(2, 92),
  forgedCookieReply: () => typed(3, 64),
  forgedTransport: () => typed(4, 32 + int(1500)),
  truncatedTransport: () => typed(4, int(32)),
  badReserved: () => {
    const b = typed(1 + int(4), 148);
    b[1 + int(3)] = 1 + int(255);
    return b;
  },
  replayedTransport: () => replays[int(replays.length)] ?? typed(4, 64),
};
const names = Object.keys(kinds) as (keyof typeof kinds)[];
const sent: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));

const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
let remaining = count;
/** Bursts with a pause between them: a flood, but one the receiver's socket buffer can absorb. */
const BURST = 500;
function burst(): void {
  for (let i = 0; i < BURST && remaining > 0; i++, remaining--) {
    const kind = names[int(names.length)]!;
    sent[kind]!++;
    socket.send(kinds[kind](), port, host);
  }
  if (remaining > 0) setTimeout(burst, 5);
  else setTimeout(() => {
    socket.close();
    process.stdout.write(`${JSON.stringify(sent)}\n`);
  }, 200);
}
burst();
