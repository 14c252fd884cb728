// `ztgate netcheck`: what this machine's UDP connectivity looks like to ICE. From one UDP socket it
// sends STUN Binding requests (RFC 8489) to each STUN server and, if asked, makes a TURN allocation
// (RFC 8656) and deletes it again; then it reports the host candidates, the server-reflexive
// address each server saw, the NAT's mapping behaviour (RFC 4787 §4.1) and the relayed address.
//
// The socket is node:dgram, not src/io/udp.ts: this is a one-shot tool on the main thread that
// needs the event loop's timers and a handful of datagrams, while UdpSocket is built for reader
// threads doing batched recvmmsg. The protocol logic is the shared sans-IO code — the STUN layer
// (./ice/stun.ts) for Binding requests and the TurnClient the ICE agent's relays use — so a
// netcheck result describes what the agent will see from the same network.
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { parseArgs } from 'node:util';
import { monotonicNow } from '../clock.ts';
import { canonicalTransportAddress, formatTransportAddress, sameTransportAddress } from '../ice/address.ts';
import type { TransportAddress } from '../ice/address.ts';
import { StunAttribute, StunMessageBuilder, StunMethod, getXorAddress, parseStun, transactionIdFromBytes } from '../ice/stun.ts';
import type { TransactionId } from '../ice/stun.ts';
import { TURN_DEFAULT_PORT, TurnClient, turnRestCredentials } from '../ice/turn.ts';
import type { TurnCredentials } from '../ice/turn.ts';

export const NETCHECK_USAGE = `usage:
  ztgate netcheck --stun HOST[:PORT] [--stun HOST[:PORT] ...]
                  [--turn HOST[:PORT] (--turn-username U --turn-password P | --turn-secret S)]
                  [--timeout MS] [--json]
      report UDP reachability, host and server-reflexive addresses, NAT mapping behaviour and a
      TURN relayed address (the allocation is deleted before exit); PORT defaults to 3478`;

const DEFAULT_TIMEOUT_MS = 3000;
const MIN_TIMEOUT_MS = 100;
const MAX_TIMEOUT_MS = 60_000;
/** Binding requests are re-sent (each with a new transaction, so RTTs are unambiguous) after 250 ms, doubling to 1 s. */
const BINDING_FIRST_RTO_MS = 250;
const BINDING_MAX_RTO_MS = 1000;
/** How long the deallocation may take beyond the measurement deadline. */
const DEALLOCATE_GRACE_MS = 1000;
/** The user part of REST credentials made from --turn-secret. */
const REST_USER = 'ztgate-netcheck';
const REST_CREDENTIAL_TTL_S = 3600;

export type NatMapping = 'none' | 'endpoint-independent' | 'endpoint-dependent' | 'unknown';

export type MappedAddress = { readonly server: string; readonly address: string; readonly rtt_ms: number };

/** The `--json` output, field for field. */
export type NetcheckReport = {
  readonly udp: boolean;
  readonly host: readonly string[];
  readonly mapped: readonly MappedAddress[];
  readonly nat: NatMapping;
  readonly relay: { readonly server: string; readonly address: string } | null;
  readonly relay_error: string | null;
};

export type NetcheckOptions = {
  readonly stunServers: readonly TransportAddress[];
  readonly turn: { readonly server: TransportAddress; readonly credentials: TurnCredentials } | null;
  readonly timeoutMs: number;
};

/** Bad command-line input: reported with the usage text and exit status 2. */
export class NetcheckUsageError extends Error {}

/**
 * RFC 4787 §4.1 mapping behaviour from what the servers saw: no NAT when a server saw one of our
 * host addresses; endpoint-independent when servers at two or more different addresses saw the
 * same mapped address, endpoint-dependent when they saw different ones; unknown with fewer than
 * two answers (a single mapping says nothing about the next one).
 */
export function classifyNat(host: readonly string[], mapped: readonly Pick<MappedAddress, 'server' | 'address'>[]): NatMapping {
  if (mapped.some((entry) => host.includes(entry.address))) return 'none';
  if (new Set(mapped.map((entry) => entry.server)).size < 2) return 'unknown';
  return new Set(mapped.map((entry) => entry.address)).size === 1 ? 'endpoint-independent' : 'endpoint-dependent';
}

/** Runs the measurements; resolves within `timeoutMs` (plus up to 1 s to delete the allocation). */
export async function netcheck(options: NetcheckOptions): Promise<NetcheckReport> {
  const servers = [...options.stunServers, ...(options.turn === null ? [] : [options.turn.server])];
  const useIpv6 = servers.some((server) => server.family === 6);
  const socket = createSocket(useIpv6 ? { type: 'udp6', ipv6Only: false } : { type: 'udp4' });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    // Send failures (no route, say) are what this tool measures, not crashes.
    socket.on('error', () => {});
    const port = socket.address().port;
    const host = hostAddresses(useIpv6, port).map(formatTransportAddress);
    const probe = new Probe(socket, options, useIpv6);
    const result = await probe.run();
    return {
      udp: result.udp,
      host,
      mapped: result.mapped,
      nat: classifyNat(host, result.mapped),
      relay: result.relay,
      relay_error: result.relayError,
    };
  } finally {
    socket.close();
  }
}

/** This machine's interface addresses with the socket's port (link-local IPv6 left out: it needs a scope). */
function hostAddresses(includeIpv6: boolean, port: number): TransportAddress[] {
  const addresses: TransportAddress[] = [];
  for (const entries of Object.values(networkInterfaces())) {
    for (const entry of entries ?? []) {
      if (entry.internal) continue;
      if (entry.family === 'IPv6' && (!includeIpv6 || /^fe[89ab]/i.test(entry.address))) continue;
      const address = canonicalTransportAddress(entry.address, port);
      if (address !== null) addresses.push(address);
    }
  }
  return addresses;
}

type BindingProbe = { readonly server: TransportAddress; sentAt: Map<TransactionId, number>; rtoMs: number; nextAt: number; answer: MappedAddress | null };

type ProbeResult = {
  readonly udp: boolean;
  readonly mapped: MappedAddress[];
  readonly relay: { readonly server: string; readonly address: string } | null;
  readonly relayError: string | null;
};

/** One run: Binding probes and the TURN client over one socket, driven by timers until done. */
class Probe {
  #socket: Socket;
  #useIpv6: boolean;
  #deadline: number;
  #bindings: BindingProbe[];
  #turn: TurnClient | null;
  #udp = false;
  #relay: { server: string; address: string } | null = null;
  #relayError: string | null = null;
  #turnDone: boolean;
  #timer: NodeJS.Timeout | null = null;
  #finish: (() => void) | null = null;

  constructor(socket: Socket, options: NetcheckOptions, useIpv6: boolean) {
    this.#socket = socket;
    this.#useIpv6 = useIpv6;
    const now = monotonicNow();
    this.#deadline = now + options.timeoutMs;
    this.#bindings = options.stunServers.map((server) => ({ server, sentAt: new Map(), rtoMs: BINDING_FIRST_RTO_MS, nextAt: now, answer: null }));
    this.#turn = options.turn === null ? null : new TurnClient({
      server: options.turn.server,
      credentials: options.turn.credentials,
      software: 'ztgate netcheck',
      // The deadline bounds the whole run; within it, retry often enough to ride out a lost datagram.
      initialRtoMs: BINDING_FIRST_RTO_MS,
      maxRtoMs: BINDING_MAX_RTO_MS,
      maxTransmissions: Math.ceil(options.timeoutMs / BINDING_FIRST_RTO_MS) + 1,
    });
    this.#turnDone = this.#turn === null;
  }

  run(): Promise<ProbeResult> {
    return new Promise((resolve) => {
      this.#finish = () => {
        if (this.#timer !== null) clearTimeout(this.#timer);
        this.#socket.removeAllListeners('message');
        resolve({
          udp: this.#udp,
          mapped: this.#bindings.flatMap((binding) => (binding.answer === null ? [] : [binding.answer])),
          relay: this.#relay,
          relayError: this.#relayError ?? (this.#turn !== null && this.#relay === null ? 'timeout: no allocation before the deadline' : null),
        });
      };
      this.#socket.on('message', (bytes, remote) => this.#onDatagram(bytes, remote.address, remote.port));
      this.#turn?.allocate(monotonicNow());
      this.#step();
    });
  }

  #onDatagram(bytes: Buffer, ip: string, port: number): void {
    const from = canonicalTransportAddress(unmapIpv4(ip), port);
    if (from === null) return;
    const now = monotonicNow();
    const message = parseStun(bytes);
    if (message !== null && message.messageClass === 'success' && message.method === StunMethod.binding) {
      for (const binding of this.#bindings) {
        const sentAt = binding.sentAt.get(message.transactionId);
        if (sentAt === undefined || !sameTransportAddress(binding.server, from)) continue;
        this.#udp = true;
        const mapped = getXorAddress(message, StunAttribute.xorMappedAddress);
        if (binding.answer === null && mapped !== undefined) {
          binding.answer = {
            server: formatTransportAddress(binding.server),
            address: formatTransportAddress(canonicalTransportAddress(unmapIpv4(mapped.address), mapped.port) ?? mapped),
            rtt_ms: Math.round((now - sentAt) * 100) / 100,
          };
        }
        this.#step();
        return;
      }
    }
    if (this.#turn !== null && sameTransportAddress(this.#turn.server, from)) {
      this.#udp = true;
      this.#turn.handleInput(bytes, from, now);
    }
    this.#step();
  }

  /** Sends what is due, handles TURN events, and either finishes or sets the next timer. */
  #step(): void {
    const now = monotonicNow();
    const measuring = now < this.#deadline;
    let next = this.#deadline;
    for (const binding of this.#bindings) {
      if (binding.answer !== null || !measuring) continue;
      if (binding.nextAt <= now) {
        const id = transactionIdFromBytes(randomBytes(12));
        binding.sentAt.set(id, now);
        this.#send(new StunMessageBuilder(StunMethod.binding, 'request', id).encode({ fingerprint: true }), binding.server);
        binding.nextAt = now + binding.rtoMs;
        binding.rtoMs = Math.min(binding.rtoMs * 2, BINDING_MAX_RTO_MS);
      }
      next = Math.min(next, binding.nextAt);
    }
    const turn = this.#turn;
    if (turn !== null) {
      if (!measuring && turn.state === 'allocating') turn.close(now);
      turn.handleTimeout(now);
      this.#drainTurn(turn, now);
      const turnNext = turn.pollTimeout();
      if (turnNext !== null) next = Math.min(next, turnNext);
      if (!this.#turnDone) next = Math.min(next, this.#deadline + DEALLOCATE_GRACE_MS);
      if (!this.#turnDone && now >= this.#deadline + DEALLOCATE_GRACE_MS) this.#turnDone = true;
    }
    const stunDone = !measuring || this.#bindings.every((binding) => binding.answer !== null);
    if (stunDone && this.#turnDone) {
      this.#finish?.();
      return;
    }
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#step(), Math.max(0, next - now));
  }

  #drainTurn(turn: TurnClient, now: number): void {
    for (let event = turn.pollEvent(); event !== null; event = turn.pollEvent()) {
      switch (event.kind) {
        case 'allocated':
          this.#relay = { server: formatTransportAddress(turn.server), address: formatTransportAddress(event.relayedAddress) };
          // Measured: give it back at once (RFC 8656 §8, LIFETIME 0).
          turn.close(now);
          break;
        case 'allocationFailed':
          this.#relayError = `${event.reason}: ${event.detail}`;
          this.#turnDone = true;
          break;
        case 'deallocated':
          this.#turnDone = true;
          break;
        default:
          break;
      }
    }
    for (let transmit = turn.pollTransmit(); transmit !== null; transmit = turn.pollTransmit()) this.#send(transmit.bytes, transmit.to);
  }

  #send(bytes: Uint8Array, to: TransportAddress): void {
    const address = this.#useIpv6 && to.family === 4 ? `::ffff:${to.address}` : to.address;
    this.#socket.send(bytes, to.port, address, () => {
      // An unreachable network shows up as no answer; the report says so.
    });
  }
}

function unmapIpv4(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  return mapped ?? ip;
}

// ---------------------------------------------------------------------------------------------
// Command line

/** `HOST`, `HOST:PORT`, `[IPv6]:PORT` or a bare IPv6 address; the port defaults to 3478. */
export function parseServerArgument(text: string): { readonly host: string; readonly port: number } {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed !== null) {
    host = bracketed[1] ?? '';
    portText = bracketed[2];
  } else if (isIPv6(text)) {
    host = text;
  } else {
    const colon = text.lastIndexOf(':');
    host = colon < 0 ? text : text.slice(0, colon);
    portText = colon < 0 ? undefined : text.slice(colon + 1);
  }
  const port = portText === undefined ? TURN_DEFAULT_PORT : Number(portText);
  if (host === '' || /[\s/]/.test(host) || (portText !== undefined && !/^\d{1,5}$/.test(portText)) || port < 1 || port > 0xffff) {
    throw new NetcheckUsageError(`'${text}' is not HOST[:PORT] (port 1–65535)`);
  }
  return { host, port };
}

async function resolveServer(text: string): Promise<TransportAddress> {
  const { host, port } = parseServerArgument(text);
  let ip = host;
  if (isIP(host) === 0) {
    try {
      ip = (await lookup(host)).address;
    } catch (error) {
      throw new NetcheckUsageError(`cannot resolve '${host}': ${(error as Error).message}`);
    }
  }
  const address = canonicalTransportAddress(ip, port);
  if (address === null) throw new NetcheckUsageError(`'${text}' is not a usable address`);
  return address;
}

/** Parses and resolves the arguments; NetcheckUsageError for anything wrong with them. */
export async function parseNetcheckArgs(args: readonly string[]): Promise<NetcheckOptions & { readonly json: boolean }> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        stun: { type: 'string', multiple: true },
        turn: { type: 'string' },
        'turn-username': { type: 'string' },
        'turn-password': { type: 'string' },
        'turn-secret': { type: 'string' },
        timeout: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
      allowPositionals: false,
      strict: true,
    });
  } catch (error) {
    throw new NetcheckUsageError((error as Error).message);
  }
  const values = parsed.values;
  const stunArgs = values.stun ?? [];
  if (stunArgs.length === 0 && values.turn === undefined) throw new NetcheckUsageError('give at least one --stun or a --turn server');
  const timeoutMs = values.timeout === undefined ? DEFAULT_TIMEOUT_MS : Number(values.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs < MIN_TIMEOUT_MS || timeoutMs > MAX_TIMEOUT_MS) {
    throw new NetcheckUsageError(`--timeout must be an integer number of milliseconds from ${MIN_TIMEOUT_MS} to ${MAX_TIMEOUT_MS}, got '${values.timeout}'`);
  }
  const { stunServers, turn } = await resolveStunAndTurn(values);
  return { stunServers, turn, timeoutMs, json: values.json };
}

/** The `--stun`, `--turn` and TURN credential options (shared by netcheck and connect). */
export interface StunTurnArgs {
  readonly stun?: readonly string[] | undefined;
  readonly turn?: string | undefined;
  readonly 'turn-username'?: string | undefined;
  readonly 'turn-password'?: string | undefined;
  readonly 'turn-secret'?: string | undefined;
}

/** Resolves the STUN servers and the TURN server with its credentials; NetcheckUsageError on bad use. */
export async function resolveStunAndTurn(values: StunTurnArgs): Promise<Pick<NetcheckOptions, 'stunServers' | 'turn'>> {
  const username = values['turn-username'];
  const password = values['turn-password'];
  const secret = values['turn-secret'];
  let turn: NetcheckOptions['turn'] = null;
  if (values.turn === undefined) {
    if (username !== undefined || password !== undefined || secret !== undefined) {
      throw new NetcheckUsageError('--turn-username, --turn-password and --turn-secret need --turn');
    }
  } else {
    let credentials: TurnCredentials;
    if (secret !== undefined) {
      if (username !== undefined || password !== undefined) throw new NetcheckUsageError('--turn-secret replaces --turn-username/--turn-password; give one or the other');
      credentials = turnRestCredentials(secret, REST_USER, Math.floor(Date.now() / 1000) + REST_CREDENTIAL_TTL_S);
    } else {
      if (username === undefined || password === undefined) throw new NetcheckUsageError('--turn needs --turn-username and --turn-password, or --turn-secret');
      credentials = { username, password };
    }
    turn = { server: await resolveServer(values.turn), credentials };
  }
  const stunServers = await Promise.all((values.stun ?? []).map(resolveServer));
  return { stunServers, turn };
}

/** Human-readable report. */
export function formatReport(report: NetcheckReport, stunServers: number): string {
  const lines = [
    `UDP:      ${report.udp ? 'works' : 'no answer from any server (outbound UDP blocked?)'}`,
    `host:     ${report.host.length > 0 ? report.host.join(', ') : '(no interface addresses)'}`,
  ];
  if (report.mapped.length === 0) lines.push(`mapped:   no answer from ${stunServers} STUN server${stunServers === 1 ? '' : 's'}`);
  for (const entry of report.mapped) lines.push(`mapped:   ${entry.address} as seen by ${entry.server} (${entry.rtt_ms} ms)`);
  const nat: Record<NatMapping, string> = {
    none: 'none (a server saw a host address)',
    'endpoint-independent': 'endpoint-independent mapping (same address towards every server)',
    'endpoint-dependent': 'endpoint-dependent mapping (a different address per server: relays will be needed)',
    unknown: 'unknown (needs answers from two STUN server addresses)',
  };
  lines.push(`NAT:      ${nat[report.nat]}`);
  if (report.relay !== null) lines.push(`relay:    ${report.relay.address} from ${report.relay.server} (deallocated)`);
  else if (report.relay_error !== null) lines.push(`relay:    failed: ${report.relay_error}`);
  return `${lines.join('\n')}\n`;
}

export type NetcheckOutput = { write(text: string): unknown };

/**
 * `ztgate netcheck ARGS`: 0 when it could measure (even if the relay failed or nothing answered),
 * 2 for bad arguments (message and usage on `stderr`), 1 when the socket cannot be opened.
 */
export async function runNetcheck(args: readonly string[], stdout: NetcheckOutput = process.stdout,
  stderr: NetcheckOutput = process.stderr): Promise<number> {
  let options: Awaited<ReturnType<typeof parseNetcheckArgs>>;
  try {
    options = await parseNetcheckArgs(args);
  } catch (error) {
    if (!(error instanceof NetcheckUsageError || error instanceof RangeError)) throw error;
    stderr.write(`ztgate netcheck: ${error.message}\n${NETCHECK_USAGE}\n`);
    return 2;
  }
  let report: NetcheckReport;
  try {
    report = await netcheck(options);
  } catch (error) {
    stderr.write(`ztgate netcheck: cannot measure: ${(error as Error).message}\n`);
    return 1;
  }
  stdout.write(options.json ? `${JSON.stringify(report)}\n` : formatReport(report, options.stunServers.length));
  return 0;
}
