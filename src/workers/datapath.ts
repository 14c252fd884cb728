// A worker's packet logic for the peers of its shard, free of threads and syscalls: encrypt an IP
// packet read from the TUN device into a transport datagram, and authenticate, decrypt and filter
// a received datagram into an IP packet for the TUN device (whitepaper §5.4.6 and §2's cryptokey
// routing). The worker shell moves slots between rings and sockets around it.
import type { AeadBackend } from '../wireguard/aead.ts';
import { AllowedIps } from '../wireguard/allowedips.ts';
import { AEAD_TAG_SIZE, STAGED_QUEUE_SIZE } from '../wireguard/constants.ts';
import type { Endpoint } from '../wireguard/endpoint.ts';
import { PeerSessions, type Keypair, type KeypairMaterial } from '../wireguard/session.ts';
import { openTransport, paddedLength, sealTransport, transportCounter, transportReceiverIndexInt32 } from '../wireguard/transport.ts';
import {
  PEER_LAST_RECEIVED_MS_F64,
  PEER_LAST_SENT_MS_F64,
  PEER_RECORD_F64S,
  PEER_RX_ANY_PACKETS_F64,
  PEER_RX_BYTES_F64,
  PEER_RX_DATA_PACKETS_F64,
  PEER_TX_ANY_PACKETS_F64,
  PEER_TX_BYTES_F64,
  PEER_TX_DATA_PACKETS_F64,
  SLOT_PLAINTEXT_OFFSET,
} from '../ring/layout.ts';

/** Why a packet was dropped in a worker; each has a counter. */
export const DROP_REASONS = [
  'noPeer',
  'noEndpoint',
  'stagedOverflow',
  'unknownIndex',
  'replayed',
  'expiredKeypair',
  'badAuthentication',
  'badInnerPacket',
  'sourceNotAllowed',
  'tooLarge',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

/** What the datapath needs from its shell: rare, out-of-band effects (never per packet). */
export interface DatapathEffects {
  /** The peer has packets but no usable session, or its session wants refreshing. */
  requestHandshake(peer: number): void;
  /** The peer's endpoint moved to the source of an authenticated packet (roaming). */
  endpointChanged(peer: number, endpoint: Endpoint): void;
  /** A staged packet handle is being given up (queue overflow or cleared). */
  releaseStaged(handle: number): void;
  /** A responder's session was confirmed by the initiator's first packet: staged packets can go. */
  sessionConfirmed(peer: number): void;
}

/**
 * Where the datagram being decrypted came from, read from its slot without allocating; only a
 * packet from somewhere new (roaming) turns it into an Endpoint.
 */
export interface DatagramSource {
  /** Same remote address and port, and same local address, as `endpoint`. */
  matches(endpoint: Endpoint | null): boolean;
  toEndpoint(): Endpoint;
}

interface WorkerPeer {
  readonly id: number;
  readonly sessions: PeerSessions;
  endpoint: Endpoint | null;
  /** Opaque slot handles waiting for a session, oldest first (bounded by STAGED_QUEUE_SIZE). */
  readonly staged: number[];
  /**
   * The last inner IPv4 source address (as an int32) that the routing table gave to this peer, and
   * the table's generation then: while neither changes, the next packet from that address needs no
   * lookup (a peer mostly sends from the same address, and a large table costs a descent of cache
   * misses per packet).
   */
  verifiedSourceV4: number;
  verifiedGeneration: number;
}

/** Result codes of `encrypt`: a positive value is the datagram length. */
export const STAGED = -2;
export const DROPPED = -1;

export class Datapath {
  readonly routes = new AllowedIps();
  readonly drops: Record<DropReason, number>;
  mtu: number;
  /** Whether an authenticated packet from a new source moves the peer's endpoint (off in ICE mode). */
  roaming = true;
  private readonly peers = new Map<number, WorkerPeer>();
  /** By local index in its signed 32-bit form (`| 0`), so per-packet lookups use small-integer keys. */
  private readonly keypairs = new Map<number, { readonly peer: WorkerPeer; readonly keypair: Keypair }>();
  private readonly aead: AeadBackend;
  private readonly stats: Float64Array;
  private readonly effects: DatapathEffects;

  constructor(aead: AeadBackend, stats: Float64Array, mtu: number, effects: DatapathEffects) {
    this.aead = aead;
    this.stats = stats;
    this.mtu = mtu;
    this.effects = effects;
    this.drops = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
  }

  // ---- control -------------------------------------------------------------------------------

  addPeer(id: number): void {
    if (!this.peers.has(id)) this.peers.set(id, { id, sessions: new PeerSessions(), endpoint: null, staged: [], verifiedSourceV4: 0, verifiedGeneration: -1 });
  }

  removePeer(id: number): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    this.forgetKeypairs(peer.sessions.clear());
    this.clearStaged(id);
    this.routes.removePeer(id);
    this.peers.delete(id);
  }

  setEndpoint(id: number, endpoint: Endpoint): void {
    const peer = this.peers.get(id);
    if (peer !== undefined) peer.endpoint = endpoint;
  }

  endpointOf(id: number): Endpoint | null {
    return this.peers.get(id)?.endpoint ?? null;
  }

  /** A handshake completed: the initiator's session is usable at once, the responder's once confirmed. */
  installKeypair(id: number, material: KeypairMaterial): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    this.forgetKeypairs(peer.sessions.install(material));
    const keypair = material.isInitiator ? peer.sessions.current : peer.sessions.next;
    if (keypair !== null) this.keypairs.set(keypair.localIndex | 0, { peer, keypair });
  }

  zeroKeys(id: number): void {
    const peer = this.peers.get(id);
    if (peer !== undefined) this.forgetKeypairs(peer.sessions.clear());
  }

  /** Hands back every staged handle of a peer whose handshake gave up. */
  clearStaged(id: number): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    for (const handle of peer.staged.splice(0)) this.effects.releaseStaged(handle);
  }

  /** Staged handles to send now that a session is usable (the caller re-runs `encrypt` on each). */
  takeStaged(id: number, now: number): number[] {
    const peer = this.peers.get(id);
    if (peer === undefined || peer.staged.length === 0 || peer.sessions.sendingKeypair(now) === null) return [];
    return peer.staged.splice(0);
  }

  hasSession(id: number, now: number): boolean {
    const peer = this.peers.get(id);
    return peer !== undefined && peer.sessions.sendingKeypair(now) !== null;
  }

  // ---- outbound: IP packet at payload[16, 16 + ipLength) → datagram at payload[0, n) -----------

  /**
   * Encrypts in place. Returns the datagram length, STAGED (the handle is kept until a session
   * exists) or DROPPED. An empty packet (`ipLength` 0) is a keepalive.
   */
  encrypt(id: number, handle: number, payload: Uint8Array, ipLength: number, now: number): number {
    const peer = this.peers.get(id);
    if (peer === undefined) return this.drop('noPeer');
    if (peer.endpoint === null) return this.drop('noEndpoint');
    const keypair = peer.sessions.sendingKeypair(now);
    if (keypair === null) {
      if (peer.staged.length >= STAGED_QUEUE_SIZE) {
        const oldest = peer.staged.shift();
        if (oldest !== undefined) this.effects.releaseStaged(oldest);
        this.drops.stagedOverflow++;
      }
      peer.staged.push(handle);
      this.effects.requestHandshake(id);
      return STAGED;
    }
    if (SLOT_PLAINTEXT_OFFSET + paddedLength(ipLength, this.mtu) + AEAD_TAG_SIZE > payload.length) return this.drop('tooLarge');
    const length = sealTransport(this.aead, keypair.sendKey, keypair.remoteIndexInt32, keypair.sendCounter, payload, ipLength, this.mtu);
    keypair.sendCounter++;
    const record = id * PEER_RECORD_F64S;
    const stats = this.stats;
    stats[record + PEER_TX_BYTES_F64]! += length;
    stats[record + PEER_TX_ANY_PACKETS_F64]! += 1;
    if (ipLength > 0) stats[record + PEER_TX_DATA_PACKETS_F64]! += 1;
    stats[record + PEER_LAST_SENT_MS_F64] = now;
    if (peer.sessions.needsRekeyAfterSend(now)) this.effects.requestHandshake(id);
    return length;
  }

  // ---- inbound: datagram at payload[0, n) → IP packet at payload[16, 16 + result) --------------

  /**
   * Authenticates and decrypts a transport datagram in place. Returns the inner IP packet length
   * (> 0), 0 for a keepalive, or DROPPED. `peerOut[0]` receives the peer id.
   */
  decrypt(payload: Uint8Array, datagramLength: number, source: DatagramSource, now: number, peerOut: Int32Array): number {
    const entry = this.keypairs.get(transportReceiverIndexInt32(payload));
    if (entry === undefined) return this.drop('unknownIndex');
    const { peer, keypair } = entry;
    const counter = transportCounter(payload);
    if (counter < 0 || !keypair.replay.check(counter)) return this.drop('replayed');
    if (!PeerSessions.isReceivable(keypair, now)) return this.drop('expiredKeypair');
    const plaintextLength = openTransport(this.aead, keypair.receiveKey, payload, datagramLength, counter);
    if (plaintextLength < 0) return this.drop('badAuthentication');
    if (!keypair.replay.accept(counter)) return this.drop('replayed');

    const id = peer.id;
    peerOut[0] = id;
    const record = id * PEER_RECORD_F64S;
    const stats = this.stats;
    stats[record + PEER_RX_BYTES_F64]! += datagramLength;
    stats[record + PEER_RX_ANY_PACKETS_F64]! += 1;
    stats[record + PEER_LAST_RECEIVED_MS_F64] = now;
    if (peer.sessions.confirm(keypair)) this.effects.sessionConfirmed(id);
    // wireguard-go SetEndpointFromPacket: the latest authenticated packet decides where replies go.
    if (this.roaming && !source.matches(peer.endpoint)) this.roam(peer, source.toEndpoint());
    if (peer.sessions.needsRekeyAfterReceive(now)) this.effects.requestHandshake(id);
    if (plaintextLength === 0) return 0;

    const ipLength = this.innerLength(payload, plaintextLength);
    if (ipLength <= 0) return this.drop('badInnerPacket');
    if (!this.sourceAllowed(peer, payload)) return this.drop('sourceNotAllowed');
    stats[record + PEER_RX_DATA_PACKETS_F64]! += 1;
    return ipLength;
  }

  /** The IP packet's own length (without WireGuard padding), or 0 when it is not a sane IP packet. */
  private innerLength(payload: Uint8Array, plaintextLength: number): number {
    const o = SLOT_PLAINTEXT_OFFSET;
    const version = payload[o]! >> 4;
    let length: number;
    if (version === 4) {
      if (plaintextLength < 20) return 0;
      length = (payload[o + 2]! << 8) | payload[o + 3]!;
      if (length < 20) return 0;
    } else if (version === 6) {
      if (plaintextLength < 40) return 0;
      length = 40 + ((payload[o + 4]! << 8) | payload[o + 5]!);
    } else {
      return 0;
    }
    return length <= plaintextLength ? length : 0;
  }

  /** Cryptokey routing's inbound rule (whitepaper §2): the inner source must route back to the peer. */
  private sourceAllowed(peer: WorkerPeer, payload: Uint8Array): boolean {
    const routes = this.routes;
    const o = SLOT_PLAINTEXT_OFFSET;
    if (payload[o]! >> 4 !== 4) return routes.lookupV6(payload, o + 8) === peer.id;
    const source = (payload[o + 12]! << 24) | (payload[o + 13]! << 16) | (payload[o + 14]! << 8) | payload[o + 15]!;
    const generation = routes.generation;
    if (source === peer.verifiedSourceV4 && generation === peer.verifiedGeneration) return true;
    if (routes.lookupV4(payload, o + 12) !== peer.id) return false;
    peer.verifiedSourceV4 = source;
    peer.verifiedGeneration = generation;
    return true;
  }

  private roam(peer: WorkerPeer, source: Endpoint): void {
    peer.endpoint = source;
    this.effects.endpointChanged(peer.id, source);
  }

  private forgetKeypairs(indexes: readonly number[]): void {
    for (const index of indexes) this.keypairs.delete(index | 0);
  }

  private drop(reason: DropReason): number {
    this.drops[reason]++;
    return DROPPED;
  }
}
