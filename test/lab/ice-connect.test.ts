// ICE on the WireGuard socket, end to end: a client and a gateway each behind its own MASQUERADE
// NAT, coturn in a "public" namespace as STUN and TURN server, `ztgate connect` on both sides with
// the test relaying credentials and candidates between them (the portal's job later). With the
// NATs able to reach each other the path is direct; with forwarding between them dropped, only the
// relay works. Ping and iperf3 go through the tunnel either way, and the time to connected is printed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCoturn, type Coturn } from './coturn.ts';
import {
  dropsByReason, generateKeyPair, iperf3, kernelUdpDrops, Lab, latestDropCounts, makeNat, ping, requireRoot, waitFor, wgShowDump,
} from './lab.ts';
import type { LabProcess, Netns } from './lab.ts';

await requireRoot();

const ZTGATE = join(resolve(import.meta.dirname, '..', '..'), 'bin', 'ztgate');
const TURN = '198.18.80.1';
const TURN_PORT = 3478;
const USER = { username: 'ztgate', password: 'lab-relay-password' };
const TUNNEL = { client: '10.99.0.1', gateway: '10.99.0.2' };
const CONNECT_TIMEOUT_MS = 30_000;

let lab: Lab;
let publicSide: Netns;
let client: Netns;
let gateway: Netns;
let coturn: Coturn;
let clientNat: Netns;

/**
 *   client 198.18.81.2 ─ natC (MASQUERADE → 198.18.80.254) ─┐
 *                                                             public: coturn on 198.18.80.1, routes
 *   gateway 198.18.91.2 ─ natG (MASQUERADE → 198.18.90.254) ─┘   between the two NATs' outsides
 */
before(async () => {
  lab = new Lab();
  const [pub, natC, natG, cli, gw] = await Promise.all(['pub', 'natc', 'natg', 'cli', 'gw'].map((label) => lab.namespace(label)));
  publicSide = pub!;
  clientNat = natC!;
  client = cli!;
  gateway = gw!;
  const toC = await lab.veth(publicSide, natC!, { labelA: 'pc', labelB: 'co', addressesA: [`${TURN}/24`], addressesB: ['198.18.80.254/24'] });
  const toG = await lab.veth(publicSide, natG!, { labelA: 'pg', labelB: 'go', addressesA: ['198.18.90.1/24'], addressesB: ['198.18.90.254/24'] });
  await lab.veth(natC!, client, { labelA: 'ci', labelB: 'cv', addressesA: ['198.18.81.254/24'], addressesB: ['198.18.81.2/24'] });
  await lab.veth(natG!, gateway, { labelA: 'gi', labelB: 'gv', addressesA: ['198.18.91.254/24'], addressesB: ['198.18.91.2/24'] });
  await publicSide.sysctl('net.ipv4.ip_forward', 1);
  // Like any host on the internet the public side has a default route, here towards a neighbour
  // that never answers, so datagrams vanish. Without one, coturn's relaying of a check to a peer's
  // private host candidate fails with ENETUNREACH, and coturn 4.6.1 then stops sending from that
  // allocation for good (it marks the relay socket to be closed on any send error).
  await publicSide.ip(['link', 'add', 'void0', 'type', 'veth', 'peer', 'name', 'void1']);
  await publicSide.ip(['link', 'set', 'void0', 'up']);
  await publicSide.ip(['addr', 'add', '198.18.99.1/30', 'dev', 'void0']);
  await publicSide.ip(['route', 'add', 'default', 'via', '198.18.99.2']);
  await natC!.ip(['route', 'add', 'default', 'via', TURN]);
  await natG!.ip(['route', 'add', 'default', 'via', '198.18.90.1']);
  await client.ip(['route', 'add', 'default', 'via', '198.18.81.254']);
  await gateway.ip(['route', 'add', 'default', 'via', '198.18.91.254']);
  for (const [nat, outsideDev] of [[natC!, toC.b.dev], [natG!, toG.b.dev]] as const) {
    await makeNat(nat, { outsideDev });
    // Like a home router, drop unsolicited inbound datagrams. Dropped in INPUT, they never get a
    // conntrack entry; otherwise the first check to arrive before the NAT's own outbound one would
    // leave an entry that takes the mapping's port, and hole punching between two Linux NATs fails.
    await nat.exec('iptables', ['-A', 'INPUT', '-i', outsideDev, '-p', 'udp', '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP']);
  }
  coturn = await startCoturn(publicSide, { listeningIps: [TURN], port: TURN_PORT, users: [USER], minRelayPort: 49_400, maxRelayPort: 49_440 });
});

after(() => lab.close());

type Message = { readonly type: string; readonly [key: string]: unknown };

/** One `ztgate connect` process and what it said on stdout. */
class Node {
  readonly process: LabProcess;
  readonly messages: Message[] = [];
  readonly ifname: string;
  readonly ns: Netns;

  constructor(ns: Netns, ifname: string, args: readonly string[]) {
    this.ns = ns;
    this.ifname = ifname;
    this.process = lab.spawn(ns, ZTGATE, ['connect', ifname, ...args], process.env, { stdin: true });
    this.process.onStdoutLine((line) => {
      try {
        this.messages.push(JSON.parse(line) as Message);
      } catch {
        // Not a signalling line.
      }
    });
  }

  /** Forwards this node's credentials and candidates to `other`, now and as they come. */
  signalTo(other: Node): void {
    let forwarded = 0;
    const pump = (): void => {
      for (; forwarded < this.messages.length; forwarded++) {
        const message = this.messages[forwarded]!;
        if (message.type === 'credentials' || message.type === 'candidate') other.process.write(`${JSON.stringify(message)}\n`);
      }
    };
    const timer = setInterval(pump, 20);
    lab.defer('signalling', async () => clearInterval(timer), () => clearInterval(timer));
  }

  async waitFor(type: string, timeoutMs = CONNECT_TIMEOUT_MS): Promise<Message> {
    try {
      return await waitFor(`'${type}' from ${this.ifname}`, timeoutMs, () => {
        if (!this.process.running) throw new Error(`ztgate connect exited:\n${this.process.output()}`);
        return this.messages.find((m) => m.type === type || m.type === 'failed');
      }, 20);
    } catch (error) {
      throw new Error(`${(error as Error).message}\n${this.process.output().slice(-3000)}`, { cause: error });
    }
  }
}

async function connectPair(label: string): Promise<{ client: Node; gateway: Node; clientPath: string; gatewayPath: string }> {
  const keys = { client: await generateKeyPair(), gateway: await generateKeyPair() };
  const keyFile = async (name: string, key: string): Promise<string> => lab.tempFile(`${label}-${name}.key`, `${key}\n`);
  const turnArgs = ['--stun', `${TURN}:${TURN_PORT}`, '--turn', `${TURN}:${TURN_PORT}`, '--turn-username', USER.username, '--turn-password', USER.password];
  const started = Date.now();
  const clientNode = new Node(client, lab.name(`${label}c`), ['--private-key', await keyFile('client', keys.client.privateKey),
    '--peer', keys.gateway.publicKey, '--allowed-ips', `${TUNNEL.gateway}/32`, '--role', 'controlling', '--workers', '1', ...turnArgs]);
  const gatewayNode = new Node(gateway, lab.name(`${label}g`), ['--private-key', await keyFile('gateway', keys.gateway.privateKey),
    '--peer', keys.client.publicKey, '--allowed-ips', `${TUNNEL.client}/32`, '--role', 'controlled', '--workers', '1', ...turnArgs]);
  for (const [node, address] of [[clientNode, TUNNEL.client], [gatewayNode, TUNNEL.gateway]] as const) {
    await node.waitFor('credentials');
    await node.ns.ip(['addr', 'add', `${address}/24`, 'dev', node.ifname]);
    await node.ns.ip(['link', 'set', node.ifname, 'up']);
  }
  clientNode.signalTo(gatewayNode);
  gatewayNode.signalTo(clientNode);
  const [clientUp, gatewayUp] = await Promise.all([clientNode.waitFor('connected'), gatewayNode.waitFor('connected')]);
  const outputs = (): string => `client:\n${clientNode.process.output().slice(-4000)}\ngateway:\n${gatewayNode.process.output().slice(-4000)}`;
  if (process.env['ZTGATE_LAB_DUMP'] !== undefined) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(`${process.env['ZTGATE_LAB_DUMP']}-client.log`, clientNode.process.output());
    writeFileSync(`${process.env['ZTGATE_LAB_DUMP']}-gateway.log`, gatewayNode.process.output());
    writeFileSync(`${process.env['ZTGATE_LAB_DUMP']}-coturn.log`, coturn.process.output());
  }
  assert.equal(clientUp.type, 'connected', `${JSON.stringify(clientUp)}\n${outputs()}`);
  assert.equal(gatewayUp.type, 'connected', `${JSON.stringify(gatewayUp)}\n${outputs()}`);
  console.log(`# ${label}: connected in ${String(clientUp.elapsed_ms)} ms (client), ${String(gatewayUp.elapsed_ms)} ms (gateway), ` +
    `${Date.now() - started} ms from start; client path ${String(clientUp.path)}; gateway path ${String(gatewayUp.path)}`);
  return { client: clientNode, gateway: gatewayNode, clientPath: String(clientUp.path), gatewayPath: String(gatewayUp.path) };
}

async function assertTraffic(label: string, pair: { client: Node; gateway: Node }): Promise<void> {
  const result = await ping(client, TUNNEL.gateway, { count: 10, intervalS: 0.1, replyTimeoutS: 2 });
  assert.equal(result.received, result.transmitted, `${label}: ping ${result.received}/${result.transmitted}`);
  const tcp = await iperf3({ ns: gateway, address: TUNNEL.gateway }, client, { protocol: 'tcp', durationS: 3 });
  assert.ok(tcp.gbps > 0, `${label}: iperf3 moved nothing`);
  const back = await iperf3({ ns: gateway, address: TUNNEL.gateway }, client, { protocol: 'tcp', durationS: 3, reverse: true });
  console.log(`# ${label}: ping rtt ${result.rttAvgMs} ms; iperf3 TCP client→gateway ${tcp.gbps.toFixed(3)} Gbit/s, gateway→client ${back.gbps.toFixed(3)} Gbit/s`);
  const dump = await wgShowDump(pair.client.ns, pair.client.ifname);
  assert.ok((dump.peers[0]?.latestHandshake ?? 0) > 0, `${label}: no WireGuard handshake in wg show`);
}

async function stop(pair: { client: Node; gateway: Node }): Promise<void> {
  await Promise.all([pair.client.process.stop(), pair.gateway.process.stop()]);
}

test('NATs that can reach each other: a direct path through both NATs carries ping and iperf3', { timeout: 90_000 }, async () => {
  await publicSide.exec('iptables', ['-F', 'FORWARD']);
  const pair = await connectPair('direct');
  try {
    assert.match(pair.clientPath, /\(direct\)/);
    assert.match(pair.gatewayPath, /\(direct\)/);
    assert.doesNotMatch(`${pair.clientPath} ${pair.gatewayPath}`, /relay /, 'a relayed candidate was chosen');
    await assertTraffic('direct', pair);
  } finally {
    await stop(pair);
  }
});

test('direct UDP between the NATs dropped: the relayed path through coturn carries ping and iperf3', { timeout: 90_000 }, async () => {
  // Only traffic to coturn itself (INPUT) gets through the public namespace.
  await publicSide.exec('iptables', ['-F', 'FORWARD']);
  await publicSide.exec('iptables', ['-A', 'FORWARD', '-j', 'DROP']);
  if (process.env['ZTGATE_LAB_DUMP'] !== undefined) {
    lab.spawn(publicSide, 'tcpdump', ['-n', '-i', 'any', '-w', `${process.env['ZTGATE_LAB_DUMP']}-pub.pcap`, 'udp']);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const pair = await connectPair('relayed');
  try {
    assert.match(`${pair.clientPath} ${pair.gatewayPath}`, /relay/, 'no relayed candidate on the chosen path');
    await assertTraffic('relayed', pair);
    const dump = await wgShowDump(pair.client.ns, pair.client.ifname);
    const endpoint = dump.peers[0]?.endpoint ?? '';
    const gatewayDump = await wgShowDump(pair.gateway.ns, pair.gateway.ifname);
    assert.ok(endpoint.startsWith(`${TURN}:`) || (gatewayDump.peers[0]?.endpoint ?? '').startsWith(`${TURN}:`),
      `neither side sends to the relay: client → ${endpoint}, gateway → ${gatewayDump.peers[0]?.endpoint}`);
  } finally {
    await stop(pair);
    await publicSide.exec('iptables', ['-F', 'FORWARD']);
  }
});

const FLOOD_COUNT = 100_000;
const NODE = join(resolve(import.meta.dirname, '..', '..'), 'node_modules', '.bin', 'node');

test(`${FLOOD_COUNT} malformed and forged STUN/TURN datagrams are dropped and counted while the connection stays up`, { timeout: 150_000 }, async () => {
  await publicSide.exec('iptables', ['-F', 'FORWARD']);
  const pair = await connectPair('flood');
  try {
    const host = pair.client.messages.find((m) => m.type === 'candidate' && String(m.candidate).includes(' typ host'));
    const port = Number(String(host?.candidate).split(' ')[5]);
    assert.ok(port > 0, 'the client signalled a host candidate');
    const sumDrops = (): number => Object.values(dropsByReason(latestDropCounts(pair.client.process.output()))).reduce((a, n) => a + n, 0);
    const before = sumDrops() + await kernelUdpDrops(client);
    // From inside the client's NAT, straight at the client's socket: every datagram reaches it.
    const flood = clientNat.exec(NODE, [join(import.meta.dirname, 'flood-sender.ts'), '198.18.81.2', String(port), String(FLOOD_COUNT), '4242'],
      { timeoutMs: 90_000, env: { ...process.env, FLOOD_PROFILE: 'stun' } });
    const during = await ping(client, TUNNEL.gateway, { count: 30, intervalS: 0.1, replyTimeoutS: 2 });
    const sent = JSON.parse((await flood).stdout) as Record<string, number>;
    assert.equal(Object.values(sent).reduce((a, n) => a + n, 0), FLOOD_COUNT);
    assert.ok(during.received >= during.transmitted * 0.9, `ping during the flood: ${during.received}/${during.transmitted}`);
    const after = await ping(client, TUNNEL.gateway, { count: 5 });
    assert.equal(after.received, after.transmitted, 'ping after the flood');
    assert.ok(!pair.client.messages.some((m) => m.type === 'failed'), 'the connection failed during the flood');

    let accounted = 0;
    for (let attempt = 0; attempt < 20 && accounted < FLOOD_COUNT; attempt++) {
      await sleep(500);
      accounted = sumDrops() + await kernelUdpDrops(client) - before;
    }
    const drops = dropsByReason(latestDropCounts(pair.client.process.output()));
    assert.ok(accounted >= FLOOD_COUNT, `only ${accounted} of ${FLOOD_COUNT} accounted for: ${JSON.stringify(drops)}`);
    // Forged checks were refused, never answered with a signed success.
    assert.ok((drops['ice.refusedUnauthenticated'] ?? 0) + (drops['ice.refusedBadRequest'] ?? 0) > 0, JSON.stringify(drops));
    console.log(`# flood: ${JSON.stringify(drops)}`);
  } finally {
    await stop(pair);
  }
});
