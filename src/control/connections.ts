// The control thread's ICE side (sans-IO): one ICE agent per connection, one TURN allocation per
// relay server for the whole node, and server-reflexive candidates gathered with STUN, all on the
// UDP socket WireGuard uses. It turns ICE's verdicts into where each WireGuard peer's datagrams go:
// a direct address, or a channel through our TURN allocation (ARCHITECTURE.md: "a connection is an
// ICE agent plus a WireGuard peer whose path can change under it").
import { randomBytes } from 'node:crypto';
import { IceAgent, type IceCredentials, type IcePath, type IceRole, type IceTimings } from '../ice/agent.ts';
import { addressKey, sameTransportAddress, transportAddress, type TransportAddress } from '../ice/address.ts';
import { formatCandidate, parseCandidate, type Candidate } from '../ice/candidates.ts';
import { getXorAddress, isStun, parseStun, StunAttribute, StunMessageBuilder, StunMethod, transactionIdFromBytes, type TransactionId } from '../ice/stun.ts';
import { TurnClient, type TurnCredentials } from '../ice/turn.ts';
import { parseCidr } from '../wireguard/allowedips.ts';
import { formatIpv4, formatIpv6, type Endpoint } from '../wireguard/endpoint.ts';

export interface RelayServer {
  readonly server: TransportAddress;
  readonly credentials: TurnCredentials;
}

export interface ConnectionsOptions {
  /** This node's host candidates: its interface addresses with the UDP socket's port. */
  readonly hostAddresses: readonly TransportAddress[];
  readonly stunServers: readonly TransportAddress[];
  readonly relays: readonly RelayServer[];
  readonly timings?: Partial<IceTimings>;
}

export type ConnectionEvent =
  /** A local candidate to signal to the peer (RFC 8839 candidate-attribute text). */
  | { readonly kind: 'localCandidate'; readonly peer: number; readonly candidate: string }
  | { readonly kind: 'connected'; readonly peer: number; readonly endpoint: Endpoint; readonly path: string; readonly elapsedMs: number }
  | { readonly kind: 'pathChanged'; readonly peer: number; readonly endpoint: Endpoint; readonly path: string }
  | { readonly kind: 'failed'; readonly peer: number; readonly reason: string; readonly stats?: Readonly<Record<string, number>> }
  | { readonly kind: 'relayAllocated'; readonly server: string; readonly relayed: string }
  /**
   * A non-STUN datagram relayed to us through our allocation (a WireGuard handshake, say), with
   * where to answer: the relay server, through the channel bound to the sender (0 if none yet).
   */
  | { readonly kind: 'relayedDatagram'; readonly bytes: Uint8Array; readonly via: Endpoint }
  | { readonly kind: 'relayFailed'; readonly server: string; readonly reason: string };

export interface ConnectionTransmit {
  readonly to: TransportAddress;
  readonly bytes: Uint8Array;
}

interface Connection {
  readonly peer: number;
  readonly agent: IceAgent;
  readonly startedAt: number;
  connected: boolean;
}

interface Relay {
  readonly name: string;
  readonly client: TurnClient;
}

interface BindingProbe {
  readonly server: TransportAddress;
  readonly request: Uint8Array;
  sentAt: number;
  attempts: number;
}

/** Server-reflexive discovery: a Binding request is sent this many times, doubling the wait. */
const BINDING_ATTEMPTS = 4;
const BINDING_FIRST_RTO_MS = 250;

export class IceConnections {
  private readonly options: ConnectionsOptions;
  private readonly connections = new Map<number, Connection>();
  private readonly relays: Relay[];
  private readonly probes = new Map<TransactionId, BindingProbe>();
  private readonly serverReflexive: Array<{ address: TransportAddress; base: TransportAddress }> = [];
  private readonly relayed: Array<{ address: TransportAddress; relay: string; related: TransportAddress | null }> = [];
  private readonly transmits: ConnectionTransmit[] = [];
  private readonly events: ConnectionEvent[] = [];
  /** Datagrams that were neither ours nor any agent's. */
  unmatched = 0;
  private readonly retiredDrops: Record<string, number> = {};

  constructor(options: ConnectionsOptions) {
    this.options = options;
    this.relays = options.relays.map((relay) => ({
      name: addressKey(relay.server),
      client: new TurnClient({ server: relay.server, credentials: relay.credentials }),
    }));
  }

  /** Relay servers: datagrams from these addresses are TURN traffic (the UDP reader needs them). */
  relayServers(): TransportAddress[] {
    return this.options.relays.map((relay) => relay.server);
  }

  /** Starts gathering: Binding requests to the STUN servers and an allocation on each relay. */
  start(now: number): void {
    for (const server of this.options.stunServers) {
      const id = randomBytes(12);
      const request = new StunMessageBuilder(StunMethod.binding, 'request', transactionIdFromBytes(id)).encode({ fingerprint: true });
      this.probes.set(transactionIdFromBytes(id), { server, request, sentAt: now, attempts: 1 });
      this.transmits.push({ to: server, bytes: request });
    }
    for (const relay of this.relays) relay.client.allocate(now);
    this.pumpRelays(now);
  }

  /** Begins connecting `peer`; remote credentials may come now or later (signalling). */
  add(peer: number, role: IceRole, local: IceCredentials, remote: IceCredentials | null, now: number): void {
    if (this.connections.has(peer)) throw new RangeError(`connections: peer ${peer} already has a connection`);
    const agent = new IceAgent({ role, local, ...(remote === null ? {} : { remote }), now, ...(this.options.timings === undefined ? {} : { timings: this.options.timings }) });
    const connection: Connection = { peer, agent, startedAt: now, connected: false };
    this.connections.set(peer, connection);
    for (const address of this.options.hostAddresses) this.offer(connection, agent.addLocalCandidate({ type: 'host', address }));
    for (const { address, base } of this.serverReflexive) this.addServerReflexive(connection, address, base);
    for (const { address, relay, related } of this.relayed) {
      this.offer(connection, agent.addLocalCandidate({ type: 'relay', address, relay, ...(related === null ? {} : { related }) }));
    }
  }

  setRemoteCredentials(peer: number, remote: IceCredentials): void {
    this.connections.get(peer)?.agent.setRemoteCredentials(remote);
  }

  /** A remote candidate from signalling; throws ProtocolError for text that does not parse. */
  addRemoteCandidate(peer: number, text: string): void {
    const candidate: Candidate = parseCandidate(text);
    this.connections.get(peer)?.agent.addRemoteCandidate(candidate);
  }

  remove(peer: number): void {
    const connection = this.connections.get(peer);
    if (connection !== undefined) this.retire(connection);
    this.connections.delete(peer);
  }

  /**
   * Datagrams dropped or refused on the ICE side, by reason: what nobody claimed, what the agents
   * refused or dropped (over every connection, gone ones included) and what the TURN clients dropped.
   */
  dropCounts(): Record<string, number> {
    const counts: Record<string, number> = { 'ice.unmatched': this.unmatched, ...this.retiredDrops };
    for (const connection of this.connections.values()) addAgentDrops(counts, connection.agent.stats);
    for (const relay of this.relays) {
      for (const [reason, n] of Object.entries(relay.client.drops)) counts[`turn.${reason}`] = (counts[`turn.${reason}`] ?? 0) + n;
    }
    return counts;
  }

  private retire(connection: Connection): void {
    addAgentDrops(this.retiredDrops, connection.agent.stats);
  }

  /** Deallocates every relay (best effort); call before shutting down and pump the transmits. */
  close(now: number): void {
    for (const relay of this.relays) {
      if (relay.client.state === 'allocated') relay.client.close(now);
    }
    this.pumpRelays(now);
  }

  /**
   * A STUN or TURN-server datagram the UDP reader handed to the control thread. `arrivedOn` is the
   * local address it arrived on (pktinfo), or null. Returns false when nobody here wanted it.
   */
  handleDatagram(bytes: Uint8Array, from: TransportAddress, arrivedOn: TransportAddress | null, now: number): boolean {
    if (this.handleBindingResponse(bytes, from, arrivedOn)) return true;
    const relay = this.relays.find((r) => sameTransportAddress(r.client.server, from));
    if (relay !== undefined) {
      const handled = relay.client.handleInput(bytes, from, now);
      this.pumpRelays(now);
      if (handled) return true;
    }
    const local = arrivedOn ?? this.options.hostAddresses.find((a) => a.family === from.family) ?? from;
    return this.deliverToAgents(bytes, from, { local, relay: null }, now);
  }

  handleTimeout(now: number): void {
    for (const [id, probe] of this.probes) {
      if (now < probe.sentAt + BINDING_FIRST_RTO_MS * 2 ** (probe.attempts - 1)) continue;
      if (probe.attempts >= BINDING_ATTEMPTS) {
        this.probes.delete(id);
        continue;
      }
      probe.attempts++;
      probe.sentAt = now;
      this.transmits.push({ to: probe.server, bytes: probe.request });
    }
    for (const relay of this.relays) {
      const due = relay.client.pollTimeout();
      if (due !== null && due <= now) relay.client.handleTimeout(now);
    }
    this.pumpRelays(now);
    for (const connection of this.connections.values()) {
      if (connection.agent.pollTimeout() <= now) connection.agent.handleTimeout(now);
    }
    this.pumpAgents(now);
  }

  pollTimeout(): number {
    let earliest = Number.POSITIVE_INFINITY;
    for (const probe of this.probes.values()) earliest = Math.min(earliest, probe.sentAt + BINDING_FIRST_RTO_MS * 2 ** (probe.attempts - 1));
    for (const relay of this.relays) earliest = Math.min(earliest, relay.client.pollTimeout() ?? Number.POSITIVE_INFINITY);
    for (const connection of this.connections.values()) earliest = Math.min(earliest, connection.agent.pollTimeout());
    return earliest;
  }

  pollTransmit(): ConnectionTransmit | undefined {
    return this.transmits.shift();
  }

  pollEvent(): ConnectionEvent | undefined {
    return this.events.shift();
  }

  // ---- internals -------------------------------------------------------------------------------

  private handleBindingResponse(bytes: Uint8Array, from: TransportAddress, arrivedOn: TransportAddress | null): boolean {
    if (this.probes.size === 0) return false;
    const message = parseStun(bytes);
    if (message === null || message.method !== StunMethod.binding || message.messageClass !== 'success') return false;
    const probe = this.probes.get(message.transactionId);
    if (probe === undefined || !sameTransportAddress(probe.server, from)) return false;
    this.probes.delete(message.transactionId);
    const mapped = getXorAddress(message, StunAttribute.xorMappedAddress);
    if (mapped === undefined) return true;
    const base = arrivedOn ?? this.options.hostAddresses.find((a) => a.family === mapped.family);
    if (base === undefined) return true;
    this.learnServerReflexive(mapped, base);
    return true;
  }

  private learnServerReflexive(address: TransportAddress, base: TransportAddress): void {
    // A mapped address equal to a host address means no NAT: nothing new to offer.
    if (this.options.hostAddresses.some((host) => sameTransportAddress(host, address))) return;
    if (this.serverReflexive.some((known) => sameTransportAddress(known.address, address))) return;
    this.serverReflexive.push({ address, base });
    for (const connection of this.connections.values()) this.addServerReflexive(connection, address, base);
  }

  private addServerReflexive(connection: Connection, address: TransportAddress, base: TransportAddress): void {
    // The agent pairs a server-reflexive candidate as its base, which must be one of its hosts.
    const host = this.options.hostAddresses.find((h) => sameTransportAddress(h, base));
    if (host === undefined) return;
    try {
      this.offer(connection, connection.agent.addLocalCandidate({ type: 'srflx', address, base: host }));
    } catch {
      // Already known to this agent.
    }
  }

  private offer(connection: Connection, candidate: Candidate): void {
    this.events.push({ kind: 'localCandidate', peer: connection.peer, candidate: formatCandidate(candidate) });
  }

  private deliverToAgents(bytes: Uint8Array, from: TransportAddress, arrival: { local: TransportAddress; relay: string | null }, now: number): boolean {
    const connection = this.connectionFor(bytes);
    if (connection === undefined) {
      this.unmatched++;
      return false;
    }
    // The agent counts what it does not take (not STUN, bad fingerprint, unauthenticated, ...).
    const taken = connection.agent.handleInput(bytes, from, arrival, now);
    this.pumpAgents(now);
    return taken;
  }

  /**
   * The connection a STUN message is meant for: requests name the agent's ufrag first in USERNAME
   * (RFC 8445 §7.2.2), responses answer one of its transactions. With a single connection, that one
   * (its agent counts whatever is not really its own).
   */
  private connectionFor(bytes: Uint8Array): Connection | undefined {
    if (this.connections.size === 1) return this.connections.values().next().value;
    const message = parseStun(bytes);
    if (message === null) return undefined;
    if (message.messageClass === 'request' || message.messageClass === 'indication') {
      const username = message.attributes.find((a) => a.type === StunAttribute.username);
      if (username === undefined) return undefined;
      const ufrag = new TextDecoder().decode(username.value).split(':')[0];
      for (const connection of this.connections.values()) if (connection.agent.localUfrag === ufrag) return connection;
      return undefined;
    }
    for (const connection of this.connections.values()) if (connection.agent.ownsTransaction(message.transactionId)) return connection;
    return undefined;
  }

  /** Moves the TURN clients' output to the socket, and their events to the agents and the caller. */
  private pumpRelays(now: number): void {
    for (const relay of this.relays) {
      const client = relay.client;
      for (let t = client.pollTransmit(); t !== null; t = client.pollTransmit()) this.transmits.push(t);
      for (let e = client.pollEvent(); e !== null; e = client.pollEvent()) {
        switch (e.kind) {
          case 'allocated': {
            const entry = { address: e.relayedAddress, relay: relay.name, related: e.mappedAddress };
            this.relayed.push(entry);
            this.events.push({ kind: 'relayAllocated', server: relay.name, relayed: addressKey(e.relayedAddress) });
            for (const connection of this.connections.values()) {
              this.offer(connection, connection.agent.addLocalCandidate({ type: 'relay', address: entry.address, relay: entry.relay, ...(entry.related === null ? {} : { related: entry.related }) }));
            }
            // The allocation's mapped address is a server-reflexive address too.
            if (e.mappedAddress !== null) {
              const base = this.options.hostAddresses.find((a) => a.family === e.mappedAddress?.family);
              if (base !== undefined) this.learnServerReflexive(e.mappedAddress, base);
            }
            break;
          }
          case 'allocationFailed':
            this.events.push({ kind: 'relayFailed', server: relay.name, reason: `${e.reason}: ${e.detail}` });
            break;
          case 'data':
            // Relayed STUN (connectivity checks through our allocation) goes to the agents, the rest
            // (WireGuard handshakes) to the caller. Transport data never gets here: the UDP reader
            // unwraps ChannelData carrying it and hands it to the workers.
            if (isStun(e.bytes, e.bytes.length)) {
              this.deliverToAgents(e.bytes, e.peer, { local: client.relayedAddress ?? e.peer, relay: relay.name }, now);
            } else {
              this.events.push({ kind: 'relayedDatagram', bytes: e.bytes, via: { ...endpointFromTransport(client.server), relayChannel: client.channelOf(e.peer) ?? 0 } });
            }
            break;
          default:
            break;
        }
      }
    }
  }

  private pumpAgents(now: number): void {
    for (const connection of this.connections.values()) {
      const agent = connection.agent;
      for (let t = agent.pollTransmit(); t !== undefined; t = agent.pollTransmit()) {
        if (t.relay === null) {
          this.transmits.push({ to: t.to, bytes: t.bytes });
          continue;
        }
        const relay = this.relays.find((r) => r.name === t.relay);
        if (relay === undefined || relay.client.state !== 'allocated') continue;
        if (relay.client.channelOf(t.to) === null) relay.client.bindChannel(t.to, now);
        const wrapped = relay.client.encapsulate(t.to, t.bytes);
        // Until the permission exists there is no way through; the agent retransmits.
        if (wrapped !== null) this.transmits.push({ to: relay.client.server, bytes: wrapped });
      }
      for (let e = agent.pollEvent(); e !== undefined; e = agent.pollEvent()) {
        switch (e.kind) {
          case 'connected':
            connection.connected = true;
            this.events.push({ kind: 'connected', peer: connection.peer, endpoint: this.endpointFor(e.pair, now), path: describePath(e.pair), elapsedMs: now - connection.startedAt });
            break;
          case 'pathChanged':
            this.events.push({ kind: 'pathChanged', peer: connection.peer, endpoint: this.endpointFor(e.pair, now), path: describePath(e.pair) });
            break;
          case 'failed':
            this.events.push({ kind: 'failed', peer: connection.peer, reason: `ice: ${e.reason}`, stats: { ...agent.stats } });
            this.retire(connection);
            this.connections.delete(connection.peer);
            break;
          case 'roleChanged':
            break;
        }
      }
    }
    this.pumpRelays(now);
  }

  /** Where WireGuard datagrams for `pair` go: straight to the remote, or through our relay's channel. */
  private endpointFor(pair: IcePath, now: number): Endpoint {
    const relayName = pair.local.relay;
    if (relayName !== null) {
      const relay = this.relays.find((r) => r.name === relayName);
      if (relay !== undefined) {
        const channel = relay.client.channelOf(pair.remote.address) ?? relay.client.bindChannel(pair.remote.address, now);
        return { ...endpointFromTransport(relay.client.server), relayChannel: channel };
      }
    }
    return endpointFromTransport(pair.remote.address);
  }
}

/** The agent counters that count dropped or refused input (the rest count work done). */
function addAgentDrops(counts: Record<string, number>, stats: Readonly<Record<string, number>>): void {
  for (const [name, n] of Object.entries(stats)) {
    if (!name.startsWith('dropped') && !name.startsWith('refused')) continue;
    counts[`ice.${name}`] = (counts[`ice.${name}`] ?? 0) + n;
  }
}

function describePath(pair: IcePath): string {
  const via = pair.local.relay === null ? 'direct' : `relayed via ${pair.local.relay}`;
  return `${pair.local.type} ${addressKey(pair.local.address)} → ${pair.remote.type} ${addressKey(pair.remote.address)} (${via})`;
}

export function endpointFromTransport(address: TransportAddress): Endpoint {
  const { bytes } = parseCidr(address.address);
  return { family: address.family, address: bytes, port: address.port, localAddress: null, localIfindex: 0 };
}

export function transportFromEndpoint(endpoint: Endpoint): TransportAddress {
  const text = endpoint.family === 4 ? formatIpv4(endpoint.address) : formatIpv6(endpoint.address);
  return transportAddress(text, endpoint.port);
}
