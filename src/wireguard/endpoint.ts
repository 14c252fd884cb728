// A UDP endpoint: where a peer's datagrams come from and go to, plus the local address they
// arrived on (so replies leave from it, as wireguard-go's "sticky source" does).

export interface Endpoint {
  readonly family: 4 | 6;
  /** 4 bytes for IPv4, 16 for IPv6. */
  readonly address: Uint8Array;
  readonly port: number;
  /** The local address the peer's last packet arrived on (same family), or null to let the kernel choose. */
  readonly localAddress: Uint8Array | null;
  /** The interface that local address belongs to (0 when unknown). */
  readonly localIfindex: number;
  /**
   * Non-zero when datagrams go through our TURN allocation: `address`/`port` are then the relay
   * server's, and each datagram is wrapped in ChannelData with this channel number (RFC 8656 §12).
   */
  readonly relayChannel?: number;
}

export function endpointsEqual(a: Endpoint | null, b: Endpoint | null): boolean {
  if (a === null || b === null) return a === b;
  return a.family === b.family && a.port === b.port && (a.relayChannel ?? 0) === (b.relayChannel ?? 0) && bytesEqual(a.address, b.address);
}

/** Same remote and same local source: nothing to tell anyone. */
export function endpointsIdentical(a: Endpoint | null, b: Endpoint | null): boolean {
  if (!endpointsEqual(a, b) || a === null || b === null) return endpointsEqual(a, b);
  if (a.localAddress === null || b.localAddress === null) return a.localAddress === b.localAddress;
  return a.localIfindex === b.localIfindex && bytesEqual(a.localAddress, b.localAddress);
}

/** `wg` shows a relayed peer at its relay server's address (where our datagrams go). */
export function formatEndpoint(endpoint: Endpoint): string {
  const host = endpoint.family === 4 ? formatIpv4(endpoint.address) : `[${formatIpv6(endpoint.address)}]`;
  return `${host}:${endpoint.port}`;
}

/** The bytes MAC2/cookies bind to (whitepaper §5.4.7): the source IP then the port, big-endian. */
export function endpointCookieSource(endpoint: Endpoint): Uint8Array {
  const out = new Uint8Array(endpoint.address.length + 2);
  out.set(endpoint.address, 0);
  out[endpoint.address.length] = endpoint.port >>> 8;
  out[endpoint.address.length + 1] = endpoint.port & 0xff;
  return out;
}

export function formatIpv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

/** RFC 5952 text form: lowercase, longest run of two or more zero groups compressed to `::`. */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatIpv4(bytes.subarray(12, 16))}`;
  }
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength && j - i >= 2) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
