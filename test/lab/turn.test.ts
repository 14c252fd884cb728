// The TurnClient against Debian's coturn: allocate, a permission and a Send/Data-indication
// exchange, a channel and ChannelData both ways with a peer in another namespace, deallocate.
//
// Sockets live in namespaces, and Node cannot enter one, so this file doubles as the two programs
// that run there: with ZTGATE_TURN_LAB_ROLE=client it drives the TurnClient over node:dgram and
// prints one JSON summary; with =peer it echoes every datagram back prefixed with "echo:" and logs
// what it got as JSON lines. Without the variable it is the test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { transportAddress, formatTransportAddress } from '../../src/ice/address.ts';
import { TurnClient } from '../../src/ice/turn.ts';
import type { TurnEvent } from '../../src/ice/turn.ts';
import { startCoturn } from './coturn.ts';
import { requireRoot, waitFor, withLab } from './lab.ts';

const ROLE = process.env.ZTGATE_TURN_LAB_ROLE;
const TURN_ADDRESS = '198.18.80.1';
const PEER_ADDRESS = '198.18.81.2';
const PEER_PORT = 40_000;
const USER = { username: 'bob', password: 'relay-me' };
const RELAY_PORTS = { min: 49_400, max: 49_420 };
const CHANNEL_MESSAGES = 5;
const STEP_TIMEOUT_MS = 5000;

type ClientSummary = {
  readonly relayed: string;
  readonly mapped: string | null;
  /** Replies that came back as Data indications (first byte a STUN type) before the channel. */
  readonly indicationReplies: readonly string[];
  readonly indicationWireBytes: readonly number[];
  /** Replies that came back as ChannelData (first byte 64–79) after it. */
  readonly channelReplies: readonly string[];
  readonly channelWireBytes: readonly number[];
  readonly sentChannelFirstBytes: readonly number[];
  readonly deallocated: boolean;
  readonly drops: Record<string, number>;
};

async function runClient(): Promise<void> {
  const server = transportAddress(TURN_ADDRESS, 3478);
  const peer = transportAddress(PEER_ADDRESS, PEER_PORT);
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, resolve));
  const client = new TurnClient({ server, credentials: USER });
  const events: TurnEvent[] = [];
  const wire: { first: number; text: string }[] = [];
  let timer: NodeJS.Timeout | null = null;
  const pump = (): void => {
    const now = performance.now();
    client.handleTimeout(now);
    for (let t = client.pollTransmit(); t !== null; t = client.pollTransmit()) socket.send(t.bytes, t.to.port, t.to.address);
    for (let e = client.pollEvent(); e !== null; e = client.pollEvent()) events.push(e);
    if (timer !== null) clearTimeout(timer);
    const next = client.pollTimeout();
    timer = next === null ? null : setTimeout(pump, Math.max(0, next - now));
  };
  socket.on('message', (bytes, remote) => {
    const from = transportAddress(remote.address, remote.port);
    const relayed = client.decapsulate(bytes);
    if (relayed !== null) wire.push({ first: bytes[0] ?? -1, text: Buffer.from(relayed.payload).toString() });
    else client.handleInput(bytes, from, performance.now());
    pump();
  });
  const waitEvent = async <K extends TurnEvent['kind']>(kind: K): Promise<Extract<TurnEvent, { kind: K }>> => {
    const found = await waitFor(`TURN event ${kind}`, STEP_TIMEOUT_MS, () => {
      const index = events.findIndex((event) => event.kind === kind || event.kind === 'allocationFailed');
      if (index < 0) return undefined;
      const [event] = events.splice(index, 1);
      return event;
    }, 10);
    if (found?.kind !== kind) throw new Error(`expected ${kind}, got ${JSON.stringify(found)}`);
    return found as Extract<TurnEvent, { kind: K }>;
  };
  const send = (text: string): number => {
    const bytes = client.encapsulate(peer, Buffer.from(text));
    if (bytes === null) throw new Error(`no way to send to the peer yet (${text})`);
    socket.send(bytes, server.port, server.address);
    return bytes[0] ?? -1;
  };
  const waitReplies = (count: number): Promise<true> =>
    waitFor(`${count} relayed replies`, STEP_TIMEOUT_MS, () => (wire.length >= count ? true : undefined), 10);

  client.allocate(performance.now());
  pump();
  const allocated = await waitEvent('allocated');

  client.createPermission(peer, performance.now());
  pump();
  await waitEvent('permissionCreated');
  send('via-send-indication');
  await waitReplies(1);
  const indication = wire.splice(0);

  client.bindChannel(peer, performance.now());
  pump();
  await waitEvent('channelBound');
  const sentFirstBytes: number[] = [];
  for (let i = 0; i < CHANNEL_MESSAGES; i++) sentFirstBytes.push(send(`via-channel-${i}`));
  await waitReplies(CHANNEL_MESSAGES);
  const channel = wire.splice(0);

  client.close(performance.now());
  pump();
  const deallocated = await waitEvent('deallocated');
  if (timer !== null) clearTimeout(timer);
  socket.close();
  const summary: ClientSummary = {
    relayed: formatTransportAddress(allocated.relayedAddress),
    mapped: allocated.mappedAddress === null ? null : formatTransportAddress(allocated.mappedAddress),
    indicationReplies: indication.map((entry) => entry.text),
    indicationWireBytes: indication.map((entry) => entry.first),
    channelReplies: channel.map((entry) => entry.text).sort(),
    channelWireBytes: channel.map((entry) => entry.first),
    sentChannelFirstBytes: sentFirstBytes,
    deallocated: deallocated.confirmed,
    drops: { ...client.drops },
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

function runPeer(): void {
  const socket = createSocket('udp4');
  socket.on('message', (bytes, remote) => {
    process.stdout.write(`${JSON.stringify({ from: `${remote.address}:${remote.port}`, text: bytes.toString() })}\n`);
    socket.send(Buffer.concat([Buffer.from('echo:'), bytes]), remote.port, remote.address);
  });
  socket.bind(PEER_PORT, PEER_ADDRESS);
}

if (ROLE === 'client') {
  await runClient();
} else if (ROLE === 'peer') {
  runPeer();
} else {
  await requireRoot();

  test('TURN through coturn: allocate, Send/Data indications, ChannelData both ways, deallocate', { timeout: 30_000 }, () =>
    withLab(async (lab) => {
      const [clientNs, relayNs, peerNs] = await Promise.all([lab.namespace('cli'), lab.namespace('rel'), lab.namespace('peer')]);
      await lab.veth(clientNs, relayNs, { labelA: 'cv', labelB: 'rc', addressesA: ['198.18.80.2/24'], addressesB: [`${TURN_ADDRESS}/24`] });
      await lab.veth(peerNs, relayNs, { labelA: 'pv', labelB: 'rp', addressesA: [`${PEER_ADDRESS}/24`], addressesB: ['198.18.81.1/24'] });
      // The relayed address is on the client-facing side; the peer reaches it through the relay's namespace.
      await peerNs.ip(['route', 'add', 'default', 'via', '198.18.81.1']);
      await startCoturn(relayNs, { listeningIps: [TURN_ADDRESS], users: [USER], minRelayPort: RELAY_PORTS.min, maxRelayPort: RELAY_PORTS.max });
      const env = (role: string): NodeJS.ProcessEnv => ({ ...process.env, ZTGATE_TURN_LAB_ROLE: role });
      const peerProcess = lab.spawn(peerNs, process.execPath, [import.meta.filename], env('peer'));
      await waitFor('the peer to listen', 5000, async () =>
        (await peerNs.exec('ss', ['-Hlun'])).stdout.includes(`${PEER_ADDRESS}:${PEER_PORT}`) ? true : undefined);

      const result = await clientNs.exec(process.execPath, [import.meta.filename], { env: env('client'), timeoutMs: 20_000 });
      const summary = JSON.parse(result.stdout) as ClientSummary;
      const relayedPort = Number(summary.relayed.split(':')[1]);
      assert.ok(summary.relayed.startsWith(`${TURN_ADDRESS}:`) && relayedPort >= RELAY_PORTS.min && relayedPort <= RELAY_PORTS.max,
        `relayed address ${summary.relayed}`);
      assert.equal(summary.mapped?.split(':')[0], '198.18.80.2', 'no NAT: coturn sees the client as it is');

      assert.deepEqual(summary.indicationReplies, ['echo:via-send-indication']);
      assert.ok(summary.indicationWireBytes.every((byte) => byte <= 3), 'before the channel, replies come as Data indications');
      assert.deepEqual(summary.channelReplies, Array.from({ length: CHANNEL_MESSAGES }, (_, i) => `echo:via-channel-${i}`).sort());
      assert.ok(summary.channelWireBytes.every((byte) => byte >= 64 && byte <= 79), `ChannelData from the server: ${summary.channelWireBytes}`);
      assert.ok(summary.sentChannelFirstBytes.every((byte) => byte >= 64 && byte <= 79), 'ChannelData to the server');
      assert.equal(summary.deallocated, true, 'coturn confirmed the deallocation');
      assert.equal(Object.values(summary.drops).reduce((a, b) => a + b, 0), 0, `drops ${JSON.stringify(summary.drops)}`);

      // What the peer saw: everything from the relayed address, never from the client itself.
      const seen = peerProcess.output().trim().split('\n').map((line) => JSON.parse(line) as { from: string; text: string });
      assert.equal(seen.length, 1 + CHANNEL_MESSAGES);
      assert.ok(seen.every((entry) => entry.from === summary.relayed), JSON.stringify(seen));

      // Deallocated: coturn closes the relay socket (it would otherwise keep it for the 600 s lifetime).
      await waitFor('coturn to close the relay socket', 5000, async () =>
        (await relayNs.exec('ss', ['-Hlun'])).stdout.includes(`:${relayedPort} `) ? undefined : true);
    }));
}
