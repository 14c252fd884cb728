// The WireGuard cross-platform configuration protocol (https://www.wireguard.com/xplatform/), the
// text protocol `wg(8)` speaks to a userspace implementation over /var/run/wireguard/<ifname>.sock.
// Sans-IO: framing of the byte stream into requests, parsing of `set=1` bodies into typed
// operations, and serialization of `get=1` replies. Behaviour follows wireguard-go's
// device/uapi.go, with one deliberate difference: a `set=1` body is validated completely before
// anything is applied, so a malformed request leaves the configuration untouched (wireguard-go
// applies line by line and stops at the first bad line, keeping what came before it).

import { ZtgateError } from '../errors.ts';
import { parseCidr } from '../wireguard/allowedips.ts';
import { KEY_SIZE } from '../wireguard/constants.ts';
import { formatIpv4, formatIpv6 } from '../wireguard/endpoint.ts';

/**
 * The errno values a reply carries, negated as wireguard-go's ipc/uapi_unix.go prints them
 * (`errno=-22`); wg(8) turns them back into strerror text ("Invalid argument").
 */
export const UAPI_ERRNO = {
  /** EIO: the request could not be read (wireguard-go: scanner failure; here also: too large). */
  io: -5,
  /** EINVAL: an unknown key or a value that does not parse. */
  invalid: -22,
  /** EPROTO: a line that is not `key=value`. */
  protocol: -71,
  /** EADDRINUSE: the listen port or fwmark could not be applied to the socket. */
  portInUse: -98,
  /** ENOANO: any other failure (wireguard-go's ipcErrorUnknown). */
  unknown: -55,
} as const;

export type UapiErrno = (typeof UAPI_ERRNO)[keyof typeof UAPI_ERRNO];

/** A request that fails; `errno` is what the reply's `errno=` line carries. */
export class UapiError extends ZtgateError {
  readonly errno: UapiErrno;
  constructor(errno: UapiErrno, message: string, options?: ErrorOptions) {
    super('ZTGATE_ERR_UAPI', message, options);
    this.errno = errno;
  }
}

// ---- Types ----

/** An IP prefix: 4 or 16 address bytes and a prefix length (host bits cleared when parsed here). */
export interface Cidr {
  readonly bytes: Uint8Array;
  readonly prefixLength: number;
}

/** One `allowed_ip=` line: `remove` for the `-prefix` form (delete this one prefix from the peer). */
export interface AllowedIpChange extends Cidr {
  readonly remove: boolean;
}

export interface UapiEndpoint {
  readonly family: 4 | 6;
  readonly address: Uint8Array;
  readonly port: number;
  /**
   * IPv6 scope (`[fe80::1%eth0]:51820`): a decimal interface index or an interface name, resolved by
   * whoever opens the socket (resolving a name is I/O). Absent when the address had no `%zone`.
   */
  readonly zone?: string;
}

/**
 * One peer section of a `set=1` request (from its `public_key=` line to the next), with the
 * order-dependent lines already folded as wireguard-go would apply them in sequence:
 * - `remove`: the peer is removed; the other fields are then empty (lines after `remove=true`
 *   act on a placeholder in wireguard-go, lines before it on a peer that is then deleted).
 * - `updateOnly`: apply the section only if the peer already exists; never create it.
 * - `replaceAllowedIps`: drop every allowed IP the peer had, then apply `allowedIps` in order
 *   (changes listed before `replace_allowed_ips=true` in the same section are already dropped).
 * - `presharedKey`/`endpoint`/`persistentKeepalive`: the last value given, absent if none was;
 *   `presharedKey: null` is the all-zero key, meaning "no pre-shared key".
 * Left to the applier: a section whose public key is the device's own is ignored (wireguard-go
 * treats it as a placeholder), and an allowed IP moves from whichever peer held it before.
 */
export interface PeerOperation {
  readonly kind: 'peer';
  readonly publicKey: Uint8Array;
  readonly updateOnly: boolean;
  readonly remove: boolean;
  readonly presharedKey?: Uint8Array | null;
  readonly endpoint?: UapiEndpoint;
  /** Seconds, 0 = off. */
  readonly persistentKeepalive?: number;
  readonly replaceAllowedIps: boolean;
  readonly allowedIps: readonly AllowedIpChange[];
}

/** Device lines come first, in request order; `privateKey: null` (all-zero key) clears the key. */
export type SetOperation =
  | { readonly kind: 'privateKey'; readonly key: Uint8Array | null }
  | { readonly kind: 'listenPort'; readonly port: number }
  | { readonly kind: 'fwmark'; readonly value: number }
  | { readonly kind: 'replacePeers' }
  | PeerOperation;

export interface DeviceSnapshot {
  readonly privateKey: Uint8Array | null;
  /** 0 when not bound (the line is then left out, as wireguard-go does). */
  readonly listenPort: number;
  readonly fwmark: number;
  /** Iterated once, by formatGet; a device may produce them lazily, one at a time. */
  readonly peers: Iterable<PeerSnapshot>;
}

export interface PeerSnapshot {
  readonly publicKey: Uint8Array;
  readonly presharedKey: Uint8Array | null;
  /** Already formatted: `a.b.c.d:port` or `[v6]:port`. */
  readonly endpoint: string | null;
  /** Epoch milliseconds of the last completed handshake, 0 = never. */
  readonly lastHandshakeMs: number;
  readonly txBytes: number;
  readonly rxBytes: number;
  readonly persistentKeepalive: number;
  readonly allowedIps: readonly Cidr[];
}

// ---- set=1 ----

const MAX_PORT = 0xffff;
const MAX_FWMARK = 0xffff_ffff;
const MAX_KEEPALIVE = 0xffff;
/** Longest excerpt of an offending line quoted in an error message. */
const QUOTE_LIMIT = 80;

interface PeerDraft {
  publicKey: Uint8Array;
  updateOnly: boolean;
  remove: boolean;
  presharedKey: Uint8Array | null | undefined;
  endpoint: UapiEndpoint | undefined;
  persistentKeepalive: number | undefined;
  replaceAllowedIps: boolean;
  allowedIps: AllowedIpChange[];
}

/**
 * Parses the lines of a `set=1` request (everything after the `set=1` line, without the blank line
 * that ends the request; each line ends in `\n`, one trailing `\r` is ignored as Go's line scanner
 * does). Every line is validated before this returns, so callers apply all or nothing.
 * @throws UapiError with errno -71 (a line without `=`, a blank line) or -22 (anything else).
 */
export function parseSet(body: string): SetOperation[] {
  return [...setOperations(body)];
}

/**
 * The operations of a `set=1` body (as parseSet reads them), parsed again each time they are
 * iterated rather than held all at once. A handler iterates once to the end before changing
 * anything (that pass throws parseSet's UapiError at the first bad line), then again to apply.
 * Why: with ten thousand peers the parsed request is megabytes of small objects; held for the
 * whole of the apply, they outlive the young generation and stay in the old one as garbage
 * (measured: about 1 KiB per peer of resident memory after a `wg setconf`). Parsed one section
 * at a time, each dies young.
 */
export function setOperations(body: string): Iterable<SetOperation> {
  if (typeof body !== 'string') throw new TypeError('uapi: a set request body must be a string');
  return { [Symbol.iterator]: () => parseOperations(body) };
}

function* parseOperations(body: string): Generator<SetOperation, void, undefined> {
  let peer: PeerDraft | null = null;
  // Line by line with indexOf: splitting would hold every line of the body at once.
  for (let index = 0, start = 0; start < body.length; index++) {
    const newline = body.indexOf('\n', start);
    const end = newline === -1 ? body.length : newline;
    const raw = body.slice(start, end);
    start = end + 1;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    let finished: SetOperation | null = null;
    try {
      if (line === '') {
        throw new UapiError(UAPI_ERRNO.protocol, 'uapi: blank line inside a set request');
      }
      const equals = line.indexOf('=');
      if (equals === -1) throw new UapiError(UAPI_ERRNO.protocol, 'uapi: expected key=value');
      const key = line.slice(0, equals);
      const value = line.slice(equals + 1);
      if (key === 'public_key') {
        if (peer !== null) finished = finishPeer(peer);
        peer = newPeerDraft(parseKey(value, 'public_key'));
      } else if (peer === null) {
        finished = parseDeviceLine(key, value);
      } else {
        applyPeerLine(peer, key, value);
      }
    } catch (error) {
      if (!(error instanceof UapiError)) throw error;
      throw new UapiError(error.errno, `${error.message} (line ${index + 1}: ${quote(line)})`, { cause: error });
    }
    if (finished !== null) yield finished;
  }
  if (peer !== null) yield finishPeer(peer);
}

function parseDeviceLine(key: string, value: string): SetOperation {
  switch (key) {
    case 'private_key': {
      const privateKey = parseKey(value, 'private_key');
      return { kind: 'privateKey', key: isZero(privateKey) ? null : privateKey };
    }
    case 'listen_port':
      return { kind: 'listenPort', port: parseUnsigned(value, MAX_PORT, 'listen_port') };
    case 'fwmark':
      return { kind: 'fwmark', value: parseUnsigned(value, MAX_FWMARK, 'fwmark') };
    case 'replace_peers':
      parseTrue(value, 'replace_peers');
      return { kind: 'replacePeers' };
    default:
      throw new UapiError(UAPI_ERRNO.invalid, `uapi: invalid device key '${truncate(key)}'`);
  }
}

function newPeerDraft(publicKey: Uint8Array): PeerDraft {
  return {
    publicKey,
    updateOnly: false,
    remove: false,
    presharedKey: undefined,
    endpoint: undefined,
    persistentKeepalive: undefined,
    replaceAllowedIps: false,
    allowedIps: [],
  };
}

/** Lines are validated even after `remove=true`, where they no longer change anything. */
function applyPeerLine(peer: PeerDraft, key: string, value: string): void {
  switch (key) {
    case 'update_only':
      parseTrue(value, 'update_only');
      peer.updateOnly = true;
      return;
    case 'remove':
      parseTrue(value, 'remove');
      peer.remove = true;
      return;
    case 'preshared_key': {
      const presharedKey = parseKey(value, 'preshared_key');
      peer.presharedKey = isZero(presharedKey) ? null : presharedKey;
      return;
    }
    case 'endpoint':
      peer.endpoint = parseEndpoint(value);
      return;
    case 'persistent_keepalive_interval':
      peer.persistentKeepalive = parseUnsigned(value, MAX_KEEPALIVE, 'persistent_keepalive_interval');
      return;
    case 'replace_allowed_ips':
      parseTrue(value, 'replace_allowed_ips');
      peer.replaceAllowedIps = true;
      peer.allowedIps = [];
      return;
    case 'allowed_ip': {
      const remove = value.startsWith('-');
      peer.allowedIps.push({ ...parsePrefix(remove ? value.slice(1) : value), remove });
      return;
    }
    case 'protocol_version':
      if (value !== '1') {
        throw new UapiError(UAPI_ERRNO.invalid, `uapi: protocol_version must be 1, got '${truncate(value)}'`);
      }
      return;
    default:
      throw new UapiError(UAPI_ERRNO.invalid, `uapi: invalid peer key '${truncate(key)}'`);
  }
}

function finishPeer(peer: PeerDraft): PeerOperation {
  if (peer.remove) {
    return {
      kind: 'peer',
      publicKey: peer.publicKey,
      updateOnly: peer.updateOnly,
      remove: true,
      replaceAllowedIps: false,
      allowedIps: [],
    };
  }
  return {
    kind: 'peer',
    publicKey: peer.publicKey,
    updateOnly: peer.updateOnly,
    remove: false,
    ...(peer.presharedKey !== undefined && { presharedKey: peer.presharedKey }),
    ...(peer.endpoint !== undefined && { endpoint: peer.endpoint }),
    ...(peer.persistentKeepalive !== undefined && { persistentKeepalive: peer.persistentKeepalive }),
    replaceAllowedIps: peer.replaceAllowedIps,
    allowedIps: peer.allowedIps,
  };
}

const HEX_KEY = /^[0-9a-fA-F]{64}$/;

/** 64 hex digits (Go's hex.DecodeString, which wireguard-go uses, takes either case). */
function parseKey(value: string, name: string): Uint8Array {
  if (!HEX_KEY.test(value)) {
    throw new UapiError(UAPI_ERRNO.invalid, `uapi: ${name} must be ${KEY_SIZE * 2} hex digits`);
  }
  const key = new Uint8Array(KEY_SIZE);
  for (let i = 0; i < KEY_SIZE; i++) key[i] = (hexDigit(value.charCodeAt(2 * i)) << 4) | hexDigit(value.charCodeAt(2 * i + 1));
  return key;
}

/** The value of an ASCII hex digit already matched by HEX_KEY. */
function hexDigit(code: number): number {
  return code <= 0x39 ? code - 0x30 : (code | 0x20) - 0x57;
}

const DECIMAL = /^[0-9]+$/;

/** Go's strconv.ParseUint(value, 10, bits): decimal digits only (leading zeros allowed, no sign). */
function parseUnsigned(value: string, max: number, name: string): number {
  const number = DECIMAL.test(value) ? Number(value) : Number.NaN;
  if (!(number <= max)) {
    throw new UapiError(UAPI_ERRNO.invalid, `uapi: ${name} must be an integer in 0..${max}, got '${truncate(value)}'`);
  }
  return number;
}

function parseTrue(value: string, name: string): void {
  if (value !== 'true') {
    throw new UapiError(UAPI_ERRNO.invalid, `uapi: ${name} only takes 'true', got '${truncate(value)}'`);
  }
}

/** Prefix lengths as Go's netip.ParsePrefix reads them: decimal without sign or leading zeros. */
const PREFIX_LENGTH = /^(?:0|[1-9][0-9]{0,2})$/;

/**
 * `addr/len` as Go's netip.ParsePrefix accepts it (the `/len` is required, no IPv6 zone), with the
 * host bits cleared, which is what wireguard-go's table stores and reports.
 */
function parsePrefix(text: string): Cidr {
  const slash = text.indexOf('/');
  if (slash === -1 || !PREFIX_LENGTH.test(text.slice(slash + 1)) || text.includes('%')) {
    throw new UapiError(UAPI_ERRNO.invalid, `uapi: allowed_ip must be address/prefix-length, got '${truncate(text)}'`);
  }
  let cidr: Cidr;
  try {
    cidr = parseCidr(text);
  } catch (error) {
    if (!(error instanceof ZtgateError)) throw error;
    throw new UapiError(UAPI_ERRNO.invalid, `uapi: invalid allowed_ip '${truncate(text)}'`, { cause: error });
  }
  return { bytes: maskHostBits(cidr.bytes, cidr.prefixLength), prefixLength: cidr.prefixLength };
}

function maskHostBits(bytes: Uint8Array, prefixLength: number): Uint8Array {
  const masked = Uint8Array.from(bytes);
  for (let i = 0; i < masked.length; i++) {
    const bits = Math.min(8, Math.max(0, prefixLength - 8 * i));
    masked[i] &= (0xff00 >>> bits) & 0xff;
  }
  return masked;
}

/** Interface names (IFNAMSIZ - 1 bytes) or indexes; none of the characters that end a host. */
const ZONE = /^[\x21-\x7e]{1,15}$/;
const ZONE_FORBIDDEN = /[/:%[\]]/;

/**
 * `a.b.c.d:port` or `[v6]:port`, as Go's netip.ParseAddrPort reads them (what wireguard-go's
 * bind uses): no host names, brackets exactly around IPv6 (including `[::ffff:a.b.c.d]`), port
 * 0..65535. An IPv6 `%zone` is kept as text for the socket layer to resolve.
 */
function parseEndpoint(value: string): UapiEndpoint {
  const colon = value.lastIndexOf(':');
  const portText = colon === -1 ? '' : value.slice(colon + 1);
  let host = colon === -1 ? '' : value.slice(0, colon);
  if (portText === '' || host === '') {
    throw new UapiError(UAPI_ERRNO.invalid, `uapi: endpoint must be host:port, got '${truncate(value)}'`);
  }
  const port = parseUnsigned(portText, MAX_PORT, 'endpoint port');
  const bracketed = host.startsWith('[') && host.endsWith(']');
  if (bracketed) host = host.slice(1, -1);
  let zone: string | undefined;
  const percent = host.indexOf('%');
  if (percent !== -1) {
    zone = host.slice(percent + 1);
    host = host.slice(0, percent);
    if (!ZONE.test(zone) || ZONE_FORBIDDEN.test(zone)) {
      throw new UapiError(UAPI_ERRNO.invalid, `uapi: endpoint has an invalid IPv6 zone '${truncate(zone)}'`);
    }
  }
  const isV6 = host.includes(':');
  if (isV6 !== bracketed || (zone !== undefined && !isV6) || host.includes('/')) {
    throw new UapiError(
      UAPI_ERRNO.invalid,
      `uapi: endpoint must be a.b.c.d:port or [IPv6]:port, got '${truncate(value)}'`,
    );
  }
  let address: Uint8Array;
  try {
    address = parseCidr(host).bytes;
  } catch (error) {
    if (!(error instanceof ZtgateError)) throw error;
    throw new UapiError(UAPI_ERRNO.invalid, `uapi: invalid endpoint address '${truncate(host)}'`, { cause: error });
  }
  return { family: isV6 ? 6 : 4, address, port, ...(zone !== undefined && { zone }) };
}

function isZero(bytes: Uint8Array): boolean {
  let accumulated = 0;
  for (let i = 0; i < bytes.length; i++) accumulated |= bytes[i];
  return accumulated === 0;
}

function truncate(text: string): string {
  return text.length <= QUOTE_LIMIT ? text : `${text.slice(0, QUOTE_LIMIT)}…`;
}

function quote(text: string): string {
  return JSON.stringify(truncate(text));
}

// ---- get=1 ----

const HEX_DIGITS = '0123456789abcdef';
const NS_PER_MS = 1_000_000;

/**
 * The reply to `get=1`, in wireguard-go's order (device/uapi.go IpcGetOperation), ending with
 * `errno=0` and the blank line. Device: private_key (if set), listen_port (if non-zero), fwmark
 * (if non-zero); per peer: public_key, preshared_key (zeros if none), protocol_version=1,
 * endpoint (if known), last_handshake_time_sec/nsec, tx_bytes, rx_bytes,
 * persistent_keepalive_interval, then one allowed_ip line per prefix.
 * @throws RangeError for a snapshot that cannot be serialized (bad key length, counters, ports).
 */
export function formatGet(snapshot: DeviceSnapshot): string {
  const head: string[] = [];
  if (snapshot.privateKey !== null && !isZero(checkKey(snapshot.privateKey, 'privateKey'))) {
    head.push(`private_key=${toHex(snapshot.privateKey)}`);
  }
  const listenPort = checkInteger(snapshot.listenPort, MAX_PORT, 'listenPort');
  if (listenPort !== 0) head.push(`listen_port=${listenPort}`);
  const fwmark = checkInteger(snapshot.fwmark, MAX_FWMARK, 'fwmark');
  if (fwmark !== 0) head.push(`fwmark=${fwmark}`);
  head.push('');
  // One flat string per peer rather than one array of every line: with ten thousand peers the
  // lines (and the snapshots they come from) would all be alive at once, long enough to be
  // promoted to the old generation, where they stayed as tens of MB of garbage after each `wg show`.
  const parts = [head.join('\n')];
  const lines: string[] = [];
  for (const peer of snapshot.peers) {
    lines.length = 0;
    formatPeer(peer, lines);
    lines.push('');
    parts.push(lines.join('\n'));
  }
  parts.push('errno=0\n\n');
  return parts.join('');
}

function formatPeer(peer: PeerSnapshot, lines: string[]): void {
  lines.push(`public_key=${toHex(checkKey(peer.publicKey, 'publicKey'))}`);
  const presharedKey = peer.presharedKey === null ? new Uint8Array(KEY_SIZE) : peer.presharedKey;
  lines.push(`preshared_key=${toHex(checkKey(presharedKey, 'presharedKey'))}`);
  lines.push('protocol_version=1');
  if (peer.endpoint !== null) {
    if (/[\n=]/.test(peer.endpoint)) throw new RangeError('uapi: endpoint text must not contain "\\n" or "="');
    lines.push(`endpoint=${peer.endpoint}`);
  }
  const handshakeMs = peer.lastHandshakeMs;
  if (!Number.isFinite(handshakeMs) || handshakeMs < 0) {
    throw new RangeError(`uapi: lastHandshakeMs must be a non-negative number, got ${handshakeMs}`);
  }
  const seconds = Math.floor(handshakeMs / 1000);
  lines.push(`last_handshake_time_sec=${seconds}`);
  lines.push(`last_handshake_time_nsec=${Math.floor((handshakeMs - seconds * 1000) * NS_PER_MS)}`);
  lines.push(`tx_bytes=${checkInteger(peer.txBytes, Number.MAX_SAFE_INTEGER, 'txBytes')}`);
  lines.push(`rx_bytes=${checkInteger(peer.rxBytes, Number.MAX_SAFE_INTEGER, 'rxBytes')}`);
  lines.push(
    `persistent_keepalive_interval=${checkInteger(peer.persistentKeepalive, MAX_KEEPALIVE, 'persistentKeepalive')}`,
  );
  for (const cidr of peer.allowedIps) lines.push(`allowed_ip=${formatPrefix(cidr)}`);
}

/** The reply to a `set=1` (or a failed request): `errno=N` and the blank line. */
export function formatErrno(errno: number): string {
  if (!Number.isInteger(errno)) throw new RangeError(`uapi: errno must be an integer, got ${errno}`);
  return `errno=${errno}\n\n`;
}

/** Go's netip.Prefix.String(): only ::ffff:a.b.c.d keeps a dotted quad inside IPv6. */
function formatPrefix(cidr: Cidr): string {
  const { bytes, prefixLength } = cidr;
  const maxBits = bytes.length * 8;
  if ((bytes.length !== 4 && bytes.length !== 16) || !Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > maxBits) {
    throw new RangeError(`uapi: an allowed IP needs 4 or 16 bytes and a prefix length within them`);
  }
  return `${bytes.length === 4 ? formatIpv4(bytes) : formatIpv6(bytes)}/${prefixLength}`;
}

function checkKey(key: Uint8Array, name: string): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== KEY_SIZE) {
    throw new RangeError(`uapi: ${name} must be a ${KEY_SIZE}-byte Uint8Array`);
  }
  return key;
}

function checkInteger(value: number, max: number, name: string): number {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new RangeError(`uapi: ${name} must be an integer in 0..${max}, got ${value}`);
  }
  return value;
}

function toHex(bytes: Uint8Array): string {
  let text = '';
  for (let i = 0; i < bytes.length; i++) text += HEX_DIGITS[bytes[i] >> 4] + HEX_DIGITS[bytes[i] & 0xf];
  return text;
}

// ---- Framing ----

/** Upper bound on one `set=1` body: 130,000 allowed IPs are ~4 MB; this leaves wide room. */
export const DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024;

export type UapiRequest =
  | { readonly kind: 'get' }
  | { readonly kind: 'set'; readonly body: string }
  /** Reply with this error's errno and keep serving the connection. */
  | { readonly kind: 'reject'; readonly error: UapiError }
  /** Reply with this error's errno, then close: the stream cannot be resynchronised. */
  | { readonly kind: 'abort'; readonly error: UapiError }
  /** Close without a reply, as wireguard-go does for an operation line it does not know. */
  | { readonly kind: 'unknownOperation'; readonly line: string };

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const OPERATION_LINE_LENGTH = 6;
const GET_LINE = new TextEncoder().encode('get=1\n');
const SET_LINE = new TextEncoder().encode('set=1\n');
const utf8 = new TextDecoder();

/**
 * Splits a connection's byte stream into requests: `get=1\n\n`, or `set=1\n` then lines up to a
 * blank one (`\n` or `\r\n`). Requests may be pipelined and split across chunks anyhow. After an
 * `abort` or `unknownOperation` the decoder ignores all further input.
 */
export class UapiRequestDecoder {
  readonly #maxRequestBytes: number;
  #state: 'operation' | 'getTerminator' | 'setBody' | 'stopped' = 'operation';
  readonly #operationLine = new Uint8Array(OPERATION_LINE_LENGTH);
  #operationLength = 0;
  #bodyChunks: Uint8Array[] = [];
  #bodyLength = 0;
  #lineLength = 0;
  #lineFirstByte = 0;
  readonly #ready: UapiRequest[] = [];
  #readyHead = 0;

  constructor(maxRequestBytes: number = DEFAULT_MAX_REQUEST_BYTES) {
    if (!Number.isSafeInteger(maxRequestBytes) || maxRequestBytes < 1) {
      throw new RangeError(`uapi: maxRequestBytes must be a positive integer, got ${maxRequestBytes}`);
    }
    this.#maxRequestBytes = maxRequestBytes;
  }

  /** True while a request has started but not ended (a disconnect now loses it, unapplied). */
  get inRequest(): boolean {
    return this.#state === 'getTerminator' || this.#state === 'setBody' || this.#operationLength > 0;
  }

  /** Consumes a chunk; the chunk's bytes may be kept (not copied) until their request completes. */
  push(chunk: Uint8Array): void {
    let offset = 0;
    while (offset < chunk.length) {
      switch (this.#state) {
        case 'operation':
          offset = this.#readOperation(chunk, offset);
          break;
        case 'getTerminator':
          this.#enqueue(
            chunk[offset] === NEWLINE
              ? { kind: 'get' }
              : { kind: 'reject', error: new UapiError(UAPI_ERRNO.invalid, 'uapi: trailing character after get=1') },
          );
          offset++;
          this.#state = 'operation';
          break;
        case 'setBody':
          offset = this.#readBody(chunk, offset);
          break;
        case 'stopped':
          return;
      }
    }
  }

  /** The next complete request, or undefined until more input arrives. */
  next(): UapiRequest | undefined {
    if (this.#readyHead === this.#ready.length) return undefined;
    const request = this.#ready[this.#readyHead++];
    if (this.#readyHead === this.#ready.length) {
      this.#ready.length = 0;
      this.#readyHead = 0;
    }
    return request;
  }

  #readOperation(chunk: Uint8Array, offset: number): number {
    const byte = chunk[offset];
    this.#operationLine[this.#operationLength++] = byte;
    if (byte !== NEWLINE && this.#operationLength < OPERATION_LINE_LENGTH) return offset + 1;
    const line = this.#operationLine.subarray(0, this.#operationLength);
    this.#operationLength = 0;
    if (bytesEqual(line, GET_LINE)) {
      this.#state = 'getTerminator';
    } else if (bytesEqual(line, SET_LINE)) {
      this.#state = 'setBody';
    } else {
      this.#stop({ kind: 'unknownOperation', line: utf8.decode(line) });
    }
    return offset + 1;
  }

  /** Scans for the blank line with indexOf, so a multi-megabyte body costs one pass. */
  #readBody(chunk: Uint8Array, offset: number): number {
    let position = offset;
    while (position < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, position);
      const lineEnd = newline === -1 ? chunk.length : newline;
      if (lineEnd > position) {
        if (this.#lineLength === 0) this.#lineFirstByte = chunk[position];
        this.#lineLength += lineEnd - position;
      }
      if (newline === -1) {
        position = chunk.length;
        break;
      }
      const blank = this.#lineLength === 0 || (this.#lineLength === 1 && this.#lineFirstByte === CARRIAGE_RETURN);
      const blankLineLength = this.#lineLength + 1;
      this.#lineLength = 0;
      position = newline + 1;
      if (blank) {
        this.#bodyChunks.push(chunk.subarray(offset, position));
        const body = concat(this.#bodyChunks, this.#bodyLength + position - offset - blankLineLength);
        this.#bodyChunks = [];
        this.#bodyLength = 0;
        this.#state = 'operation';
        this.#enqueue({ kind: 'set', body: utf8.decode(body) });
        return position;
      }
      if (this.#bodyLength + position - offset > this.#maxRequestBytes) break;
    }
    this.#bodyChunks.push(chunk.subarray(offset, position));
    this.#bodyLength += position - offset;
    if (this.#bodyLength > this.#maxRequestBytes) {
      this.#stop({
        kind: 'abort',
        error: new UapiError(UAPI_ERRNO.io, `uapi: set request larger than ${this.#maxRequestBytes} bytes`),
      });
    }
    return position;
  }

  #enqueue(request: UapiRequest): void {
    this.#ready.push(request);
  }

  #stop(request: UapiRequest): void {
    this.#enqueue(request);
    this.#state = 'stopped';
    this.#bodyChunks = [];
    this.#bodyLength = 0;
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The first `length` bytes of the chunks, joined. */
function concat(chunks: readonly Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1) return chunks[0].subarray(0, length);
  const joined = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    if (offset >= length) break;
    const part = chunk.subarray(0, Math.min(chunk.length, length - offset));
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}
