// Bad input never crashes ztgate: a flood of random, truncated, forged, oversize and replayed
// datagrams at the listen port is dropped and counted while traffic through the tunnel goes on, and
// a malformed UAPI request gets a non-zero errno and leaves the configuration as it was.
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildPair, dropsByReason, hostOf, kernelUdpDrops, labTest, latestDropCounts, ping, requireRoot, uapiSocketPath, wg,
} from './lab.ts';
import type { ImplPairing, Side } from './lab.ts';

await requireRoot();

const FLOOD_COUNT = 100_000;
const REPO_ROOT = join(import.meta.dirname, '..', '..');
const NODE = join(REPO_ROOT, 'node_modules', '.bin', 'node');
const aIsZtgate = (pairing: ImplPairing): boolean => pairing.a.name.startsWith('ztgate');
const totalDrops = (output: string): number => Object.values(dropsByReason(latestDropCounts(output))).reduce((sum, n) => sum + n, 0);

/** Captures a few real transport datagrams sent to `side` (for replaying), length-prefixed. */
async function captureTransport(side: Side, peer: Side): Promise<string> {
  const pcap = await side.ns.lab.tempFile('capture.pcap', '');
  const tcpdump = side.ns.lab.spawn(side.ns, 'tcpdump', ['-i', side.underlay.dev, '-w', pcap, '-c', '10', '-U',
    'udp', 'dst', 'port', String(side.listenPort)]);
  await tcpdump.waitForOutput(/listening on/, 5_000);
  await ping(peer.ns, side.tunnelV4, { count: 12, intervalS: 0.05 });
  await Promise.race([tcpdump.exited, new Promise((resolve) => setTimeout(resolve, 3_000))]);
  await tcpdump.stop();
  const data = await readFile(pcap);
  const chunks: Buffer[] = [];
  // pcap: 24-byte file header, then per record a 16-byte header (captured length at 8) and the frame:
  // Ethernet (14 bytes), IPv4 (IHL × 4), UDP (8), payload.
  for (let at = 24; at + 16 <= data.length; ) {
    const length = data.readUInt32LE(at + 8);
    const frame = data.subarray(at + 16, at + 16 + length);
    at += 16 + length;
    if (frame.length < 14 + 20 + 8 || frame.readUInt16BE(12) !== 0x0800) continue;
    const payload = frame.subarray(14 + (frame[14]! & 0x0f) * 4 + 8);
    if (payload[0] !== 4) continue;
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16BE(payload.length);
    chunks.push(prefix, payload);
  }
  assert.ok(chunks.length > 0, 'no transport datagrams captured to replay');
  const file = await side.ns.lab.tempFile('replay.bin', '');
  await writeFile(file, Buffer.concat(chunks));
  return file;
}

labTest(`${FLOOD_COUNT} bad datagrams at the listen port are dropped and counted while a ping keeps answering`,
  150_000, async (lab, impls) => {
    const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
    const replayFile = await captureTransport(a, b);
    const dropsBefore = totalDrops(a.daemon.process.output());
    const kernelBefore = await kernelUdpDrops(a.ns);

    const target = hostOf(a.underlay.addresses[0] ?? '');
    const flood = b.ns.exec(NODE, [join(REPO_ROOT, 'test', 'lab', 'flood-sender.ts'), target, String(a.listenPort),
      String(FLOOD_COUNT), '20261126', replayFile], { timeoutMs: 90_000 });
    const during = await ping(b.ns, a.tunnelV4, { count: 30, intervalS: 0.1, replyTimeoutS: 2 });
    const sent = JSON.parse((await flood).stdout) as Record<string, number>;
    const totalSent = Object.values(sent).reduce((sum, n) => sum + n, 0);
    assert.equal(totalSent, FLOOD_COUNT);

    assert.ok(a.daemon.process.running, `ztgate exited during the flood:\n${a.daemon.process.output().slice(-2000)}`);
    assert.ok(during.received >= during.transmitted * 0.9, `ping during the flood: ${during.received}/${during.transmitted}`);
    const after = await ping(b.ns, a.tunnelV4, { count: 5 });
    assert.equal(after.received, after.transmitted, 'ping after the flood');

    // Every bad datagram is accounted for: counted by ztgate, or by the kernel when the socket buffer
    // overflowed. Threads report every 2 s, so wait for the final figures.
    let accounted = 0;
    for (let attempt = 0; attempt < 20 && accounted < FLOOD_COUNT; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      accounted = totalDrops(a.daemon.process.output()) - dropsBefore + (await kernelUdpDrops(a.ns)) - kernelBefore;
    }
    const byThread = latestDropCounts(a.daemon.process.output());
    assert.ok(accounted >= FLOOD_COUNT, `only ${accounted} of ${FLOOD_COUNT} bad datagrams accounted for: ${JSON.stringify(byThread)}`);
    const byReason = dropsByReason(byThread);
    for (const reason of ['notWireGuard', 'badMac1', 'unknownIndex', 'replayed']) {
      assert.ok((byReason[reason] ?? 0) > 0, `no '${reason}' drops counted: ${JSON.stringify(byThread)}`);
    }
  }, { when: aIsZtgate });

/** Sends one raw UAPI request and returns the reply text. */
function uapiRequest(ifname: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(uapiSocketPath(ifname));
    let reply = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      reply += chunk;
      if (reply.endsWith('\n\n')) socket.end();
    });
    socket.on('end', () => resolve(reply));
    socket.on('error', reject);
    socket.setTimeout(5_000, () => socket.destroy(new Error('uapi: no reply within 5 s')));
    socket.write(request);
  });
}

labTest('a malformed UAPI request gets a non-zero errno and changes nothing', 40_000, async (lab, impls) => {
  const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
  const before = await wg(a.ns, ['showconf', a.ifname]);
  const bad = [
    'set=1\nlisten_port=70000\n\n',
    'set=1\nlisten_port=51999\nprivate_key=zz\n\n',
    `set=1\nreplace_peers=true\npublic_key=${'ab'.repeat(32)}\nallowed_ip=10.0.0.0/33\n\n`,
    'set=1\nthis is not a key value line\n\n',
    'set=1\nfwmark=1\nunknown_key=1\n\n',
  ];
  for (const request of bad) {
    const reply = await uapiRequest(a.ifname, request);
    const errno = Number(/errno=(-?\d+)/.exec(reply)?.[1]);
    assert.ok(Number.isInteger(errno) && errno !== 0, `${JSON.stringify(request)} → ${JSON.stringify(reply)}`);
  }
  assert.equal(await wg(a.ns, ['showconf', a.ifname]), before, 'configuration changed by rejected requests');
  assert.ok(a.daemon.process.running);
  const stillWorks = await ping(a.ns, b.tunnelV4, { count: 2 });
  assert.equal(stillWorks.received, stillWorks.transmitted, 'the tunnel still works');
}, { when: aIsZtgate });
