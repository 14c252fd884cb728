// An in-memory stand-in for the device behind the UAPI socket, for the server tests: it applies
// operations with wireguard-go's semantics (peers in creation order, an allowed IP belongs to one
// peer at a time) and reports them back as snapshots. Not a test file itself.

import type { Cidr, DeviceSnapshot, PeerSnapshot, SetOperation, UapiEndpoint } from '../../src/uapi/protocol.ts';
import { UAPI_ERRNO, UapiError } from '../../src/uapi/protocol.ts';

interface FakePeer {
  publicKey: Uint8Array;
  presharedKey: Uint8Array | null;
  endpoint: string | null;
  persistentKeepalive: number;
  lastHandshakeMs: number;
  txBytes: number;
  rxBytes: number;
  /** Prefix key → prefix, in insertion order. */
  allowedIps: Map<string, Cidr>;
}

export class FakeDevice {
  privateKey: Uint8Array | null = null;
  listenPort = 0;
  fwmark = 0;
  readonly peers = new Map<string, FakePeer>();
  /** Prefix key → owning peer's hex key. */
  readonly #owners = new Map<string, string>();
  /** Ports that fail as if another socket held them. */
  readonly busyPorts = new Set<number>();
  applyCount = 0;

  snapshot(): DeviceSnapshot {
    const peers: PeerSnapshot[] = [];
    for (const peer of this.peers.values()) {
      peers.push({
        publicKey: peer.publicKey,
        presharedKey: peer.presharedKey,
        endpoint: peer.endpoint,
        lastHandshakeMs: peer.lastHandshakeMs,
        txBytes: peer.txBytes,
        rxBytes: peer.rxBytes,
        persistentKeepalive: peer.persistentKeepalive,
        allowedIps: [...peer.allowedIps.values()],
      });
    }
    return { privateKey: this.privateKey, listenPort: this.listenPort, fwmark: this.fwmark, peers };
  }

  apply(operations: Iterable<SetOperation>): void {
    for (const operation of operations) {
      if (operation.kind === 'listenPort' && this.busyPorts.has(operation.port)) {
        throw new UapiError(UAPI_ERRNO.portInUse, `fake: port ${operation.port} is in use`);
      }
    }
    this.applyCount++;
    for (const operation of operations) {
      switch (operation.kind) {
        case 'privateKey':
          this.privateKey = operation.key;
          break;
        case 'listenPort':
          this.listenPort = operation.port;
          break;
        case 'fwmark':
          this.fwmark = operation.value;
          break;
        case 'replacePeers':
          for (const id of [...this.peers.keys()]) this.#removePeer(id);
          break;
        case 'peer':
          this.#applyPeer(operation);
          break;
      }
    }
  }

  #applyPeer(operation: Extract<SetOperation, { kind: 'peer' }>): void {
    const id = Buffer.from(operation.publicKey).toString('hex');
    if (operation.remove) {
      this.#removePeer(id);
      return;
    }
    let peer = this.peers.get(id);
    if (peer === undefined) {
      if (operation.updateOnly) return;
      peer = {
        publicKey: operation.publicKey,
        presharedKey: null,
        endpoint: null,
        persistentKeepalive: 0,
        lastHandshakeMs: 0,
        txBytes: 0,
        rxBytes: 0,
        allowedIps: new Map(),
      };
      this.peers.set(id, peer);
    }
    if (operation.presharedKey !== undefined) peer.presharedKey = operation.presharedKey;
    if (operation.endpoint !== undefined) peer.endpoint = formatFakeEndpoint(operation.endpoint);
    if (operation.persistentKeepalive !== undefined) peer.persistentKeepalive = operation.persistentKeepalive;
    if (operation.replaceAllowedIps) {
      for (const key of peer.allowedIps.keys()) this.#owners.delete(key);
      peer.allowedIps.clear();
    }
    for (const change of operation.allowedIps) {
      const key = `${change.bytes.join('.')}/${change.prefixLength}`;
      const owner = this.#owners.get(key);
      if (change.remove) {
        if (owner === id) {
          this.#owners.delete(key);
          peer.allowedIps.delete(key);
        }
        continue;
      }
      if (owner !== undefined && owner !== id) this.peers.get(owner)?.allowedIps.delete(key);
      this.#owners.set(key, id);
      peer.allowedIps.set(key, { bytes: change.bytes, prefixLength: change.prefixLength });
    }
  }

  #removePeer(id: string): void {
    const peer = this.peers.get(id);
    if (peer === undefined) return;
    for (const key of peer.allowedIps.keys()) this.#owners.delete(key);
    this.peers.delete(id);
  }
}

function formatFakeEndpoint(endpoint: UapiEndpoint): string {
  if (endpoint.family === 4) return `${endpoint.address.join('.')}:${endpoint.port}`;
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((endpoint.address[i] << 8) | endpoint.address[i + 1]).toString(16));
  return `[${words.join(':')}${endpoint.zone === undefined ? '' : `%${endpoint.zone}`}]:${endpoint.port}`;
}
