// A simulated network for sans-IO ICE tests: agents on private hosts behind NATs (endpoint-
// independent mapping, or symmetric), TURN relays modelled as forwarding nodes with IP
// permissions, loss, delay, blackholes and a fake clock. Candidate lines travel as text through
// formatCandidate/parseCandidate, as a signalling channel would carry them.
import { IceAgent, type IceAgentConfig, type IceEvent, type IceRole, type IceTimings } from '../../src/ice/agent.ts';
import { addressKey, transportAddress, type TransportAddress } from '../../src/ice/address.ts';
import { formatCandidate, parseCandidate } from '../../src/ice/candidates.ts';

export type NatKind = 'endpointIndependent' | 'symmetric';

/**
 * Both kinds filter by address and port (a reply gets in only from where the inside sent to);
 * they differ in mapping: one external port per inside socket, or one per (socket, destination).
 */
export class SimNat {
  readonly publicIp: string;
  readonly kind: NatKind;
  private nextPort = 40_000;
  private readonly mappings = new Map<string, number>();
  private readonly inside = new Map<number, TransportAddress>();
  private readonly allowed = new Set<string>();

  constructor(publicIp: string, kind: NatKind) {
    this.publicIp = publicIp;
    this.kind = kind;
  }

  outbound(source: TransportAddress, destination: TransportAddress): TransportAddress {
    const key = this.kind === 'endpointIndependent' ? addressKey(source) : `${addressKey(source)}>${addressKey(destination)}`;
    let port = this.mappings.get(key);
    if (port === undefined) {
      port = this.nextPort++;
      this.mappings.set(key, port);
      this.inside.set(port, source);
    }
    this.allowed.add(`${port}<${addressKey(destination)}`);
    return transportAddress(this.publicIp, port);
  }

  inbound(from: TransportAddress, to: TransportAddress): TransportAddress | null {
    if (!this.allowed.has(`${to.port}<${addressKey(from)}`)) return null;
    return this.inside.get(to.port) ?? null;
  }
}

interface Allocation {
  readonly owner: SimPeer;
  readonly relayName: string;
  readonly permissions: Set<string>;
}

/** A TURN server reduced to what ICE sees: relayed addresses that forward both ways, with IP permissions. */
export class SimRelay {
  readonly name: string;
  readonly ip: string;
  private nextPort = 50_000;
  readonly allocations = new Map<string, Allocation>();

  constructor(name: string, ip: string) {
    this.name = name;
    this.ip = ip;
  }

  allocate(owner: SimPeer): TransportAddress {
    const relayed = transportAddress(this.ip, this.nextPort++);
    this.allocations.set(addressKey(relayed), { owner, relayName: this.name, permissions: new Set() });
    return relayed;
  }
}

export interface SimPeer {
  readonly name: string;
  readonly agent: IceAgent;
  readonly host: TransportAddress;
  readonly nat: SimNat | null;
  /** Every event the agent emitted, with the simulated time it was polled. */
  readonly events: { readonly at: number; readonly event: IceEvent }[];
}

interface Datagram {
  readonly deliverAt: number;
  readonly from: TransportAddress;
  readonly to: TransportAddress;
  readonly bytes: Uint8Array;
}

/**
 * sfc32 seeded through splitmix32: deterministic and free of the short-range correlations that
 * showed up with mulberry32 here (a run of eight "lost" draws in alternate positions).
 */
export function simRandom(seed: number): () => number {
  let s = seed >>> 0;
  const splitmix = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const next = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

const STUN_SERVER = transportAddress('192.0.2.200', 3478);

export class IceSim {
  now = 1_000_000;
  lossRate = 0;
  delayMs = 10;
  /** Wire datagrams (outside addresses) this returns true for are dropped. */
  blackhole: ((from: TransportAddress, to: TransportAddress) => boolean) | null = null;
  /** Loss decisions; the agents draw from their own stream so their randomness does not shift the losses. */
  readonly random: () => number;
  private readonly agentRandom: () => number;
  readonly peers: SimPeer[] = [];
  private readonly relays: SimRelay[] = [];
  private readonly nats: SimNat[] = [];
  private inFlight: Datagram[] = [];
  private counter = 0;

  constructor(seed = 1) {
    this.random = simRandom(seed);
    this.agentRandom = simRandom(seed ^ 0x5bd1e995);
  }

  /** Deterministic bytes from the seeded PRNG, for the agents' tie-breakers and transaction ids. */
  randomBytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = Math.floor(this.agentRandom() * 256);
    return out;
  }

  addNat(publicIp: string, kind: NatKind): SimNat {
    const nat = new SimNat(publicIp, kind);
    this.nats.push(nat);
    return nat;
  }

  addRelay(name: string, ip: string): SimRelay {
    const relay = new SimRelay(name, ip);
    this.relays.push(relay);
    return relay;
  }

  /**
   * A peer with a host candidate, a server-reflexive one when behind a NAT (as a STUN server
   * would report it) and a relayed one per relay given.
   */
  addPeer(options: {
    readonly name: string;
    readonly role: IceRole;
    readonly host: TransportAddress;
    readonly nat?: SimNat;
    readonly relays?: readonly SimRelay[];
    readonly timings?: Partial<IceTimings>;
    readonly withRemoteCredentials?: boolean;
  }): SimPeer {
    const index = ++this.counter;
    const config: IceAgentConfig = {
      role: options.role,
      local: { ufrag: `ufrag${index}`, pwd: `password${index}`.padEnd(24, 'x') },
      now: this.now,
      timings: options.timings,
      randomBytes: (n) => this.randomBytes(n),
    };
    const agent = new IceAgent(config);
    const peer: SimPeer = { name: options.name, agent, host: options.host, nat: options.nat ?? null, events: [] };
    agent.addLocalCandidate({ type: 'host', address: options.host });
    if (options.nat !== undefined) {
      agent.addLocalCandidate({ type: 'srflx', address: options.nat.outbound(options.host, STUN_SERVER), base: options.host });
    }
    for (const relay of options.relays ?? []) {
      agent.addLocalCandidate({ type: 'relay', address: relay.allocate(peer), relay: relay.name, related: options.host });
    }
    this.peers.push(peer);
    return peer;
  }

  /** Signalling: credentials and every local candidate, as candidate-attribute text. */
  exchange(a: SimPeer, b: SimPeer): void {
    a.agent.setRemoteCredentials(this.credentialsOf(b));
    b.agent.setRemoteCredentials(this.credentialsOf(a));
    this.sendCandidates(a, b);
    this.sendCandidates(b, a);
  }

  sendCandidates(from: SimPeer, to: SimPeer, filter: (line: string) => boolean = () => true): void {
    for (const candidate of from.agent.localCandidates()) {
      const line = formatCandidate(candidate);
      if (filter(line)) to.agent.addRemoteCandidate(parseCandidate(`a=${line}`));
    }
  }

  private credentialsOf(peer: SimPeer): { ufrag: string; pwd: string } {
    const index = this.peers.indexOf(peer) + 1;
    return { ufrag: peer.agent.localUfrag, pwd: `password${index}`.padEnd(24, 'x') };
  }

  /** Puts a datagram on the wire (after loss and blackholes), arriving after delayMs. */
  private wire(from: TransportAddress, to: TransportAddress, bytes: Uint8Array, extraDelay = 0): void {
    if (this.random() < this.lossRate) return;
    if (this.blackhole?.(from, to)) return;
    this.inFlight.push({ deliverAt: this.now + this.delayMs + extraDelay, from, to, bytes: bytes.slice() });
  }

  private drain(peer: SimPeer): void {
    for (let t = peer.agent.pollTransmit(); t !== undefined; t = peer.agent.pollTransmit()) {
      if (t.relay !== null) {
        // The client → relay leg (ChannelData/Send) is taken as working: the caller keeps its allocation alive.
        const allocation = this.relays.find((r) => r.name === t.relay)?.allocations.get(addressKey(t.from));
        if (allocation === undefined) throw new Error(`sim: ${peer.name} sent via unknown relay ${t.relay}`);
        allocation.permissions.add(t.to.address);
        this.wire(t.from, t.to, t.bytes, this.delayMs);
      } else {
        const source = peer.nat === null ? t.from : peer.nat.outbound(t.from, t.to);
        this.wire(source, t.to, t.bytes);
      }
    }
    for (let e = peer.agent.pollEvent(); e !== undefined; e = peer.agent.pollEvent()) peer.events.push({ at: this.now, event: e });
  }

  private deliver(d: Datagram): void {
    for (const relay of this.relays) {
      const allocation = relay.allocations.get(addressKey(d.to));
      if (allocation === undefined) continue;
      if (!allocation.permissions.has(d.from.address)) return; // no permission for that peer IP
      allocation.owner.agent.handleInput(d.bytes, d.from, { local: d.to, relay: allocation.relayName }, this.now);
      return;
    }
    for (const nat of this.nats) {
      if (nat.publicIp !== d.to.address) continue;
      const inside = nat.inbound(d.from, d.to);
      if (inside === null) return; // filtered
      const peer = this.peers.find((p) => p.nat === nat && addressKey(p.host) === addressKey(inside));
      peer?.agent.handleInput(d.bytes, d.from, { local: inside, relay: null }, this.now);
      return;
    }
    // Public hosts (no NAT) receive directly; private addresses of other sites are unroutable.
    const peer = this.peers.find((p) => p.nat === null && addressKey(p.host) === addressKey(d.to));
    peer?.agent.handleInput(d.bytes, d.from, { local: d.to, relay: null }, this.now);
  }

  /** Runs the network and the agents' timers until `until`, in time order. */
  run(until: number): void {
    for (const peer of this.peers) this.drain(peer);
    let stalls = 0;
    while (true) {
      let next = Infinity;
      for (const d of this.inFlight) next = Math.min(next, d.deliverAt);
      for (const peer of this.peers) next = Math.min(next, peer.agent.pollTimeout());
      if (next > until) break;
      if (next <= this.now) {
        if (++stalls > 10_000) throw new Error('sim: an agent keeps asking for a timeout in the past');
      } else {
        stalls = 0;
        this.now = next;
      }
      const due = this.inFlight.filter((d) => d.deliverAt <= this.now);
      this.inFlight = this.inFlight.filter((d) => d.deliverAt > this.now);
      for (const d of due) this.deliver(d);
      for (const peer of this.peers) if (peer.agent.pollTimeout() <= this.now) peer.agent.handleTimeout(this.now);
      for (const peer of this.peers) this.drain(peer);
    }
    this.now = Math.max(this.now, until);
  }

  /** Runs until `predicate` holds (checked after every step) or `limit` ms pass; returns the time taken. */
  runUntil(predicate: () => boolean, limit: number): number {
    const start = this.now;
    const step = 10;
    while (!predicate()) {
      if (this.now - start >= limit) return Infinity;
      this.run(this.now + step);
    }
    return this.now - start;
  }
}
