// `ztgate connect`: one WireGuard peer reached through ICE, with the signalling done over standard
// input and output as JSON lines, so that a test harness (and, later, the portal session) can carry
// credentials and candidates between two nodes. The device is the same as `ztgate wg`'s, in ICE
// mode: the UAPI socket serves `wg show`, the tunnel interface is configured with `ip`.
//
//   out: {"type":"credentials","ufrag":…,"pwd":…}  {"type":"candidate","candidate":"candidate:…"}
//        {"type":"connected","path":…,"elapsed_ms":…}  {"type":"pathChanged","path":…}
//        {"type":"failed","reason":…}  {"type":"relay","server":…,"relayed":…|null,"error":…|null}
//   in:  {"type":"credentials","ufrag":…,"pwd":…}  {"type":"candidate","candidate":"candidate:…"}
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Device, describeStartError } from '../control/device.ts';
import type { ConnectionEvent } from '../control/connections.ts';
import type { IceRole } from '../ice/agent.ts';
import { parseCidr } from '../wireguard/allowedips.ts';
import { parseKeyBase64 } from '../wireguard/keys.ts';
import { createLogger, parseLogLevel } from './log.ts';
import { NetcheckUsageError, resolveStunAndTurn } from './netcheck.ts';
import { parseKeepWarm, parseWorkers, runUntilStopped, UsageError } from './daemon.ts';

export const CONNECT_USAGE = `  ztgate connect IFNAME --private-key FILE --peer PUBLIC_KEY --allowed-ips CIDR[,CIDR…]
      --role controlling|controlled [--listen-port PORT] [--stun HOST[:PORT] …]
      [--turn HOST[:PORT] (--turn-username U --turn-password P | --turn-secret S)]
      [--workers N] [--keep-warm-ms MS] [--log-level LEVEL]
      one peer through ICE; signalling as JSON lines on stdin/stdout`;

function emit(message: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function emitConnectionEvent(event: ConnectionEvent): void {
  switch (event.kind) {
    case 'localCandidate':
      emit({ type: 'candidate', candidate: event.candidate });
      break;
    case 'connected':
      emit({ type: 'connected', path: event.path, elapsed_ms: Math.round(event.elapsedMs) });
      break;
    case 'pathChanged':
      emit({ type: 'pathChanged', path: event.path });
      break;
    case 'failed':
      emit({ type: 'failed', reason: event.reason });
      break;
    case 'relayAllocated':
      emit({ type: 'relay', server: event.server, relayed: event.relayed, error: null });
      break;
    case 'relayFailed':
      emit({ type: 'relay', server: event.server, relayed: null, error: event.reason });
      break;
    case 'relayedDatagram':
      break;
  }
}

export async function runConnect(args: readonly string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options: {
        'private-key': { type: 'string' },
        peer: { type: 'string' },
        'allowed-ips': { type: 'string' },
        role: { type: 'string' },
        'listen-port': { type: 'string' },
        stun: { type: 'string', multiple: true },
        turn: { type: 'string' },
        'turn-username': { type: 'string' },
        'turn-password': { type: 'string' },
        'turn-secret': { type: 'string' },
        workers: { type: 'string' },
        'keep-warm-ms': { type: 'string' },
        'log-level': { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError('connect takes exactly one interface name');
  const interfaceName = positionals[0]!;
  const keyFile = values['private-key'];
  const peerKey = values.peer;
  const allowed = values['allowed-ips'];
  const role = values.role;
  if (keyFile === undefined || peerKey === undefined || allowed === undefined) {
    throw new UsageError('connect needs --private-key, --peer and --allowed-ips');
  }
  if (role !== 'controlling' && role !== 'controlled') throw new UsageError('--role must be controlling or controlled');
  const listenPort = values['listen-port'] === undefined ? 0 : Number(values['listen-port']);
  if (!Number.isInteger(listenPort) || listenPort < 0 || listenPort > 65_535) throw new UsageError(`bad --listen-port '${values['listen-port']}'`);
  const workers = parseWorkers(values.workers);
  const keepWarmMs = parseKeepWarm(values['keep-warm-ms']);
  const privateKey = parseKeyBase64(readFileSync(keyFile, 'utf8').trim(), 'private key');
  const publicKey = parseKeyBase64(peerKey, 'peer public key');
  const allowedIps = allowed.split(',').map((text) => parseCidr(text.trim()));
  let servers;
  try {
    servers = await resolveStunAndTurn(values);
  } catch (error) {
    if (error instanceof NetcheckUsageError) throw new UsageError(error.message);
    throw error;
  }
  const level = parseLogLevel(values['log-level'] ?? process.env['ZTGATE_LOG_LEVEL']);
  const logger = createLogger(level, { interface: interfaceName });

  let device: Device;
  try {
    device = await Device.start({
      interfaceName,
      workers,
      keepWarmMs,
      logger,
      logLevel: level,
      ice: { stunServers: servers.stunServers, relays: servers.turn === null ? [] : [servers.turn], listenPort },
    });
  } catch (error) {
    process.stderr.write(`ztgate: ${interfaceName}: ${describeStartError(error)}\n`);
    return 1;
  }
  let peer: number;
  try {
    device.apply([{ kind: 'privateKey', key: privateKey }]);
    device.onConnectionEvent = emitConnectionEvent;
    const connection = device.connect(publicKey, allowedIps, role as IceRole, null);
    peer = connection.peer;
    emit({ type: 'credentials', ufrag: connection.credentials.ufrag, pwd: connection.credentials.pwd });
  } catch (error) {
    await device.stop('could not set up the connection');
    throw error;
  }

  const input = createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (line.trim() === '') return;
    try {
      const message = JSON.parse(line) as { type?: string; ufrag?: string; pwd?: string; candidate?: string };
      if (message.type === 'credentials' && typeof message.ufrag === 'string' && typeof message.pwd === 'string') {
        device.setRemoteCredentials(peer, { ufrag: message.ufrag, pwd: message.pwd });
      } else if (message.type === 'candidate' && typeof message.candidate === 'string') {
        device.addRemoteCandidate(peer, message.candidate);
      } else {
        logger.warn({ line }, 'signalling: unknown message ignored');
      }
    } catch (error) {
      logger.warn({ line, err: error }, 'signalling: bad message ignored');
    }
  });
  await runUntilStopped(device);
  input.close();
  return 0;
}
