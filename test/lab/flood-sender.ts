// Sends a bounded flood of bad datagrams at one UDP address, for the bad-input lab tests. Run inside
// a lab namespace: `node flood-sender.ts HOST PORT COUNT SEED [REPLAY_FILE]`. Prints one JSON line
// with how many of each kind it sent. REPLAY_FILE holds captured transport datagrams (length-
// prefixed) that are sent again verbatim: replayed counters. FLOOD_PROFILE=stun sends malformed
// and forged STUN, TURN and ChannelData messages instead of WireGuard-shaped ones.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { seededRandom } from '../support/random.ts';

const [host, portText, countText, seedText, replayFile] = process.argv.slice(2);
if (host === undefined || portText === undefined || countText === undefined || seedText === undefined) {
  process.stderr.write('usage: flood-sender.ts HOST PORT COUNT SEED [REPLAY_FILE]\n');
  process.exit(2);
}
const port = Number(portText);
const count = Number(countText);
/** Seeded, so a failing run can be replayed. */
const random = seededRandom(Number(seedText));
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
/** A STUN header (RFC 8489 §5) with a random transaction id, then `body`. */
function stun(type: number, body: Buffer, lengthField = body.length): Buffer {
  const header = Buffer.alloc(20);
  header.writeUInt16BE(type, 0);
  header.writeUInt16BE(lengthField & 0xffff, 2);
  header.writeUInt32BE(0x2112a442, 4);
  randomBytes(12).copy(header, 8);
  return Buffer.concat([header, body]);
}
function attribute(type: number, value: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt16BE(type, 0);
  header.writeUInt16BE(value.length, 2);
  return Buffer.concat([header, value, Buffer.alloc((4 - (value.length % 4)) % 4)]);
}
/** Appends a valid FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message so far, XOR 0x5354554E. */
function withFingerprint(message: Buffer): Buffer {
  const out = Buffer.concat([message, Buffer.alloc(8)]);
  out.writeUInt16BE(out.length - 20, 2);
  out.writeUInt16BE(0x8028, message.length);
  out.writeUInt16BE(4, message.length + 2);
  out.writeUInt32BE((crc32(out.subarray(0, message.length)) ^ 0x5354554e) >>> 0, message.length + 4);
  return out;
}
const STUN_TYPES = [0x0001, 0x0101, 0x0111, 0x0011, 0x0003, 0x0103, 0x0113, 0x0004, 0x0104, 0x0008, 0x0009, 0x0109, 0x0016, 0x0017];
const stunKinds = {
  randomAttributes: () => {
    const attributes: Buffer[] = [];
    for (let i = int(6); i > 0; i--) attributes.push(attribute(int(0x10000), randomBytes(int(64))));
    return stun(STUN_TYPES[int(STUN_TYPES.length)]!, Buffer.concat(attributes));
  },
  // A well-formed connectivity check (valid FINGERPRINT) with a guessed USERNAME and a forged
  // MESSAGE-INTEGRITY: it must be refused, never answered with a signed success.
  forgedCheck: () => withFingerprint(stun(0x0001, Buffer.concat([
    attribute(0x0006, Buffer.from(`${randomBytes(4).toString('hex')}:${randomBytes(4).toString('hex')}`)),
    attribute(0x0024, randomBytes(4)),
    attribute(0x802a, randomBytes(8)),
    attribute(0x0008, randomBytes(20)),
  ]))),
  badFingerprint: () => stun(0x0001, Buffer.concat([attribute(0x0006, randomBytes(9)), attribute(0x8028, randomBytes(4))])),
  forgedResponse: () => stun(0x0101, Buffer.concat([attribute(0x0020, randomBytes(8)), attribute(0x0008, randomBytes(20))])),
  wrongLength: () => stun(STUN_TYPES[int(STUN_TYPES.length)]!, randomBytes(4 * int(16)), int(0x10000)),
  truncated: () => stun(0x0001, randomBytes(64)).subarray(0, int(24)),
  channelData: () => {
    const payload = randomBytes(int(1400));
    const header = Buffer.alloc(4);
    header.writeUInt16BE(0x4000 + int(0x1000), 0);
    header.writeUInt16BE(random() < 0.8 ? payload.length : int(0x10000), 2);
    return Buffer.concat([header, payload]);
  },
};

const profile: Record<string, () => Buffer> = process.env['FLOOD_PROFILE'] === 'stun' ? stunKinds : kinds;
const names = Object.keys(profile);
const sent: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));

const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
let remaining = count;
/** Bursts with a pause between them: a flood, but one the receiver's socket buffer can absorb. */
const BURST = 500;
function burst(): void {
  for (let i = 0; i < BURST && remaining > 0; i++, remaining--) {
    const kind = names[int(names.length)]!;
    sent[kind]!++;
    socket.send(profile[kind](), port, host);
  }
  if (remaining > 0) setTimeout(burst, 5);
  else setTimeout(() => {
    socket.close();
    process.stdout.write(`${JSON.stringify(sent)}\n`);
  }, 200);
}
burst();
