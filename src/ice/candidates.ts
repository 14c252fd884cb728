// ICE candidates: priorities (RFC 8445 §5.1.2), foundations (§5.1.1.3), pair priority
// (§6.1.2.3) and the SDP `candidate:` attribute text (RFC 8839 §5.1) a signalling channel carries.
import { createHash } from 'node:crypto';
import { ProtocolError } from '../errors.ts';
import { canonicalTransportAddress, type TransportAddress } from './address.ts';

export type CandidateType = 'host' | 'srflx' | 'prflx' | 'relay';

/** Recommended type preferences (RFC 8445 §5.1.2.2). */
export const TYPE_PREFERENCE: Readonly<Record<CandidateType, number>> = { host: 126, prflx: 110, srflx: 100, relay: 0 };
export const MAX_LOCAL_PREFERENCE = 65_535;
/** ztgate runs one component (the WireGuard socket). */
export const COMPONENT_ID = 1;

export interface Candidate {
  /** 1–32 ice-chars (ALPHA / DIGIT / "+" / "/"). */
  readonly foundation: string;
  readonly componentId: number;
  readonly priority: number;
  readonly address: TransportAddress;
  readonly type: CandidateType;
  /** raddr/rport: the base of a server-reflexive candidate, the mapped address of a relayed one. */
  readonly related: TransportAddress | null;
}

/** priority = 2^24·type preference + 2^8·local preference + (256 − component) (§5.1.2.1). */
export function candidatePriority(type: CandidateType, localPreference: number, componentId = COMPONENT_ID): number {
  if (!Number.isInteger(localPreference) || localPreference < 0 || localPreference > MAX_LOCAL_PREFERENCE) {
    throw new RangeError(`ice: local preference must be 0–65535, got ${localPreference}`);
  }
  return TYPE_PREFERENCE[type] * 2 ** 24 + localPreference * 2 ** 8 + (256 - componentId);
}

/** 2^32·MIN(G,D) + 2·MAX(G,D) + (G>D ? 1 : 0), G the controlling side's candidate priority (§6.1.2.3). */
export function pairPriority(controlling: number, controlled: number): bigint {
  const g = BigInt(controlling);
  const d = BigInt(controlled);
  const [low, high] = g < d ? [g, d] : [d, g];
  return (low << 32n) + 2n * high + (g > d ? 1n : 0n);
}

/**
 * Same type, same base IP, same STUN/TURN server → same foundation (§5.1.1.3). A hash keeps it
 * short and says nothing about the addresses beyond what the candidate already does.
 */
export function computeFoundation(type: CandidateType, baseAddress: string, server: string | null): string {
  return createHash('sha256').update(`${type}|${baseAddress}|${server ?? ''}`).digest('hex').slice(0, 8);
}

const FOUNDATION = /^[A-Za-z0-9+/]{1,32}$/;
const DIGITS = /^[0-9]{1,10}$/;
const MAX_CANDIDATE_PRIORITY = 2 ** 31 - 1;

function parsePort(text: string | undefined): number | null {
  if (text === undefined || !/^[0-9]{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port <= 0xffff ? port : null;
}

/**
 * Parses an RFC 8839 candidate attribute ("candidate:…", optionally prefixed with "a="). Only
 * UDP candidates with IP literals are accepted: FQDNs (mDNS ".local" names included) have no
 * place on a WireGuard socket. Unknown extension attributes are ignored, as §5.1 asks.
 * Throws ProtocolError for anything else, so the signalling layer can count and drop it.
 */
export function parseCandidate(text: string): Candidate {
  if (typeof text !== 'string') throw new TypeError('ice: a candidate must be a string');
  if (text.length > 512) throw new ProtocolError('ice: candidate line is too long');
  const body = text.trim().replace(/^a=/, '');
  if (!body.startsWith('candidate:')) throw new ProtocolError('ice: candidate line must start with "candidate:"');
  const fields = body.slice('candidate:'.length).split(' ');
  if (fields.length < 8) throw new ProtocolError('ice: candidate line has too few fields');
  const [foundation, componentText, transport, priorityText, addressText, portText, typKeyword, typeText] = fields;
  if (!FOUNDATION.test(foundation)) throw new ProtocolError('ice: bad candidate foundation');
  if (!/^[0-9]{1,3}$/.test(componentText) || Number(componentText) < 1 || Number(componentText) > 256) {
    throw new ProtocolError('ice: bad candidate component id');
  }
  if (transport.toLowerCase() !== 'udp') throw new ProtocolError(`ice: unsupported candidate transport '${transport}'`);
  if (!DIGITS.test(priorityText) || Number(priorityText) < 1 || Number(priorityText) > MAX_CANDIDATE_PRIORITY) {
    throw new ProtocolError('ice: bad candidate priority');
  }
  const port = parsePort(portText);
  const address = port === null ? null : canonicalTransportAddress(addressText, port);
  if (address === null) throw new ProtocolError('ice: candidate address must be an IP literal and a port');
  if (typKeyword !== 'typ') throw new ProtocolError('ice: candidate line lacks "typ"');
  if (typeText !== 'host' && typeText !== 'srflx' && typeText !== 'prflx' && typeText !== 'relay') {
    throw new ProtocolError(`ice: unknown candidate type '${typeText}'`);
  }
  let relatedAddress: string | undefined;
  let relatedPort: string | undefined;
  for (let i = 8; i + 1 < fields.length; i += 2) {
    if (fields[i] === 'raddr') relatedAddress = fields[i + 1];
    else if (fields[i] === 'rport') relatedPort = fields[i + 1];
  }
  let related: TransportAddress | null = null;
  if (relatedAddress !== undefined && relatedPort !== undefined) {
    const rport = parsePort(relatedPort);
    related = rport === null ? null : canonicalTransportAddress(relatedAddress, rport);
    if (related === null) throw new ProtocolError('ice: bad raddr/rport');
  }
  return { foundation, componentId: Number(componentText), priority: Number(priorityText), address, type: typeText, related };
}

/** The RFC 8839 text for a candidate ("candidate:…", without "a="). */
export function formatCandidate(candidate: Candidate): string {
  const { foundation, componentId, priority, address, type, related } = candidate;
  const base = `candidate:${foundation} ${componentId} udp ${priority} ${address.address} ${address.port} typ ${type}`;
  return related === null ? base : `${base} raddr ${related.address} rport ${related.port}`;
}
