// A simulated pair (or more) of WireGuard nodes for sans-IO tests: each node is a control-side
// WireGuardEngine plus one worker Datapath, glued by the same command/notice handling the real
// threads use, over a simulated network with a fake clock, loss and delay.
import { WireGuardEngine, type EngineEvent } from '../../src/wireguard/engine.ts';
import { Datapath, DROPPED, STAGED } from '../../src/workers/datapath.ts';
import { applyWorkerCommand } from '../../src/workers/commands.ts';
import { aeadBackend } from '../../src/wireguard/aead.ts';
import { generatePrivateKey, publicKeyOf, zeroPresharedKey, type PrivateKey, type PublicKey } from '../../src/wireguard/keys.ts';
import { MESSAGE_TRANSPORT } from '../../src/wireguard/constants.ts';
import { messageType } from '../../src/wireguard/messages.ts';
import { endpointsEqual, type Endpoint } from '../../src/wireguard/endpoint.ts';
import { PEER_RECORD_F64S, PEER_RX_ANY_PACKETS_F64, PEER_RX_DATA_PACKETS_F64, PEER_TX_ANY_PACKETS_F64, PEER_TX_DATA_PACKETS_F64, SLOT_PLAINTEXT_OFFSET } from '../../src/ring/layout.ts';
import { parseCidr } from '../../src/wireguard/allowedips.ts';
import { seededRandom } from './random.ts';

export { seededRandom };

const PAYLOAD_SIZE = 65_536 + 128;
/** The control thread's counter observation tick in the real device. */
export const OBSERVE_INTERVAL_MS = 100;


export function v4Endpoint(last: number, port: number): Endpoint {
  return { family: 4, address: new Uint8Array([192, 0, 2, last]), port, localAddress: null, localIfindex: 0 };
}

/** A minimal IPv4 packet (header + payload bytes) from `src` to `dst` (dotted quads). */
export function ipv4Packet(src: string, dst: string, payloadLength: number, fill = 0xab): Uint8Array {
  const packet = new Uint8Array(20 + payloadLength).fill(fill);
  packet[0] = 0x45;
  packet[1] = 0;
  packet[2] = (20 + payloadLength) >> 8;
  packet[3] = (20 + payloadLength) & 0xff;
  packet.set(src.split('.').map(Number), 12);
  packet.set(dst.split('.').map(Number), 16);
  return packet;
}

interface Datagram {
  readonly deliverAt: number;
  readonly from: Endpoint;
  readonly to: Endpoint;
  readonly bytes: Uint8Array;
}

export class SimNetwork {
  now = 1_000_000;
  lossRate = 0;
  delayMs = 5;
  readonly nodes: SimNode[] = [];
  private inFlight: Datagram[] = [];
  /** Datagrams matching this are dropped (tests cut paths with it). */
  blackhole: ((d: { from: Endpoint; to: Endpoint; bytes: Uint8Array }) => boolean) | null = null;
  readonly random: () => number;
  private nextObserveAt = 0;

  constructor(seed = 1) {
    this.random = seededRandom(seed);
  }

  send(from: Endpoint, to: Endpoint, bytes: Uint8Array): void {
    if (this.random() < this.lossRate) return;
    if (this.blackhole?.({ from, to, bytes })) return;
    this.inFlight.push({ deliverAt: this.now + this.delayMs, from, to, bytes: bytes.slice() });
  }

  /** Advances the clock to `until`, delivering datagrams and firing timers in time order. */
  run(until: number): void {
    while (this.now <= until) {
      const due = this.inFlight.filter((d) => d.deliverAt <= this.now);
      this.inFlight = this.inFlight.filter((d) => d.deliverAt > this.now);
      for (const d of due) {
        const node = this.nodes.find((n) => endpointsEqual(n.address, d.to));
        node?.receive(d.bytes, d.from);
      }
      if (this.now >= this.nextObserveAt) {
        for (const node of this.nodes) node.observe();
        this.nextObserveAt = this.now + OBSERVE_INTERVAL_MS;
      }
      for (const node of this.nodes) node.timeouts();
      this.now += 1;
    }
  }
}

export class SimNode {
  readonly privateKey: PrivateKey;
  readonly publicKey: PublicKey;
  readonly engine: WireGuardEngine;
  readonly datapath: Datapath;
  readonly stats = new Float64Array(PEER_RECORD_F64S * 16);
  /** IP packets delivered to this node's TUN device. */
  readonly delivered: Uint8Array[] = [];
  readonly events: EngineEvent[] = [];
  handshakesCompleted = 0;
  address: Endpoint;
  /** The shell's verdict that handshakes are queueing up (cookie mode, whitepaper §5.3). */
  underLoad = false;
  private readonly net: SimNetwork;
  private readonly stagedPackets = new Map<number, { peer: number; packet: Uint8Array }>();
  private nextHandle = 1;
  private readonly scratch = new Uint8Array(PAYLOAD_SIZE);
  private readonly peerOut = new Int32Array(1);

  constructor(net: SimNetwork, address: Endpoint, aead = aeadBackend()) {
    this.net = net;
    this.address = address;
    this.privateKey = generatePrivateKey();
    this.publicKey = publicKeyOf(this.privateKey);
    this.engine = new WireGuardEngine({ shardCount: 1, random: net.random, wallClock: () => net.now + 1_700_000_000_000 });
    this.engine.setPrivateKey(this.privateKey);
    this.datapath = new Datapath(aead, this.stats, 1420, {
      requestHandshake: (peer) => this.engine.requestHandshake(peer, net.now),
      endpointChanged: (peer, endpoint) => this.engine.setEndpoint(peer, endpoint),
      releaseStaged: (handle) => this.stagedPackets.delete(handle),
      sessionConfirmed: (peer) => {
        this.engine.sessionConfirmed(peer);
        this.flushStaged(peer, false);
      },
    });
    net.nodes.push(this);
  }

  addPeer(id: number, other: SimNode, allowed: string[], endpoint: Endpoint | null): void {
    this.engine.addPeer(id, 0, other.publicKey, zeroPresharedKey());
    this.datapath.addPeer(id);
    for (const cidr of allowed) {
      const { bytes, prefixLength } = parseCidr(cidr);
      this.datapath.routes.insert(bytes, prefixLength, id);
    }
    if (endpoint !== null) {
      this.engine.setEndpoint(id, endpoint);
      this.datapath.setEndpoint(id, endpoint);
    }
  }

  /** An IP packet read from this node's TUN device. */
  sendPacket(packet: Uint8Array): number {
    const dst = packet.subarray(16, 20);
    const peer = this.datapath.routes.lookupV4(dst, 0);
    if (peer < 0) return DROPPED;
    return this.encryptAndSend(peer, packet, this.nextHandle++);
  }

  receive(bytes: Uint8Array, from: Endpoint): void {
    if (messageType(bytes, bytes.length) === MESSAGE_TRANSPORT) {
      const payload = this.scratch;
      payload.set(bytes, 0);
      const source = { matches: (e: Endpoint | null) => endpointsEqual(e, from), toEndpoint: () => from };
      const n = this.datapath.decrypt(payload, bytes.length, source, this.net.now, this.peerOut);
      if (n > 0) this.delivered.push(payload.slice(SLOT_PLAINTEXT_OFFSET, SLOT_PLAINTEXT_OFFSET + n));
    } else {
      this.engine.handleHandshakeDatagram(bytes, bytes.length, from, this.net.now, this.underLoad);
    }
    this.pump();
  }

  observe(): void {
    for (let id = 0; id < 16; id++) {
      const r = id * PEER_RECORD_F64S;
      this.engine.observeCounters(
        id,
        {
          txData: this.stats[r + PEER_TX_DATA_PACKETS_F64]!,
          txAny: this.stats[r + PEER_TX_ANY_PACKETS_F64]!,
          rxData: this.stats[r + PEER_RX_DATA_PACKETS_F64]!,
          rxAny: this.stats[r + PEER_RX_ANY_PACKETS_F64]!,
        },
        this.net.now,
      );
    }
  }

  timeouts(): void {
    if (this.engine.pollTimeout() <= this.net.now) this.engine.handleTimeout(this.net.now);
    this.pump();
  }

  /** Moves engine output to the network and to the datapath, as the control thread does. */
  pump(): void {
    for (let t = this.engine.pollTransmit(); t !== undefined; t = this.engine.pollTransmit()) {
      this.net.send(this.address, t.to, t.bytes);
    }
    for (let e = this.engine.pollEvent(); e !== undefined; e = this.engine.pollEvent()) {
      this.events.push(e);
      if (e.kind === 'handshakeComplete') {
        this.handshakesCompleted++;
        continue;
      }
      applyWorkerCommand(this.datapath, e, {
        sendKeepalive: (peer) => this.encryptAndSend(peer, new Uint8Array(0), this.nextHandle++),
        sessionReady: (peer, isInitiator) => this.flushStaged(peer, isInitiator),
        stop: () => undefined,
      });
    }
  }

  private flushStaged(peer: number, keepaliveIfNone: boolean): void {
    const handles = this.datapath.takeStaged(peer, this.net.now);
    if (handles.length === 0 && keepaliveIfNone) this.encryptAndSend(peer, new Uint8Array(0), this.nextHandle++);
    for (const handle of handles) {
      const staged = this.stagedPackets.get(handle);
      this.stagedPackets.delete(handle);
      if (staged !== undefined) this.encryptAndSend(peer, staged.packet, handle);
    }
  }

  private encryptAndSend(peer: number, packet: Uint8Array, handle: number): number {
    const payload = this.scratch;
    payload.set(packet, SLOT_PLAINTEXT_OFFSET);
    const n = this.datapath.encrypt(peer, handle, payload, packet.length, this.net.now);
    if (n === STAGED) this.stagedPackets.set(handle, { peer, packet: packet.slice() });
    else if (n > 0) {
      const to = this.datapath.endpointOf(peer);
      if (to !== null) this.net.send(this.address, to, payload.subarray(0, n));
    }
    this.pump();
    return n;
  }
}
