// The control thread of a static-mode device (`ztgate wg IFNAME`): owns the configuration, the
// WireGuard engine (handshakes, cookies, timers), the UAPI socket, and the packet threads. It never
// touches transport packets: those flow TUN ⇄ worker ⇄ UDP through the shared-memory fabric.
import { Worker } from 'node:worker_threads';
import { randomBytes, randomInt } from 'node:crypto';
import { availableParallelism, networkInterfaces } from 'node:os';
import type { Logger } from '../main/log.ts';
import { monotonicNow } from '../clock.ts';
import { SyscallError, ZtgateError } from '../errors.ts';
import { attachControl, createFabric, returnSlot, type ControlEnd, type FabricDescription } from '../ring/fabric.ts';
import { Doorbell, waitForWorkAsync } from '../ring/doorbell.ts';
import { PEER_RECORD_F64S, PEER_RX_ANY_PACKETS_F64, PEER_RX_BYTES_F64, PEER_RX_DATA_PACKETS_F64, PEER_TX_ANY_PACKETS_F64, PEER_TX_BYTES_F64, PEER_TX_DATA_PACKETS_F64 } from '../ring/layout.ts';
import { Tun, tunOffloadWantedByDefault } from '../io/tun.ts';
import { DatagramMeta, DEFAULT_BATCH_SIZE, SteeredUdpGroup, UdpSocket, sourceMayBeStale, warmUdpPaths } from '../io/udp.ts';
import { LinkWatcher } from '../io/netlink.ts';
import { closeFd, createEventFd, setIntOption, signalEventFd, SOL_SOCKET } from '../io/libc.ts';
import { AllowedIps } from '../wireguard/allowedips.ts';
import { warmHandshakePaths } from '../wireguard/engine-warmup.ts';
import { DEFAULT_MTU, UNDER_LOAD_AFTER_TIME_MS } from '../wireguard/constants.ts';
import { WireGuardEngine, type EngineEvent } from '../wireguard/engine.ts';
import type { HandshakeJobResult } from '../wireguard/noise.ts';
import { formatEndpoint, type Endpoint } from '../wireguard/endpoint.ts';
import { isZeroKey, toPresharedKey, toPrivateKey, toPublicKey, zeroPresharedKey } from '../wireguard/keys.ts';
import { UAPI_ERRNO, UapiError, type DeviceSnapshot, type PeerOperation, type PeerSnapshot, type SetOperation } from '../uapi/protocol.ts';
import { listenUapi, type UapiServer } from '../uapi/server.ts';
import type { IceCredentials, IceRole } from '../ice/agent.ts';
import { transportAddress, type TransportAddress } from '../ice/address.ts';
import { CHANNEL_DATA_HEADER_BYTES, writeChannelDataHeader } from '../ice/turn.ts';
import { endpointFromTransport, IceConnections, transportFromEndpoint, type ConnectionEvent, type RelayServer } from './connections.ts';
import { MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE } from '../wireguard/constants.ts';
import { HandshakePool } from './handshake-pool.ts';
import { DEFAULT_KEEP_WARM_MS } from '../workers/keep-warm.ts';
import { commandSignalIndex, DROP_REPORT_INTERVAL_MS, type ControlNotice, RouteChangeBatch, type UdpReaderCommand, type ThreadInit, type WorkerCommand } from './messages.ts';

const SO_MARK = 36;
/** How often worker counters are turned into timer events, and timers are checked. */
const TICK_MS = 100;
/**
 * The longest gap between ticks while the device is idle: no counter moved in the last tick and no
 * engine input since. The engine's own deadlines are still met to the tick (the gap ends at the
 * next one); only noticing that idle traffic resumed can take this long, which moves the timers
 * that data starts (keepalive after 10 s, new handshake after 15 s) by at most this much.
 * An idle tunnel then wakes its control thread once a second instead of ten times.
 */
const IDLE_TICK_MS = 1_000;
/** How often the link watcher is drained (MTU changes, deletion). */
const LINK_POLL_MS = 250;
/** Control-plane datagrams handled per event-loop turn. */
const HANDSHAKE_BATCH = 256;
/**
 * A handshake backlog this deep (datagrams waiting in the ring plus handshakes whose crypto is with
 * the pool) puts the device under load (cookie replies; whitepaper §5.3).
 */
const UNDER_LOAD_BACKLOG = 32;
/**
 * At most this many handshakes with the pool at once; beyond it datagrams wait in the ring (and
 * then in the socket's buffer), so a flood cannot queue unbounded work.
 */
const MAX_HANDSHAKE_JOBS = 1_024;
/**
 * The handshake pool starts when this many handshake datagrams wait at once, and stops after
 * HANDSHAKE_POOL_IDLE_MS without a job: its threads cost about 20 MB of resident memory each, which
 * a device that never sees a burst of handshakes should not pay. Until it is up, handshakes run
 * inline as before.
 */
const HANDSHAKE_POOL_START_BACKLOG = 8;
const HANDSHAKE_POOL_IDLE_MS = 60_000;
/** How long packet threads get to finish before the process exits regardless. */
const THREAD_STOP_TIMEOUT_MS = 2_000;
/**
 * Packet threads allocate next to nothing per packet, but a big configuration change (routes,
 * peers) is a burst of garbage: V8 would grow each thread's young generation to its default
 * maximum (tens of MB of resident memory per thread, kept afterwards). A small cap bounds that.
 */
const PACKET_THREAD_YOUNG_GENERATION_MB = 4;
/** The all-zero key of every peer without one, shared: keys are only ever read, never wiped. */
const NO_PRESHARED_KEY = zeroPresharedKey();

export interface DeviceOptions {
  readonly interfaceName: string;
  readonly workers: number;
  readonly logger: Logger;
  readonly logLevel: string;
  /**
   * ICE mode: each peer's path comes from its ICE agent (so WireGuard roaming is off), and STUN and
   * TURN share the WireGuard socket. Without it the device is a static drop-in for wireguard-go.
   */
  readonly ice?: IceModeOptions;
  /**
   * Threads for the responder's handshake crypto under load (default: $ZTGATE_HANDSHAKE_THREADS,
   * else the number of cores up to 2); 0 keeps it on the control thread.
   */
  readonly handshakeThreads?: number;
  /**
   * How long after its last data packet a worker keeps its path warm, trading 1.4–2.5 % of a core
   * during light traffic for a faster first packet (workers/keep-warm.ts); 0 turns it off.
   * Default DEFAULT_KEEP_WARM_MS.
   */
  readonly keepWarmMs?: number;
}

export interface IceModeOptions {
  readonly stunServers: readonly TransportAddress[];
  readonly relays: readonly RelayServer[];
  readonly listenPort: number;
}

interface DevicePeer {
  readonly id: number;
  presharedKey: Uint8Array | null;
  endpoint: Endpoint | null;
  persistentKeepalive: number;
  lastHandshakeWallMs: number;
}

const WORKER_FILE = '../workers/worker.ts';

export class Device {
  private readonly options: DeviceOptions;
  private readonly log: Logger;
  private readonly tun: Tun;
  /** The UDP port's sockets: the reader's (`socket`) and one per worker (io/udp.ts). */
  private readonly udpGroup: SteeredUdpGroup;
  private readonly socket: UdpSocket;
  private readonly fabric: FabricDescription;
  private readonly control: ControlEnd;
  private readonly engine: WireGuardEngine;
  private readonly routes = new AllowedIps();
  /** By peer id; the engine finds a peer's id from its public key (one map by key, not two). */
  private readonly peersById = new Map<number, DevicePeer>();
  /** Peer ids handed out so far are below this; `freePeerIds` holds the ones given back since. */
  private nextPeerId = 0;
  private readonly freePeerIds: number[] = [];
  /** One reusable record for handing a peer's counters to the engine on every tick. */
  private readonly observed = { txData: 0, txAny: 0, rxData: 0, rxAny: 0 };
  private readonly workers: Worker[] = [];
  private udpReader: Worker | null = null;
  private readonly commandSignals: Int32Array;
  private readonly workerDoorbells: readonly Doorbell[];
  private readonly stats: Float64Array;
  /** Datagrams staged to leave in one sendmmsg (see sendStaged), with whether each has a source set. */
  private readonly sendMeta = new DatagramMeta(DEFAULT_BATCH_SIZE);
  private readonly sendViews: Uint8Array[] = [];
  private readonly sendHasSource: boolean[] = [];
  private readonly linkWatcher: LinkWatcher;
  /** An eventfd the UDP reader polls beside its socket, to hear commands at once. */
  private readonly udpReaderWakeFd: number;
  private uapi: UapiServer | null = null;
  private privateKey: Uint8Array | null = null;
  private fwmark = 0;
  /** The UDP port bound now; it changes only through `rebind`, so it is kept rather than asked for. */
  private boundPort: number;
  private underLoadUntil = 0;
  private readonly handshakeThreads: number;
  private handshakePool: HandshakePool | null = null;
  private handshakePoolStarting = false;
  /** A pool that failed to start is not tried again: handshakes stay inline. */
  private handshakePoolFailed = false;
  private lastHandshakeJobAt = 0;
  /** Resolves the control loop's wait when the pool answers (it waits when MAX_HANDSHAKE_JOBS are out). */
  private handshakeProgress: (() => void) | null = null;
  /** Packet threads that got commands during a pump(): each is rung once, after this event-loop turn. */
  private readonly pendingRings = new Set<number>();
  private ringsScheduled = false;
  private pumping = false;
  private tick: NodeJS.Timeout | null = null;
  /** True while the next tick is further away than TICK_MS (see IDLE_TICK_MS). */
  private tickIdle = false;
  private linkPoll: NodeJS.Timeout | null = null;
  private stopping: Promise<void> | null = null;
  private lastDropReportAt = 0;
  private lastDropTotal = 0;
  /** ICE mode only: the connections' agents, relays and gathering. */
  private ice: IceConnections | null = null;
  private iceTimer: NodeJS.Timeout | null = null;
  /** ICE mode only: which side starts WireGuard handshakes once ICE has a path (the controlling one). */
  private readonly iceRoles = new Map<number, IceRole>();
  /** Receives connection events in ICE mode (candidates to signal, connected, path changes, failures). */
  onConnectionEvent: ((event: ConnectionEvent) => void) | null = null;
  /** Resolves when the device has stopped (deleted interface, signal, fatal error). */
  readonly stopped: Promise<void>;
  private resolveStopped!: () => void;

  private constructor(options: DeviceOptions) {
    this.options = options;
    this.log = options.logger;
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
    // Before anything is opened: a bad setting must not leave an interface behind.
    this.handshakeThreads = options.handshakeThreads ?? handshakeThreadsFromEnv();
    // wireguard-go creates the interface with its default MTU and leaves it down: wg-quick or the
    // administrator brings it up.
    this.tun = Tun.open(options.interfaceName, { queues: options.workers, mtu: DEFAULT_MTU, up: false, offload: tunOffloadWantedByDefault() });
    // Transport data goes straight to its worker's socket, not through the UDP reader thread (two
    // fewer thread hand-offs per round trip; perf/README.md, "Where one ping's time goes").
    this.udpGroup = SteeredUdpGroup.open(0, options.workers);
    this.socket = this.udpGroup.reader;
    this.boundPort = this.socket.port();
    this.fabric = createFabric({ workerCount: options.workers });
    this.control = attachControl(this.fabric);
    this.workerDoorbells = this.fabric.workerDoorbells.map((buffer) => new Doorbell(buffer));
    this.stats = new Float64Array(this.fabric.peerTable);
    this.commandSignals = new Int32Array(new SharedArrayBuffer(4 * (options.workers + 1)));
    this.linkWatcher = LinkWatcher.open(this.tun.ifindex, this.tun.fds[0]!, DEFAULT_MTU);
    this.udpReaderWakeFd = createEventFd();
    this.engine = new WireGuardEngine({
      shardCount: options.workers,
      random: () => randomInt(2 ** 32) / 2 ** 32,
      wallClock: () => Date.now(),
      roaming: options.ice === undefined,
    });
  }

  /** Creates the interface, starts the packet threads and serves UAPI; resolves once ready. */
  static async start(options: DeviceOptions): Promise<Device> {
    const device = new Device(options);
    try {
      // The packet threads warm up their paths while this thread warms up its handshake path (the
      // warm-up runs once the threads are spawned, at the first await).
      await Promise.all([device.startThreads(), Promise.resolve().then(() => {
        warmHandshakePaths(monotonicNow());
        // This thread sends every handshake message: its first sends came 0.5–1.5 ms slower.
        warmUdpPaths();
      })]);
      device.uapi = await listenUapi({ interfaceName: options.interfaceName, handler: device, logger: options.logger });
    } catch (error) {
      await device.stop('failed to start');
      throw error;
    }
    if (options.ice !== undefined) device.startIce(options.ice);
    device.scheduleTick(TICK_MS);
    device.linkPoll = setInterval(() => device.pollLink(), LINK_POLL_MS);
    void device.serveHandshakes();
    device.log.info({ interface: options.interfaceName, workers: options.workers, port: device.boundPort }, 'device up');
    return device;
  }

  // ---- UAPI --------------------------------------------------------------------------------------

  snapshot(): DeviceSnapshot {
    return { privateKey: this.privateKey, listenPort: this.boundPort, fwmark: this.fwmark, peers: this.peerSnapshots() };
  }

  /** One peer at a time, as the reply is formatted: with many peers, all at once would be megabytes. */
  private *peerSnapshots(): Generator<PeerSnapshot, void, undefined> {
    for (const peer of this.peersById.values()) {
      const record = peer.id * PEER_RECORD_F64S;
      yield {
        publicKey: this.engine.peerPublicKey(peer.id),
        presharedKey: peer.presharedKey,
        endpoint: peer.endpoint === null ? null : formatEndpoint(peer.endpoint),
        lastHandshakeMs: peer.lastHandshakeWallMs,
        txBytes: this.stats[record + PEER_TX_BYTES_F64]!,
        rxBytes: this.stats[record + PEER_RX_BYTES_F64]!,
        persistentKeepalive: peer.persistentKeepalive,
        allowedIps: this.routes.entriesOf(peer.id),
      };
    }
  }

  /**
   * Applies operations in order (wireguard-go's semantics); routes go out in one batch. They are
   * iterated twice (see UapiHandler): first to the end, which parses and validates the whole
   * request, then to apply them.
   */
  apply(operations: Iterable<SetOperation>): void {
    const now = monotonicNow();
    const ports: number[] = [];
    let inserts = 0;
    let peerOperations = 0;
    for (const op of operations) {
      if (op.kind === 'listenPort') ports.push(op.port);
      else if (op.kind === 'peer') {
        peerOperations++;
        for (const change of op.allowedIps) if (!change.remove) inserts++;
      }
    }
    // A port that cannot be bound fails the request before anything else changes.
    for (const port of ports) this.rebind(port);
    this.routes.expectInsertions(inserts);
    // Room for every insertion and for one removal of all of each peer's routes (replace_allowed_ips).
    const routeChanges = new RouteChangeBatch(inserts + peerOperations);
    for (const op of operations) {
      switch (op.kind) {
        case 'privateKey':
          this.setPrivateKey(op.key, routeChanges);
          break;
        case 'listenPort':
          break;
        case 'fwmark':
          this.setFwmark(op.value);
          break;
        case 'replacePeers':
          for (const peer of [...this.peersById.values()]) this.removePeer(peer, routeChanges);
          break;
        case 'peer':
          this.applyPeer(op, now, routeChanges);
          break;
      }
    }
    this.broadcastRoutes(routeChanges);
    this.pump();
  }

  private rebind(port: number): void {
    try {
      this.boundPort = this.udpGroup.rebind(port);
      // The UDP reader's poll(2) still holds the old socket: wake it so the old port is released.
      // Workers polling their own sockets are woken through their doorbells.
      signalEventFd(this.udpReaderWakeFd);
      for (const doorbell of this.workerDoorbells) doorbell.ring();
    } catch (error) {
      throw new UapiError(UAPI_ERRNO.portInUse, `uapi: cannot listen on port ${port}: ${(error as Error).message}`, { cause: error });
    }
    // The new socket starts unmarked: keep the fwmark (wireguard-go sets it again after a bind too).
    if (this.fwmark !== 0) this.setFwmark(this.fwmark);
  }

  private setFwmark(value: number): void {
    try {
      for (const fd of [this.socket.fd, ...this.udpGroup.workerFds]) setIntOption(fd, SOL_SOCKET, SO_MARK, value, 'SO_MARK');
      this.fwmark = value;
    } catch (error) {
      throw new UapiError(UAPI_ERRNO.portInUse, `uapi: cannot set fwmark: ${(error as Error).message}`, { cause: error });
    }
  }

  private setPrivateKey(key: Uint8Array | null, routeChanges: RouteChangeBatch): void {
    this.privateKey = key === null || isZeroKey(key) ? null : key;
    this.engine.setPrivateKey(this.privateKey === null ? null : toPrivateKey(this.privateKey));
    // A peer whose public key is now our own can never be talked to (wireguard-go removes it).
    const own = this.engine.publicKey;
    if (own !== null) {
      const twin = this.peerWithKey(own);
      if (twin !== undefined) this.removePeer(twin, routeChanges);
    }
  }

  private applyPeer(op: PeerOperation, now: number, routeChanges: RouteChangeBatch): void {
    let peer = this.peerWithKey(op.publicKey);
    if (op.remove) {
      if (peer !== undefined) this.removePeer(peer, routeChanges);
      return;
    }
    if (peer === undefined && op.updateOnly) return;
    const own = this.engine.publicKey;
    if (own !== null && keysEqual(own, op.publicKey)) return;
    if (peer === undefined) peer = this.addPeer(op.publicKey);
    if (op.presharedKey !== undefined) {
      const presharedKey = op.presharedKey === null ? null : toPresharedKey(op.presharedKey);
      peer.presharedKey = presharedKey;
      this.engine.setPresharedKey(peer.id, presharedKey ?? NO_PRESHARED_KEY);
    }
    if (op.endpoint !== undefined) {
      const endpoint: Endpoint = { family: op.endpoint.family, address: op.endpoint.address, port: op.endpoint.port, localAddress: null, localIfindex: 0 };
      this.setPeerEndpoint(peer, endpoint);
    }
    if (op.replaceAllowedIps) {
      this.routes.removePeer(peer.id);
      routeChanges.removePeer(peer.id);
    }
    for (const change of op.allowedIps) {
      if (change.remove) {
        if (this.routes.remove(change.bytes, change.prefixLength, peer.id)) {
          routeChanges.remove(change.bytes, change.prefixLength, peer.id);
        }
      } else {
        this.routes.insert(change.bytes, change.prefixLength, peer.id);
        routeChanges.insert(change.bytes, change.prefixLength, peer.id);
      }
    }
    if (op.persistentKeepalive !== undefined) {
      peer.persistentKeepalive = op.persistentKeepalive;
      this.engine.setPersistentKeepalive(peer.id, op.persistentKeepalive, now);
    }
  }

  private addPeer(publicKey: Uint8Array): DevicePeer {
    // Checked before an id is taken. The engine keeps the key (as text); the device needs no copy.
    const key = toPublicKey(publicKey);
    // Freed ids are reused first, which keeps the peer table dense. (A freed id is always below
    // the table's capacity, so only a new one can overflow it.)
    const id = this.freePeerIds.pop() ?? this.nextPeerId;
    if (id >= this.fabric.peerTable.byteLength / (PEER_RECORD_F64S * 8)) {
      throw new UapiError(UAPI_ERRNO.unknown, 'uapi: the peer table is full');
    }
    if (id === this.nextPeerId) this.nextPeerId++;
    const peer: DevicePeer = { id, presharedKey: null, endpoint: null, persistentKeepalive: 0, lastHandshakeWallMs: 0 };
    this.stats.fill(0, id * PEER_RECORD_F64S, (id + 1) * PEER_RECORD_F64S);
    this.peersById.set(id, peer);
    this.engine.addPeer(id, this.shardOf(id), key, NO_PRESHARED_KEY);
    this.sendToWorker(id, { kind: 'addPeer', peer: id });
    return peer;
  }

  private removePeer(peer: DevicePeer, routeChanges: RouteChangeBatch): void {
    this.engine.removePeer(peer.id);
    this.routes.removePeer(peer.id);
    routeChanges.removePeer(peer.id);
    this.sendToWorker(peer.id, { kind: 'removePeer', peer: peer.id });
    this.peersById.delete(peer.id);
    this.freePeerIds.push(peer.id);
  }

  private peerWithKey(publicKey: Uint8Array): DevicePeer | undefined {
    const id = this.engine.peerIdOf(publicKey);
    return id === undefined ? undefined : this.peersById.get(id);
  }

  private setPeerEndpoint(peer: DevicePeer, endpoint: Endpoint): void {
    peer.endpoint = endpoint;
    this.engine.setEndpoint(peer.id, endpoint);
    this.sendToWorker(peer.id, { kind: 'endpoint', peer: peer.id, endpoint });
  }

  // ---- ICE mode ----------------------------------------------------------------------------------

  private startIce(options: IceModeOptions): void {
    if (options.listenPort !== 0) this.rebind(options.listenPort);
    const port = this.boundPort;
    const hostAddresses = Object.values(networkInterfaces())
      .flat()
      .filter((info) => info !== undefined && !info.internal && !(info.family === 'IPv6' && info.address.startsWith('fe80')))
      .map((info) => transportAddress(info!.address, port));
    this.ice = new IceConnections({ hostAddresses, stunServers: options.stunServers, relays: options.relays });
    this.postUdpReader({ kind: 'relays', servers: options.relays.map((relay) => endpointFromTransport(relay.server)) });
    this.ice.start(monotonicNow());
    this.pumpIce();
  }

  /**
   * Adds `publicKey` as a peer reached through ICE and starts its agent. Returns the peer id and
   * the ICE credentials to signal; the remote ones may be given now or later.
   */
  connect(publicKey: Uint8Array, allowedIps: readonly { bytes: Uint8Array; prefixLength: number }[], role: IceRole, remote: IceCredentials | null): { peer: number; credentials: IceCredentials } {
    const ice = this.requireIce();
    this.apply([{ kind: 'peer', publicKey, updateOnly: false, remove: false, replaceAllowedIps: true, allowedIps: allowedIps.map((cidr) => ({ ...cidr, remove: false })) }]);
    const peer = this.peerWithKey(publicKey);
    if (peer === undefined) throw new RangeError('device: that public key is our own');
    // ice-chars (RFC 8445 §5.3): base64 of 18 bytes is 24 of them, with no padding.
    const credentials = { ufrag: randomBytes(6).toString('hex'), pwd: randomBytes(18).toString('base64') };
    this.iceRoles.set(peer.id, role);
    ice.add(peer.id, role, credentials, remote, monotonicNow());
    this.pumpIce();
    return { peer: peer.id, credentials };
  }

  setRemoteCredentials(peer: number, remote: IceCredentials): void {
    this.requireIce().setRemoteCredentials(peer, remote);
    this.pumpIce();
  }

  addRemoteCandidate(peer: number, candidate: string): void {
    this.requireIce().addRemoteCandidate(peer, candidate);
    this.pumpIce();
  }

  private requireIce(): IceConnections {
    if (this.ice === null) throw new RangeError('device: not in ICE mode');
    return this.ice;
  }

  /** Moves the ICE side's output to the socket and its verdicts to the WireGuard peers. */
  private pumpIce(): void {
    const ice = this.ice;
    if (ice === null) return;
    const now = monotonicNow();
    for (let t = ice.pollTransmit(); t !== undefined; t = ice.pollTransmit()) {
      if (this.log.isLevelEnabled('debug')) this.log.debug({ to: t.to, bytes: t.bytes.length }, 'ice: transmit');
      this.transmit(endpointFromTransport(t.to), t.bytes);
    }
    for (let e = ice.pollEvent(); e !== undefined; e = ice.pollEvent()) {
      switch (e.kind) {
        case 'connected':
        case 'pathChanged': {
          const peer = this.peersById.get(e.peer);
          if (peer === undefined) break;
          this.log.info({ peer: e.peer, path: e.path, ...(e.kind === 'connected' ? { elapsedMs: e.elapsedMs } : {}) }, e.kind === 'connected' ? 'connection up' : 'connection path changed');
          this.setPeerEndpoint(peer, e.endpoint);
          // Firezone's rule: the controlling side (the client) starts WireGuard once ICE has a path.
          if (e.kind === 'connected' && this.iceRoles.get(e.peer) === 'controlling') this.engine.requestHandshake(e.peer, now);
          break;
        }
        case 'failed':
          this.log.warn({ peer: e.peer, reason: e.reason, ice: e.stats }, 'connection failed');
          this.tearDown(e.peer);
          break;
        case 'relayFailed':
          this.log.warn({ server: e.server, reason: e.reason }, 'relay allocation failed');
          break;
        case 'relayAllocated':
          this.log.info({ server: e.server, relayed: e.relayed }, 'relay allocated');
          break;
        case 'relayedDatagram':
          this.engine.handleHandshakeDatagram(e.bytes, e.bytes.length, e.via, now, false);
          continue;
        case 'localCandidate':
          break;
      }
      this.onConnectionEvent?.(e);
    }
    this.pump();
    if (this.iceTimer !== null) clearTimeout(this.iceTimer);
    const due = ice.pollTimeout();
    if (Number.isFinite(due) && this.stopping === null) {
      this.iceTimer = setTimeout(() => {
        this.iceTimer = null;
        ice.handleTimeout(monotonicNow());
        this.pumpIce();
      }, Math.max(0, due - now));
    }
  }

  /** A connection failed (ICE or WireGuard): the peer's sessions and path go, its configuration stays. */
  private tearDown(id: number): void {
    this.engine.resetPeer(id);
    this.ice?.remove(id);
    this.iceRoles.delete(id);
    this.sendToWorker(id, { kind: 'clearStaged', peer: id });
    this.pump();
  }

  // ---- threads -----------------------------------------------------------------------------------

  private shardOf(peer: number): number {
    return peer % this.options.workers;
  }

  private async startThreads(): Promise<void> {
    const init = (file: string, workerIndex: number, wakeFd: number): ThreadInit => ({
      fabric: this.fabric,
      udpFd: file === WORKER_FILE ? this.udpGroup.workerFds[workerIndex]! : this.socket.fd,
      tunFds: this.tun.fds,
      tunVnetHeader: this.tun.vnetHeader,
      tunUdpSegmentation: this.tun.udpSegmentation,
      commandSignals: this.commandSignals.buffer as SharedArrayBuffer,
      workerIndex,
      wakeFd,
      roaming: this.options.ice === undefined,
      keepWarmMs: this.options.keepWarmMs ?? DEFAULT_KEEP_WARM_MS,
      logLevel: this.options.logLevel,
      mtu: DEFAULT_MTU,
    });
    const ready: Promise<void>[] = [];
    const spawn = (file: string, workerIndex: number, wakeFd = -1): Worker => {
      const worker = new Worker(new URL(file, import.meta.url), { workerData: init(file, workerIndex, wakeFd), name: file, resourceLimits: { maxYoungGenerationSizeMb: PACKET_THREAD_YOUNG_GENERATION_MB } });
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.once('message', () => resolve());
          worker.once('error', reject);
        }),
      );
      worker.on('message', (notice: ControlNotice) => this.onNotice(notice));
      worker.on('error', (error) => {
        this.log.error({ err: error, thread: file }, 'packet thread failed');
        void this.stop('packet thread failed');
      });
      return worker;
    };
    for (let k = 0; k < this.options.workers; k++) this.workers.push(spawn(WORKER_FILE, k));
    this.udpReader = spawn('../workers/udp-reader.ts', 0, this.udpReaderWakeFd);
    await Promise.all(ready);
  }

  private sendToWorker(peer: number, command: WorkerCommand): void {
    this.postWorker(this.shardOf(peer), command);
  }

  private postWorker(index: number, command: WorkerCommand): void {
    this.workers[index]?.postMessage(command);
    Atomics.add(this.commandSignals, commandSignalIndex('worker', index, this.options.workers), 1);
    // Inside pump() (handshakes, timers) a waking futex call per command would cost more than the
    // commands: ring once per event-loop turn. The command is already visible to a thread that wakes
    // for packets, so a late ring delays nothing that the peer is waiting for.
    if (this.pumping) {
      this.pendingRings.add(index);
      if (!this.ringsScheduled) {
        this.ringsScheduled = true;
        setImmediate(() => this.ringPending());
      }
    } else this.workerDoorbells[index]?.ring();
  }

  private postUdpReader(command: UdpReaderCommand): void {
    this.udpReader?.postMessage(command);
    Atomics.add(this.commandSignals, commandSignalIndex('udpReader', 0, this.options.workers), 1);
    signalEventFd(this.udpReaderWakeFd);
  }

  private broadcastRoutes(batch: RouteChangeBatch): void {
    if (batch.count === 0) return;
    // One packed buffer, cloned once per thread (see RouteChanges).
    const changes = batch.finish();
    for (let k = 0; k < this.options.workers; k++) this.postWorker(k, { kind: 'routes', changes });
  }

  private onNotice(notice: ControlNotice): void {
    const now = monotonicNow();
    switch (notice.kind) {
      case 'requestHandshake':
        this.engine.requestHandshake(notice.peer, now);
        break;
      case 'endpoint': {
        const peer = this.peersById.get(notice.peer);
        if (peer !== undefined) {
          peer.endpoint = notice.endpoint;
          this.engine.setEndpoint(notice.peer, notice.endpoint);
        }
        break;
      }
      case 'sessionConfirmed':
        this.engine.sessionConfirmed(notice.peer);
        break;
      case 'drops':
        this.log.info({ thread: notice.thread, drops: notice.counts }, 'dropped packets');
        return;
      case 'ready':
        return;
      case 'fatal':
        this.log.error({ thread: notice.thread, reason: notice.message }, 'packet thread stopped');
        void this.stop(notice.message);
        return;
    }
    this.pump();
  }

  // ---- handshakes and timers ---------------------------------------------------------------------

  /** Drains handshake datagrams from the UDP reader, waiting on the control doorbell in between. */
  private async serveHandshakes(): Promise<void> {
    const link = this.control.fromUdp;
    while (this.stopping === null) {
      const inFlight = this.engine.handshakeJobsInFlight;
      if (inFlight >= MAX_HANDSHAKE_JOBS) {
        await new Promise<void>((resolve) => (this.handshakeProgress = resolve));
        continue;
      }
      const backlog = link.ring.size + inFlight;
      const now = monotonicNow();
      if (backlog >= HANDSHAKE_POOL_START_BACKLOG) this.startHandshakePool(now);
      if (backlog >= UNDER_LOAD_BACKLOG) this.underLoadUntil = now + UNDER_LOAD_AFTER_TIME_MS;
      const underLoad = now < this.underLoadUntil;
      // At most a ring's worth per turn, then let timers, UAPI and notices run: a flood of
      // handshake or STUN datagrams must not starve the rest of the control thread.
      let budget = Math.min(HANDSHAKE_BATCH, MAX_HANDSHAKE_JOBS - inFlight);
      for (let slot = link.ring.pop(); slot >= 0; slot = budget-- > 0 ? link.ring.pop() : -1) {
        const slab = link.slab;
        const family = slab.remoteFamily(slot) === 4 ? 4 : 6;
        const size = family === 4 ? 4 : 16;
        const local = slab.localAddressView(slot).slice(0, size);
        const from: Endpoint = {
          family,
          address: slab.remoteAddressView(slot).slice(0, size),
          port: slab.remotePort(slot),
          localAddress: local.every((b) => b === 0) ? null : local,
          localIfindex: slab.localIfindex(slot),
        };
        const payload = slab.payloadView(slot);
        const length = slab.payloadLength(slot);
        if (this.ice !== null && !isWireGuardHandshake(payload, length)) {
          // The local side: the address it arrived on (pktinfo) at our socket's port.
          const arrivedOn = from.localAddress === null ? null : transportFromEndpoint({ ...from, address: from.localAddress, port: this.boundPort });
          const source = transportFromEndpoint(from);
          const accepted = this.ice.handleDatagram(payload.slice(0, length), source, arrivedOn, now);
          if (this.log.isLevelEnabled('debug')) this.log.debug({ from: source, arrivedOn, bytes: length, accepted }, 'ice: datagram');
          returnSlot(link, slot);
          this.pumpIce();
          continue;
        }
        this.engine.handleHandshakeDatagram(payload, length, from, now, underLoad);
        returnSlot(link, slot);
        this.pump();
      }
      if (budget < 0) await new Promise((resolve) => setImmediate(resolve));
      else await waitForWorkAsync(this.control.doorbell, 1_000, this.control.hasWork);
    }
  }

  private scheduleTick(delayMs: number): void {
    this.tickIdle = delayMs > TICK_MS;
    this.tick = setTimeout(() => this.onTick(), delayMs);
  }

  /** Any engine input ends an idle gap between ticks: its timers may now be due within one tick. */
  private endIdleTicks(): void {
    if (!this.tickIdle || this.tick === null) return;
    clearTimeout(this.tick);
    this.scheduleTick(TICK_MS);
  }

  private onTick(): void {
    // This timer has fired: the pump below must not schedule another one (endIdleTicks).
    this.tick = null;
    const now = monotonicNow();
    let moved = false;
    for (const peer of this.peersById.values()) {
      const r = peer.id * PEER_RECORD_F64S;
      const observed = this.observed;
      observed.txData = this.stats[r + PEER_TX_DATA_PACKETS_F64]!;
      observed.txAny = this.stats[r + PEER_TX_ANY_PACKETS_F64]!;
      observed.rxData = this.stats[r + PEER_RX_DATA_PACKETS_F64]!;
      observed.rxAny = this.stats[r + PEER_RX_ANY_PACKETS_F64]!;
      if (this.engine.observeCounters(peer.id, observed, now)) moved = true;
    }
    const deadline = this.engine.pollTimeout();
    if (deadline <= now) this.engine.handleTimeout(now);
    this.pump();
    this.stopIdleHandshakePool(now);
    this.reportControlDrops(now);
    if (this.stopping !== null) return;
    const idle = !moved && deadline > now && this.engine.handshakeJobsInFlight === 0;
    this.scheduleTick(idle ? Math.min(IDLE_TICK_MS, Math.max(TICK_MS, deadline - now)) : TICK_MS);
  }

  /** Logs the control thread's drop counters (handshakes, ICE, TURN) when they changed. */
  private reportControlDrops(now: number): void {
    if (now - this.lastDropReportAt < DROP_REPORT_INTERVAL_MS) return;
    const counts = { ...this.engine.drops, ...this.ice?.dropCounts() };
    const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
    if (total === this.lastDropTotal) return;
    this.lastDropReportAt = now;
    this.lastDropTotal = total;
    this.log.info({ thread: 'control', drops: counts }, 'dropped packets');
  }

  /** Moves the engine's output to the socket, to the owning workers and to the handshake pool. */
  private pump(): void {
    this.endIdleTicks();
    // Commands first: a responder's keys must reach its worker before the response leaves, or the
    // initiator's first data packet could get there ahead of them.
    this.pumping = true;
    try {
      for (let e = this.engine.pollEvent(); e !== undefined; e = this.engine.pollEvent()) this.dispatch(e);
    } finally {
      this.pumping = false;
    }
    // Under a handshake storm a pump has many responses: one sendmmsg each batch, not a sendmsg each.
    let staged = 0;
    for (let t = this.engine.pollTransmit(); t !== undefined; t = this.engine.pollTransmit()) {
      this.stage(staged++, t.to, t.bytes);
      if (staged === DEFAULT_BATCH_SIZE) staged = this.sendStaged(staged);
    }
    if (staged > 0) this.sendStaged(staged);
    const pool = this.handshakePool;
    if (pool !== null) for (let j = this.engine.pollHandshakeJob(); j !== undefined; j = this.engine.pollHandshakeJob()) pool.submit(j);
  }

  private startHandshakePool(now: number): void {
    if (this.handshakePool !== null || this.handshakePoolStarting || this.handshakePoolFailed || this.handshakeThreads === 0) return;
    // From here the tick keeps this fresh while jobs are out (stopIdleHandshakePool).
    this.lastHandshakeJobAt = now;
    this.handshakePoolStarting = true;
    HandshakePool.start({
      threads: this.handshakeThreads,
      onResults: (results) => this.onHandshakeResults(results),
      onError: (error) => {
        this.log.error({ err: error }, 'handshake thread failed');
        void this.stop('handshake thread failed');
      },
    }).then((pool) => {
      this.handshakePoolStarting = false;
      if (this.stopping !== null) {
        void pool.close();
        return;
      }
      this.handshakePool = pool;
      this.engine.setOffloadHandshakeCrypto(true);
      this.log.info({ threads: this.handshakeThreads }, 'handshake pool started');
    }, (error: unknown) => {
      this.handshakePoolStarting = false;
      this.handshakePoolFailed = true;
      this.log.error({ err: error }, 'handshake pool failed to start; handshakes stay on the control thread');
    });
  }

  /** Stops an idle pool (from the tick): nothing is out, so nothing can come back to a closed pool. */
  private stopIdleHandshakePool(now: number): void {
    const pool = this.handshakePool;
    if (pool === null) return;
    if (this.engine.handshakeJobsInFlight > 0) this.lastHandshakeJobAt = now;
    if (now - this.lastHandshakeJobAt < HANDSHAKE_POOL_IDLE_MS) return;
    this.engine.setOffloadHandshakeCrypto(false);
    this.handshakePool = null;
    void pool.close();
    this.log.info({}, 'handshake pool stopped (idle)');
  }

  private ringPending(): void {
    this.ringsScheduled = false;
    for (const index of this.pendingRings) this.workerDoorbells[index]?.ring();
    this.pendingRings.clear();
  }

  private onHandshakeResults(results: readonly HandshakeJobResult[]): void {
    if (this.stopping !== null) return;
    const now = monotonicNow();
    for (const result of results) this.engine.completeHandshakeJob(result, now);
    this.pump();
    const progress = this.handshakeProgress;
    this.handshakeProgress = null;
    progress?.();
  }

  private dispatch(event: EngineEvent): void {
    const peer = this.peersById.get(event.peer);
    if (peer === undefined) return;
    switch (event.kind) {
      case 'handshakeComplete':
        peer.lastHandshakeWallMs = event.wallMs;
        return;
      case 'endpoint':
        peer.endpoint = event.endpoint;
        this.sendToWorker(event.peer, event);
        return;
      case 'clearStaged':
        this.sendToWorker(event.peer, event);
        // The handshake gave up: in ICE mode the connection fails as a whole (ICE ∧ WireGuard).
        if (this.ice !== null && this.iceRoles.has(event.peer)) {
          this.log.warn({ peer: event.peer, reason: 'wireguard: handshake did not complete' }, 'connection failed');
          this.onConnectionEvent?.({ kind: 'failed', peer: event.peer, reason: 'wireguard: handshake did not complete' });
          this.tearDown(event.peer);
        }
        return;
      default:
        this.sendToWorker(event.peer, event);
    }
  }

  private transmit(to: Endpoint, payload: Uint8Array): void {
    this.stage(0, to, payload);
    this.sendStaged(1);
  }

  /** Puts a datagram for `to` at position `index` of the next sendStaged. */
  private stage(index: number, to: Endpoint, payload: Uint8Array): void {
    let bytes = payload;
    if (to.relayChannel !== undefined && to.relayChannel !== 0) {
      // Through our TURN allocation: a ChannelData header in front (RFC 8656 §12.4).
      bytes = new Uint8Array(CHANNEL_DATA_HEADER_BYTES + payload.length);
      writeChannelDataHeader(bytes, 0, to.relayChannel, payload.length);
      bytes.set(payload, CHANNEL_DATA_HEADER_BYTES);
    }
    const meta = this.sendMeta;
    meta.setLength(index, bytes.length);
    meta.setRemote(index, to.family, to.address, to.port);
    if (to.localAddress === null) meta.clearLocal(index);
    else meta.setLocal(index, to.family, to.localAddress, to.localIfindex);
    this.sendViews[index] = bytes;
    this.sendHasSource[index] = to.localAddress !== null;
  }

  /** Sends the first `count` staged datagrams; returns 0 (the next stage index). */
  private sendStaged(count: number): number {
    const meta = this.sendMeta;
    // Datagrams past `done` met a full socket buffer and are dropped, as a lone send's would be.
    const done = this.socket.sendBatch(this.sendViews, meta, count);
    for (let i = 0; i < done; i++) {
      if (this.sendHasSource[i] && sourceMayBeStale(meta.status(i))) {
        // The sticky source address is gone: let the kernel choose (wireguard-go does the same).
        meta.clearLocal(i);
        this.socket.sendOne(this.sendViews[i]!, meta, i);
      }
    }
    this.sendViews.length = 0;
    return 0;
  }

  private pollLink(): void {
    let events;
    try {
      events = this.linkWatcher.read();
    } catch (error) {
      this.log.warn({ err: error }, 'link watcher failed');
      return;
    }
    for (const event of events) {
      if (event.kind === 'deleted') {
        this.log.info({ interface: this.options.interfaceName }, 'interface deleted');
        void this.stop('interface deleted');
        return;
      }
      if (event.kind === 'mtu' || event.kind === 'overrun') {
        let mtu: number;
        try {
          mtu = event.kind === 'mtu' ? event.mtu : this.tun.mtu();
        } catch {
          continue;
        }
        this.log.info({ mtu }, 'interface MTU changed');
        for (let k = 0; k < this.options.workers; k++) this.postWorker(k, { kind: 'mtu', mtu });
      }
    }
  }

  // ---- shutdown ----------------------------------------------------------------------------------

  stop(reason: string): Promise<void> {
    if (this.stopping !== null) return this.stopping;
    this.stopping = this.shutdown(reason);
    return this.stopping;
  }

  private async shutdown(reason: string): Promise<void> {
    this.log.info({ reason }, 'device stopping');
    if (this.tick !== null) clearTimeout(this.tick);
    this.tick = null;
    if (this.ice !== null) {
      // Release the relay allocations (best effort: the datagrams leave before the socket closes).
      this.ice.close(monotonicNow());
      this.pumpIce();
      if (this.iceTimer !== null) clearTimeout(this.iceTimer);
    }
    if (this.linkPoll !== null) clearInterval(this.linkPoll);
    await this.uapi?.close();
    await this.handshakePool?.close();
    this.handshakeProgress?.();
    const threads = this.udpReader === null ? [...this.workers] : [...this.workers, this.udpReader];
    const exited = threads.map((t) => new Promise<void>((resolve) => t.once('exit', () => resolve())));
    for (let k = 0; k < this.workers.length; k++) this.postWorker(k, { kind: 'stop' });
    this.postUdpReader({ kind: 'stop' });
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, THREAD_STOP_TIMEOUT_MS).unref());
    await Promise.race([Promise.all(exited), timeout]);
    for (const thread of threads) void thread.terminate();
    this.linkWatcher.close();
    closeFd(this.udpReaderWakeFd);
    this.udpGroup.close();
    this.tun.close();
    this.resolveStopped();
  }
}

/** $ZTGATE_HANDSHAKE_THREADS when set (0 turns the pool off), else the cores, at most 2. */
function handshakeThreadsFromEnv(): number {
  const text = process.env['ZTGATE_HANDSHAKE_THREADS'];
  if (text === undefined || text === '') return Math.min(2, availableParallelism());
  const threads = Number(text);
  if (!(Number.isInteger(threads) && threads >= 0 && threads <= 64)) {
    throw new RangeError(`device: ZTGATE_HANDSHAKE_THREADS must be an integer from 0 to 64, got ${JSON.stringify(text)}`);
  }
  return threads;
}

/** A start-up failure worth a one-line message rather than a stack trace. */
export function describeStartError(error: unknown): string {
  if (error instanceof SyscallError && error.errno === 16) return 'the interface is in use by another process';
  if (error instanceof ZtgateError) return error.message;
  return error instanceof Error ? error.message : String(error);
}

/** Public keys are not secret: a plain comparison will do. */
function keysEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A WireGuard handshake-class message by type, size and zero reserved bytes (whitepaper §5.4). */
function isWireGuardHandshake(payload: Uint8Array, length: number): boolean {
  if (length < 4 || payload[1] !== 0 || payload[2] !== 0 || payload[3] !== 0) return false;
  const type = payload[0];
  return (type === MESSAGE_INITIATION && length === MESSAGE_INITIATION_SIZE)
    || (type === MESSAGE_RESPONSE && length === MESSAGE_RESPONSE_SIZE)
    || (type === MESSAGE_COOKIE_REPLY && length === MESSAGE_COOKIE_REPLY_SIZE);
}
