// Debian's coturn (/usr/bin/turnserver) as the lab's STUN/TURN server, confined to one namespace:
// foreground (no daemon mode), an explicit config file in the lab's temp dir (so no system
// turnserver.conf is read), UDP only on the given addresses, no TLS/DTLS, no telnet CLI, and its
// pid file and user database in a private temp dir, its log on stdout. The lab stops the process
// and removes the directory at close().
import { rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostOf, waitFor } from './lab.ts';
import type { LabProcess, Netns } from './lab.ts';

export const COTURN_BINARY = process.env.ZTGATE_LAB_TURNSERVER ?? '/usr/bin/turnserver';
const READY_TIMEOUT_MS = 10_000;

export type CoturnOptions = {
  /** Addresses coturn listens on (each also relays); at least one. */
  readonly listeningIps: readonly string[];
  readonly port?: number;
  readonly realm?: string;
  /** Static long-term users (`lt-cred-mech`). */
  readonly users?: readonly { readonly username: string; readonly password: string }[];
  /** TURN REST shared secret (`use-auth-secret`); mutually exclusive with `users`. */
  readonly authSecret?: string;
  /** Relay port range (small: the lab needs few). */
  readonly minRelayPort?: number;
  readonly maxRelayPort?: number;
};

export type Coturn = {
  readonly process: LabProcess;
  readonly ns: Netns;
  readonly listeningIps: readonly string[];
  readonly port: number;
  readonly realm: string;
};

/** Renders turnserver.conf for `options`; private files go under `dir`. */
export function coturnConfig(options: CoturnOptions, dir: string): string {
  if (options.listeningIps.length === 0) throw new RangeError('coturn: at least one listening IP');
  if (options.authSecret !== undefined && options.users !== undefined) throw new RangeError('coturn: users or authSecret, not both');
  const lines = [
    `listening-port=${options.port ?? 3478}`,
    ...options.listeningIps.map((ip) => `listening-ip=${hostOf(ip)}`),
    ...options.listeningIps.map((ip) => `relay-ip=${hostOf(ip)}`),
    `realm=${options.realm ?? 'ztgate.lab'}`,
    `min-port=${options.minRelayPort ?? 49_152}`,
    `max-port=${options.maxRelayPort ?? 49_252}`,
    // The lab's addresses are in 198.18.0.0/15, which coturn would otherwise not treat specially;
    // allow them explicitly and nothing else matters: the namespace has no other network.
    'allowed-peer-ip=198.18.0.0-198.19.255.255',
    'no-multicast-peers',
    'no-tls',
    'no-dtls',
    'no-tcp',
    'no-tcp-relay',
    'no-cli',
    'no-rfc5780',
    'fingerprint',
    `pidfile=${dir}/turnserver.pid`,
    `userdb=${dir}/turndb`,
    'log-file=stdout',
    'simple-log',
  ];
  if (options.authSecret !== undefined) {
    lines.push('use-auth-secret', `static-auth-secret=${options.authSecret}`);
  } else {
    lines.push('lt-cred-mech', ...(options.users ?? []).map((user) => `user=${user.username}:${user.password}`));
  }
  return `${lines.join('\n')}\n`;
}

/** Starts coturn inside `ns` and waits until it answers on every listening address. */
export async function startCoturn(ns: Netns, options: CoturnOptions): Promise<Coturn> {
  const lab = ns.lab;
  const port = options.port ?? 3478;
  // A private directory per instance (not lab.tempFile: two coturns started at once must not
  // race for the lab's temp dir), removed when the lab closes.
  const dir = await mkdtemp(join(tmpdir(), `${lab.id}-coturn-${port}-`));
  lab.defer(`coturn dir ${dir}`, () => rm(dir, { recursive: true, force: true }), () => rmSync(dir, { recursive: true, force: true }));
  const configPath = join(dir, 'turnserver.conf');
  await writeFile(configPath, coturnConfig(options, dir), { mode: 0o600 });
  const turnProcess = lab.spawn(ns, COTURN_BINARY, ['-c', configPath]);
  const wanted = options.listeningIps.map(hostOf);
  await waitFor(`coturn listening on ${wanted.join(', ')} port ${port}`, READY_TIMEOUT_MS, async () => {
    if (!turnProcess.running) throw new Error(`coturn exited:\n${turnProcess.output()}`);
    const sockets = (await ns.exec('ss', ['-Hlun'])).stdout;
    return wanted.every((ip) => sockets.includes(`${ip}:${port} `)) ? true : undefined;
  });
  return { process: turnProcess, ns, listeningIps: wanted, port, realm: options.realm ?? 'ztgate.lab' };
}
