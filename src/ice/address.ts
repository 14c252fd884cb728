// Transport addresses as ICE handles them: canonical text (RFC 5952 for IPv6) plus a port, so
// that an address learnt from XOR-MAPPED-ADDRESS, one parsed from a candidate line and one the
// caller hands in compare equal whenever they name the same socket.
import { parseCidr } from '../wireguard/allowedips.ts';
import { formatIpv4, formatIpv6 } from '../wireguard/endpoint.ts';

export interface TransportAddress {
  readonly family: 4 | 6;
  /** Canonical text: dotted quad, or RFC 5952 IPv6 (no zone, no brackets). */
  readonly address: string;
  readonly port: number;
}

/** The canonical form of `address`:`port`, or null when either is not valid. */
export function canonicalTransportAddress(address: string, port: number): TransportAddress | null {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) return null;
  if (typeof address !== 'string' || address.includes('/') || address.length > 45) return null;
  let bytes: Uint8Array;
  try {
    bytes = parseCidr(address).bytes;
  } catch {
    return null;
  }
  return bytes.length === 4
    ? { family: 4, address: formatIpv4(bytes), port }
    : { family: 6, address: formatIpv6(bytes), port };
}

/** Like canonicalTransportAddress but for caller input: a bad address is a programming error. */
export function transportAddress(address: string, port: number): TransportAddress {
  const canonical = canonicalTransportAddress(address, port);
  if (canonical === null) throw new RangeError(`ice: '${address}' port ${port} is not a valid transport address`);
  return canonical;
}

/** A map key naming the socket: "4/192.0.2.1/3478". Inputs must be canonical. */
export function addressKey(a: TransportAddress): string {
  return `${a.family}/${a.address}/${a.port}`;
}

export function sameTransportAddress(a: TransportAddress, b: TransportAddress): boolean {
  return a.family === b.family && a.port === b.port && a.address === b.address;
}

export function formatTransportAddress(a: TransportAddress): string {
  return a.family === 4 ? `${a.address}:${a.port}` : `[${a.address}]:${a.port}`;
}
