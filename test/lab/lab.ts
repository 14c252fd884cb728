// The network-namespace lab: the harness behind every end-to-end test, the demo and the benchmarks.
//
// It builds small networks out of network namespaces joined by veth pairs (optionally with a
// MASQUERADE NAT namespace in between), runs a WireGuard implementation on each side (wireguard-go
// or ztgate, chosen per test run), drives it with the stock `wg` tool over the UAPI socket and
// measures it with ping and iperf3. Everything it makes is recorded in a cleanup registry and
// removed again, also when a test throws, and — as a last resort — when the process exits.
//
// All traffic stays inside namespaces made here. Addresses come from the benchmarking range
// 198.18.0.0/15 (RFC 2544 §C.2.2) and from unique-local IPv6 (RFC 4193), and exist only inside them.

import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ZtgateError } from '../../src/errors.ts';

/** A lab command failed, timed out or printed something the lab cannot read. */
export class LabError extends ZtgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('ZTGATE_ERR_LAB', `lab: ${message}`, options);
  }
}

const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
/** Where wireguard-go and ztgate put their UAPI sockets; shared by all namespaces (it is a path). */
export const UAPI_SOCKET_DIR = '/var/run/wireguard';
/** Linux's IFNAMSIZ minus the terminating NUL. */
const MAX_INTERFACE_NAME = 15;
const DEFAULT_COMMAND_TIMEOUT_MS = 15_000;
/** Generous: a ztgate daemon starts Node and four threads, and CI's 2 cores may be busy. */
const DAEMON_READY_TIMEOUT_MS = 30_000;
const PROCESS_STOP_GRACE_MS = 5_000;
const PROCESS_OUTPUT_KEEP_CHARS = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Commands

export type RunOptions = {
  readonly timeoutMs?: number;
  /** Written to the command's standard input (then closed). */
  readonly input?: string;
  /** When false, a non-zero exit is returned instead of thrown. Default true. */
  readonly check?: boolean;
  readonly env?: NodeJS.ProcessEnv;
};

export type RunResult = {
  readonly command: string;
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
};

/** Runs a command to completion with a hard time limit (SIGKILL when it is exceeded). */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const commandLine = [command, ...args].join(' ');
  const shown = commandLine.length > 300 ? `${commandLine.slice(0, 300)}…` : commandLine;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    // A command may exit before reading its input; that is its business, not a crash of ours.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new LabError(`cannot run ${shown}: ${error.message}`, { cause: error }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = { command: shown, stdout, stderr, code, signal };
      if (timedOut) {
        reject(new LabError(`timed out after ${timeoutMs} ms: ${shown}\n${stderr}${stdout}`));
      } else if ((options.check ?? true) && code !== 0) {
        reject(new LabError(`exit ${code ?? signal}: ${shown}\n${stderr.trim()}\n${stdout.trim()}`.trim()));
      } else {
        resolvePromise(result);
      }
    });
  });
}

/** Polls `probe` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined,
  intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new LabError(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Long-running processes

export type ExitStatus = { readonly code: number | null; readonly signal: NodeJS.Signals | null };

/** A process started by the lab (possibly inside a namespace); its output is kept (tail only). */
export class LabProcess {
  readonly description: string;
  readonly pid: number;
  /** Settles when the process has exited. */
  readonly exited: Promise<ExitStatus>;
  #child: ChildProcess;
  #output = '';
  #exitStatus: ExitStatus | null = null;

  constructor(description: string, child: ChildProcess) {
    if (child.pid === undefined) throw new LabError(`could not start ${description}`);
    this.description = description;
    this.pid = child.pid;
    this.#child = child;
    const keep = (chunk: string): void => {
      this.#output = (this.#output + chunk).slice(-PROCESS_OUTPUT_KEEP_CHARS);
    };
    child.stdout?.setEncoding('utf8').on('data', keep);
    child.stderr?.setEncoding('utf8').on('data', keep);
    this.exited = new Promise((resolvePromise) => {
      child.on('exit', (code, signal) => {
        this.#exitStatus = { code, signal };
        resolvePromise(this.#exitStatus);
      });
    });
  }

  get running(): boolean {
    return this.#exitStatus === null;
  }

  /** The last 64 KiB of what the process printed (stdout and stderr interleaved). */
  output(): string {
    return this.#output;
  }

  /** Calls `listener` with each whole line the process writes to its standard output. */
  onStdoutLine(listener: (line: string) => void): void {
    let partial = '';
    this.#child.stdout?.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) listener(line);
    });
  }

  /** Writes to the process's standard input (spawned with `stdin: true`); ignored once it exited. */
  write(text: string): void {
    if (this.running) this.#child.stdin?.write(text);
  }

  async waitForOutput(pattern: RegExp, timeoutMs: number): Promise<void> {
    await waitFor(`${pattern} from ${this.description}`, timeoutMs, () => {
      if (pattern.test(this.#output)) return true;
      if (!this.running) throw new LabError(`${this.description} exited before printing ${pattern}:\n${this.#output}`);
      return undefined;
    });
  }

  /** Sends `signal`, waits up to `graceMs`, then SIGKILLs. Idempotent. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = PROCESS_STOP_GRACE_MS): Promise<ExitStatus> {
    if (this.#exitStatus !== null) return this.#exitStatus;
    this.#child.kill(signal);
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** For the exit safety net only: no waiting possible there. */
  killNow(): void {
    if (this.running) this.#child.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/** A network namespace made by a lab. */
export class Netns {
  readonly name: string;
  readonly lab: Lab;

  constructor(lab: Lab, name: string) {
    this.lab = lab;
    this.name = name;
  }

  /** Runs `command` inside the namespace (`ip netns exec`; ip execs it, so signals reach it). */
  exec(command: string, args: readonly string[], options?: RunOptions): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.name, command, ...args], options);
  }

  /** `ip -n NAME ...` */
  ip(args: readonly string[], options?: RunOptions): Promise<RunResult> {
    return run('ip', ['-n', this.name, ...args], options);
  }

  async sysctl(key: string, value: string | number): Promise<void> {
    await this.exec('sysctl', ['-qw', `${key}=${value}`]);
  }

  /** Adds an address (CIDR notation); IPv6 addresses skip duplicate address detection so they work at once. */
  async addAddress(dev: string, cidr: string): Promise<void> {
    await this.ip(['addr', 'add', cidr, 'dev', dev, ...(cidr.includes(':') ? ['nodad'] : [])]);
  }

  async removeAddress(dev: string, cidr: string): Promise<void> {
    await this.ip(['addr', 'del', cidr, 'dev', dev]);
  }

  async setLink(dev: string, settings: readonly string[]): Promise<void> {
    await this.ip(['link', 'set', 'dev', dev, ...settings]);
  }

  async linkExists(dev: string): Promise<boolean> {
    return (await this.ip(['link', 'show', 'dev', dev], { check: false })).code === 0;
  }

  /** Pids of every process whose network namespace is this one. */
  async pids(): Promise<number[]> {
    const result = await run('ip', ['netns', 'pids', this.name], { check: false });
    return result.stdout.split(/\s+/).filter(Boolean).map(Number);
  }
}

/** Address without its prefix length. */
export function hostOf(cidr: string): string {
  return cidr.split('/')[0] ?? cidr;
}

/** `addr:port`, bracketing IPv6 as `wg` expects. */
export function endpointOf(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

// ---------------------------------------------------------------------------------------------
// The lab and its cleanup registry

type Cleanup = { readonly label: string; readonly run: () => Promise<void>; readonly runSync: () => void };

const liveLabs = new Set<Lab>();
let labCounter = 0;
let safetyNetInstalled = false;

/** Everything one test made; `close()` removes it in reverse order of creation. */
export class Lab {
  /** Prefix of every name this lab makes: `zt` + pid (base 36) + `_` + counter (base 36). */
  readonly id: string;
  #cleanups: Cleanup[] = [];
  #tempDir: Promise<string> | null = null;
  #closed = false;

  constructor() {
    this.id = `zt${process.pid.toString(36)}_${(labCounter++).toString(36)}`;
    installSafetyNet();
    liveLabs.add(this);
  }

  /** A name unique to this lab, short enough for an interface (≤ 15 characters). */
  name(label: string): string {
    const name = `${this.id}${label}`;
    if (name.length > MAX_INTERFACE_NAME || !/^[a-z0-9-]+$/.test(label)) {
      throw new RangeError(`lab: name ${JSON.stringify(name)} is not a valid interface name (≤ 15 of [a-z0-9-])`);
    }
    return name;
  }

  /** Registers an undo step; it runs at close() (async) or at process exit (sync). */
  defer(label: string, runAsync: () => Promise<void>, runSync: () => void): void {
    this.#cleanups.push({ label, run: runAsync, runSync });
  }

  async namespace(label: string): Promise<Netns> {
    const ns = new Netns(this, this.name(label));
    await run('ip', ['netns', 'add', ns.name]);
    this.defer(`namespace ${ns.name}`, async () => {
      // Whatever still runs inside (e.g. a daemon wg-quick detached) was started by this lab.
      for (const pid of await ns.pids()) killPid(pid);
      await run('ip', ['netns', 'del', ns.name], { check: false });
    }, () => deleteNamespaceSync(ns.name));
    await ns.ip(['link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * A veth pair between two namespaces, brought up, with the given addresses (CIDR) on each end.
   */
  async veth(a: Netns, b: Netns, options: VethOptions): Promise<VethPair> {
    const devA = this.name(options.labelA);
    const devB = this.name(options.labelB);
    await run('ip', ['link', 'add', devA, 'netns', a.name, 'type', 'veth', 'peer', 'name', devB, 'netns', b.name]);
    // Deleting either namespace deletes the pair; nothing separate to undo.
    const configure = async (ns: Netns, dev: string, addresses: readonly string[]): Promise<VethEnd> => {
      if (options.mtu !== undefined) await ns.setLink(dev, ['mtu', String(options.mtu)]);
      for (const cidr of addresses) await ns.addAddress(dev, cidr);
      await ns.setLink(dev, ['up']);
      return { ns, dev, addresses: addresses.map(hostOf) };
    };
    return {
      a: await configure(a, devA, options.addressesA),
      b: await configure(b, devB, options.addressesB),
    };
  }

  /** Starts a long-running process, inside `ns` when given; stopped at close(). */
  spawn(ns: Netns | null, command: string, args: readonly string[], env?: NodeJS.ProcessEnv,
    options: { readonly stdin?: boolean } = {}): LabProcess {
    const argv = ns === null ? [command, ...args] : ['ip', 'netns', 'exec', ns.name, command, ...args];
    const [file = command, ...rest] = argv;
    const child = spawn(file, rest, { stdio: [options.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: env ?? process.env });
    const labProcess = new LabProcess(argv.join(' '), child);
    this.defer(`process ${labProcess.pid}`, async () => {
      await labProcess.stop();
    }, () => labProcess.killNow());
    return labProcess;
  }

  /** Writes a file into this lab's private temporary directory and returns its path. */
  async tempFile(name: string, content: string): Promise<string> {
    // One directory per lab even when the first calls overlap: they share the pending mkdtemp.
    this.#tempDir ??= mkdtemp(join(tmpdir(), `${this.id}-`)).then((dir) => {
      this.defer(`temp dir ${dir}`, () => rm(dir, { recursive: true, force: true }),
        () => rmSync(dir, { recursive: true, force: true }));
      return dir;
    });
    const path = join(await this.#tempDir, name);
    await writeFile(path, content, { mode: 0o600 });
    return path;
  }

  /** Undoes everything, newest first; every step runs even if an earlier one fails. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const failures: string[] = [];
    for (const cleanup of this.#cleanups.reverse()) {
      try {
        await cleanup.run();
      } catch (error) {
        failures.push(`${cleanup.label}: ${(error as Error).message}`);
      }
    }
    removeLeftoverSockets(this.id);
    liveLabs.delete(this);
    if (failures.length > 0) throw new LabError(`cleanup failed:\n${failures.join('\n')}`);
  }

  /** Synchronous best-effort cleanup for the process-exit safety net. */
  closeSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const cleanup of this.#cleanups.reverse()) {
      try {
        cleanup.runSync();
      } catch {
        // The process is exiting; keep undoing the rest.
      }
    }
    removeLeftoverSockets(this.id);
    liveLabs.delete(this);
  }
}

export type VethOptions = {
  /** Interface name labels (each becomes `lab.name(label)`). */
  readonly labelA: string;
  readonly labelB: string;
  readonly addressesA: readonly string[];
  readonly addressesB: readonly string[];
  readonly mtu?: number;
};

export type VethEnd = { readonly ns: Netns; readonly dev: string; readonly addresses: readonly string[] };
export type VethPair = { readonly a: VethEnd; readonly b: VethEnd };

/** Runs `body` with a fresh lab and always closes it afterwards. */
export async function withLab<T>(body: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = new Lab();
  try {
    return await body(lab);
  } finally {
    await lab.close();
  }
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** Kills what runs inside namespace `name` (all of it started by a lab), then deletes it. */
function deleteNamespaceSync(name: string): void {
  for (const pid of spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).stdout.split(/\s+/)) {
    if (pid) killPid(Number(pid));
  }
  spawnSync('ip', ['netns', 'del', name]);
}

function removeLeftoverSockets(prefix: string): void {
  if (!existsSync(UAPI_SOCKET_DIR)) return;
  for (const entry of readdirSync(UAPI_SOCKET_DIR)) {
    if (entry.startsWith(prefix) && entry.endsWith('.sock')) rmSync(join(UAPI_SOCKET_DIR, entry), { force: true });
  }
}

function installSafetyNet(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  const closeAll = (): void => {
    for (const lab of [...liveLabs]) lab.closeSync();
  };
  process.on('exit', closeAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      closeAll();
      process.kill(process.pid, signal);
    });
  }
  sweepStaleNamespaces();
}

/**
 * Removes namespaces and sockets left by an earlier lab process that died without cleaning up
 * (SIGKILL): their names carry the creator's pid, and that pid no longer exists.
 */
function sweepStaleNamespaces(): void {
  const creatorAlive = (name: string): boolean => {
    const match = /^zt([0-9a-z]{1,5})_[0-9a-z]/.exec(name);
    if (match?.[1] === undefined) return true;
    const pid = parseInt(match[1], 36);
    return existsSync(`/proc/${pid}`);
  };
  const listing = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '';
  for (const line of listing.split('\n')) {
    const name = line.split(' ')[0];
    if (name && !creatorAlive(name)) deleteNamespaceSync(name);
  }
  if (existsSync(UAPI_SOCKET_DIR)) {
    for (const entry of readdirSync(UAPI_SOCKET_DIR)) {
      if (entry.endsWith('.sock') && !creatorAlive(entry)) rmSync(join(UAPI_SOCKET_DIR, entry), { force: true });
    }
  }
}

/** Fails loudly (never skips) when the lab cannot run here: not root, or no `ip netns`, or no TUN. */
export async function requireRoot(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new LabError('the lab tests need root (network namespaces, veth, TUN); run them as root');
  }
  const probe = `ztprobe${process.pid.toString(36)}`;
  try {
    await run('ip', ['netns', 'add', probe]);
    await run('ip', ['netns', 'exec', probe, 'ip', 'link', 'set', 'lo', 'up']);
  } catch (error) {
    throw new LabError(`\`ip netns\` does not work here: ${(error as Error).message}`, { cause: error });
  } finally {
    await run('ip', ['netns', 'del', probe], { check: false });
  }
  if (!existsSync('/dev/net/tun')) throw new LabError('/dev/net/tun is missing: userspace WireGuard needs TUN');
}

// ---------------------------------------------------------------------------------------------
// NAT

export type NatOptions = {
  /** The router's interface towards the outside; traffic leaving through it is masqueraded. */
  readonly outsideDev: string;
  /** `--random-fully`: fully randomised source ports (as many consumer NATs do). */
  readonly randomFully?: boolean;
  /** Conntrack UDP timeouts (unreplied and "stream"), so mappings expire within a test. */
  readonly udpTimeoutS?: number;
};

/** Turns `router` into an IPv4 MASQUERADE NAT. */
export async function makeNat(router: Netns, options: NatOptions): Promise<void> {
  await router.sysctl('net.ipv4.ip_forward', 1);
  await router.exec('iptables', ['-t', 'nat', '-A', 'POSTROUTING', '-o', options.outsideDev, '-j', 'MASQUERADE',
    ...(options.randomFully ? ['--random-fully'] : [])]);
  if (options.udpTimeoutS !== undefined) {
    // The conntrack sysctls appear per namespace once the NAT rule has loaded conntrack there.
    // An answered flow counts as a "stream" and uses the second, normally much longer, timeout.
    await router.sysctl('net.netfilter.nf_conntrack_udp_timeout', options.udpTimeoutS);
    await router.sysctl('net.netfilter.nf_conntrack_udp_timeout_stream', options.udpTimeoutS);
  }
}

/** The router's UDP conntrack entries, one line each (`conntrack -L` format). */
export async function conntrackUdp(router: Netns): Promise<string[]> {
  const result = await router.exec('conntrack', ['-L', '-p', 'udp']);
  return result.stdout.split('\n').filter((line) => line.startsWith('udp'));
}

// ---------------------------------------------------------------------------------------------
// WireGuard implementations

/** A running WireGuard daemon serving one interface. */
export type Daemon = {
  readonly implName: string;
  readonly ns: Netns;
  readonly ifname: string;
  readonly process: LabProcess;
  /** Stops it (SIGTERM) and waits until it has exited. */
  stop(): Promise<void>;
};

export type WgImpl = {
  readonly name: string;
  /** What wg-quick should run (WG_QUICK_USERSPACE_IMPLEMENTATION). */
  readonly quickUserspaceImplementation: string;
  /** Starts a daemon for `ifname` inside `ns` and resolves once its UAPI socket answers. */
  start(ns: Netns, ifname: string): Promise<Daemon>;
};

export function uapiSocketPath(ifname: string): string {
  return join(UAPI_SOCKET_DIR, `${ifname}.sock`);
}

/** Starts `command args` in the foreground in `ns` and waits for its interface and UAPI socket. */
async function startDaemon(implName: string, ns: Netns, ifname: string, command: string,
  args: readonly string[], env: NodeJS.ProcessEnv): Promise<Daemon> {
  const socket = uapiSocketPath(ifname);
  // Registered before the process so that it runs after the process has been stopped.
  ns.lab.defer(`socket ${socket}`, () => rm(socket, { force: true }), () => rmSync(socket, { force: true }));
  const daemonProcess = ns.lab.spawn(ns, command, args, env);
  await waitFor(`${implName} to serve ${ifname}`, DAEMON_READY_TIMEOUT_MS, async () => {
    if (!daemonProcess.running) {
      throw new LabError(`${implName} for ${ifname} exited early:\n${daemonProcess.output()}`);
    }
    if (!existsSync(socket) || !(await ns.linkExists(ifname))) return undefined;
    const probe = await ns.exec('wg', ['show', ifname, 'public-key'], { check: false });
    return probe.code === 0 ? true : undefined;
  });
  return {
    implName,
    ns,
    ifname,
    process: daemonProcess,
    async stop(): Promise<void> {
      await daemonProcess.stop();
    },
  };
}

/** Debian's wireguard-go (or `$ZTGATE_LAB_WIREGUARD_GO`), run with -f so the lab owns its pid. */
export const wireguardGo: WgImpl = {
  name: 'wireguard-go',
  quickUserspaceImplementation: process.env.ZTGATE_LAB_WIREGUARD_GO ?? 'wireguard-go',
  start(ns, ifname) {
    return startDaemon(this.name, ns, ifname, this.quickUserspaceImplementation, ['-f', ifname],
      { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'error' });
  },
};

/** ztgate's `wg` subcommand, a drop-in for `wireguard-go [-f] IFNAME`. */
export function ztgate(workers: number): WgImpl {
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`lab: ztgate workers must be ≥ 1, got ${workers}`);
  const binary = join(REPO_ROOT, 'bin', 'ztgate');
  return {
    name: `ztgate(workers=${workers})`,
    quickUserspaceImplementation: join(REPO_ROOT, 'bin', 'ztgate-wg'),
    start(ns, ifname) {
      return startDaemon(this.name, ns, ifname, binary, ['wg', '-f', '--workers', String(workers), ifname],
        process.env);
    },
  };
}

/** Which implementation runs on side A and which on side B of a two-sided test. */
export type ImplPairing = { readonly name: string; readonly a: WgImpl; readonly b: WgImpl };

/**
 * Reads `ZTGATE_LAB_IMPLS` (comma-separated; default `wireguard-go`): `wireguard-go`, `ztgate`
 * (`ztgate:N` for N workers, default `$ZTGATE_LAB_WORKERS` or 2), `mixed` (ztgate on A, wireguard-go on B).
 */
export function pairingsFromEnv(env: NodeJS.ProcessEnv = process.env): ImplPairing[] {
  return parsePairings(env.ZTGATE_LAB_IMPLS?.trim() || 'wireguard-go', Number(env.ZTGATE_LAB_WORKERS ?? 2));
}

/** Pairings from a comma-separated spec (the `ZTGATE_LAB_IMPLS` syntax). */
export function parsePairings(spec: string, defaultWorkers = 2): ImplPairing[] {
  return spec.split(',').map((item) => item.trim()).filter(Boolean).map((item): ImplPairing => {
    const [kind, workersText] = item.split(':');
    const workers = workersText === undefined ? defaultWorkers : Number(workersText);
    switch (kind) {
      case 'wireguard-go':
        return { name: 'wireguard-go', a: wireguardGo, b: wireguardGo };
      case 'ztgate':
        return { name: item, a: ztgate(workers), b: ztgate(workers) };
      case 'mixed':
        return { name: item, a: ztgate(workers), b: wireguardGo };
      default:
        throw new RangeError(`lab: unknown implementation pairing ${JSON.stringify(item)} ` +
          '(ZTGATE_LAB_IMPLS or --pairs: expected wireguard-go, ztgate[:N] or mixed[:N])');
    }
  });
}

// ---------------------------------------------------------------------------------------------
// wg

export type KeyPair = { readonly privateKey: string; readonly publicKey: string };

export async function generateKeyPair(): Promise<KeyPair> {
  const privateKey = (await run('wg', ['genkey'])).stdout.trim();
  const publicKey = (await run('wg', ['pubkey'], { input: `${privateKey}\n` })).stdout.trim();
  return { privateKey, publicKey };
}

export type PeerConfig = {
  readonly publicKey: string;
  readonly endpoint?: string;
  readonly allowedIps: readonly string[];
  readonly persistentKeepalive?: number;
};

export type InterfaceConfig = {
  readonly privateKey: string;
  readonly listenPort?: number;
  readonly peers: readonly PeerConfig[];
};

/** Renders a `wg setconf` file; long AllowedIPs lists are split over several lines (they add up). */
export function renderWgConfig(config: InterfaceConfig): string {
  const lines = ['[Interface]', `PrivateKey = ${config.privateKey}`];
  if (config.listenPort !== undefined) lines.push(`ListenPort = ${config.listenPort}`);
  for (const peer of config.peers) {
    lines.push('', '[Peer]', `PublicKey = ${peer.publicKey}`);
    if (peer.endpoint !== undefined) lines.push(`Endpoint = ${peer.endpoint}`);
    if (peer.persistentKeepalive !== undefined) lines.push(`PersistentKeepalive = ${peer.persistentKeepalive}`);
    for (let i = 0; i < peer.allowedIps.length; i += 1000) {
      lines.push(`AllowedIPs = ${peer.allowedIps.slice(i, i + 1000).join(', ')}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Runs `wg ARGS` inside `ns`. */
export async function wg(ns: Netns, args: readonly string[], options?: RunOptions): Promise<string> {
  return (await ns.exec('wg', args, options)).stdout;
}

let configFileCounter = 0;

/**
 * Replaces the whole configuration of `ifname` (`wg setconf` of a file in the lab's temp dir:
 * `wg` opens the path it is given, and Node's child stdin is a socket that cannot be opened as a file).
 */
export async function wgSetconf(ns: Netns, ifname: string, config: InterfaceConfig, timeoutMs?: number): Promise<void> {
  const path = await ns.lab.tempFile(`${ifname}-${configFileCounter++}.conf`, renderWgConfig(config));
  await ns.exec('wg', ['setconf', ifname, path], timeoutMs === undefined ? {} : { timeoutMs });
}

export type DumpedInterface = {
  readonly privateKey: string;
  readonly publicKey: string;
  readonly listenPort: number;
  readonly fwmark: string;
};

export type DumpedPeer = {
  readonly publicKey: string;
  readonly presharedKey: string | null;
  readonly endpoint: string | null;
  readonly allowedIps: readonly string[];
  /** Unix seconds; 0 when there has been none. */
  readonly latestHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly persistentKeepalive: number | null;
};

export type WgDump = { readonly iface: DumpedInterface; readonly peers: readonly DumpedPeer[] };

/** Parses `wg show IFNAME dump` (tab-separated; first line the interface, then one line per peer). */
export function parseWgDump(text: string): WgDump {
  const [first, ...rest] = text.split('\n').filter((line) => line.length > 0);
  const head = first?.split('\t');
  if (head?.length !== 4) throw new LabError(`unreadable wg dump interface line: ${JSON.stringify(first)}`);
  const [privateKey = '', publicKey = '', listenPort = '', fwmark = ''] = head;
  const none = (value: string): string | null => (value === '(none)' ? null : value);
  const peers = rest.map((line): DumpedPeer => {
    const fields = line.split('\t');
    if (fields.length !== 8) throw new LabError(`unreadable wg dump peer line: ${JSON.stringify(line)}`);
    const [key = '', psk = '', endpoint = '', allowed = '', handshake = '', rx = '', tx = '', keepalive = ''] = fields;
    return {
      publicKey: key,
      presharedKey: none(psk),
      endpoint: none(endpoint),
      allowedIps: allowed === '(none)' ? [] : allowed.split(','),
      latestHandshake: Number(handshake),
      rxBytes: Number(rx),
      txBytes: Number(tx),
      persistentKeepalive: keepalive === 'off' ? null : Number(keepalive),
    };
  });
  return { iface: { privateKey, publicKey, listenPort: Number(listenPort), fwmark }, peers };
}

export async function wgShowDump(ns: Netns, ifname: string): Promise<WgDump> {
  return parseWgDump(await wg(ns, ['show', ifname, 'dump']));
}

/** The one peer with `publicKey` in a dump, or an error naming what was there instead. */
export function peerIn(dump: WgDump, publicKey: string): DumpedPeer {
  const peer = dump.peers.find((candidate) => candidate.publicKey === publicKey);
  if (peer === undefined) throw new LabError(`peer ${publicKey} missing from dump of ${dump.iface.publicKey}`);
  return peer;
}

// ---------------------------------------------------------------------------------------------
// Traffic: ping and iperf3

export type PingOptions = {
  readonly count?: number;
  readonly intervalS?: number;
  /** Seconds to wait for each reply (-W). */
  readonly replyTimeoutS?: number;
  /** Overall deadline in seconds (-w): ping keeps trying until `count` replies or this. */
  readonly deadlineS?: number;
  /** ICMP payload bytes (-s). */
  readonly size?: number;
  /** -M do: set DF / forbid fragmentation, so oversize packets fail instead of fragmenting. */
  readonly dontFragment?: boolean;
};

export type PingResult = {
  readonly transmitted: number;
  readonly received: number;
  readonly lossPercent: number;
  readonly rttAvgMs: number | null;
  /** Each reply's RTT in ms, in the order they came (ping's per-reply `time=`). */
  readonly rttsMs: readonly number[];
  /** ping's complaints (e.g. "message too long"), if any. */
  readonly errors: string;
};

/** Pings `target` from `ns`; never throws for lost replies (the result says), only for a broken ping. */
export async function ping(ns: Netns, target: string, options: PingOptions = {}): Promise<PingResult> {
  const count = options.count ?? 3;
  const intervalS = options.intervalS ?? 0.2;
  const replyTimeoutS = options.replyTimeoutS ?? 1;
  const deadlineS = options.deadlineS ?? Math.ceil(count * intervalS + replyTimeoutS + 1);
  const args = ['-n', '-c', String(count), '-i', String(intervalS), '-W', String(replyTimeoutS), '-w', String(deadlineS)];
  if (options.size !== undefined) args.push('-s', String(options.size));
  if (options.dontFragment) args.push('-M', 'do');
  args.push(target);
  const result = await ns.exec('ping', args, { check: false, timeoutMs: (deadlineS + 5) * 1000 });
  const summary = /(\d+) packets transmitted, (\d+) received/.exec(result.stdout);
  if (summary === null) {
    throw new LabError(`ping ${target} from ${ns.name} printed no summary:\n${result.stderr}${result.stdout}`);
  }
  const transmitted = Number(summary[1]);
  const received = Number(summary[2]);
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(result.stdout);
  return {
    transmitted,
    received,
    lossPercent: transmitted === 0 ? 100 : (100 * (transmitted - received)) / transmitted,
    rttAvgMs: rtt?.[1] === undefined ? null : Number(rtt[1]),
    rttsMs: [...result.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])),
    errors: result.stderr.trim(),
  };
}

export type IperfOptions = {
  readonly protocol: 'tcp' | 'udp';
  readonly durationS: number;
  /** -R: the server sends, the client receives. */
  readonly reverse?: boolean;
  /** UDP target bitrate, iperf3 syntax (e.g. "300M"). */
  readonly udpBitrate?: string;
  readonly port?: number;
};

export type IperfResult = {
  /** Received payload rate. */
  readonly gbps: number;
  readonly bytesReceived: number;
  /** UDP only: datagrams lost, percent. */
  readonly lossPercent: number | null;
};

type IperfJson = {
  readonly error?: string;
  readonly end?: {
    readonly sum_received?: { readonly bits_per_second: number; readonly bytes: number; readonly lost_percent?: number };
  };
};

/** iperf3 with its server (one-off) in `server.ns` bound to `server.address`, its client in `client`. */
export async function iperf3(server: { readonly ns: Netns; readonly address: string }, client: Netns,
  options: IperfOptions): Promise<IperfResult> {
  const port = String(options.port ?? 5201);
  const serverProcess = server.ns.lab.spawn(server.ns, 'iperf3', ['-s', '-1', '-B', server.address, '-p', port]);
  try {
    // iperf3 block-buffers its banner when not on a terminal, so watch for the listening socket instead.
    await waitFor(`iperf3 listening on ${server.address}:${port}`, 5_000, async () => {
      if (!serverProcess.running) throw new LabError(`iperf3 server exited:\n${serverProcess.output()}`);
      const { stdout } = await server.ns.exec('ss', ['-H', '-t', '-l', '-n', 'sport', '=', `:${port}`]);
      return stdout.trim() === '' ? undefined : true;
    });
    const args = ['-c', server.address, '-p', port, '-t', String(options.durationS), '--json'];
    if (options.protocol === 'udp') args.push('-u', '-b', options.udpBitrate ?? '200M');
    if (options.reverse) args.push('-R');
    const result = await client.exec('iperf3', args, { check: false, timeoutMs: (options.durationS + 15) * 1000 });
    let report: IperfJson;
    try {
      report = JSON.parse(result.stdout) as IperfJson;
    } catch (error) {
      throw new LabError(`iperf3 printed no JSON:\n${result.stderr}${result.stdout}`, { cause: error });
    }
    if (report.error !== undefined) throw new LabError(`iperf3: ${report.error}`);
    // The receiver's view (iperf3 ≥ 3.12 reports it for UDP too): what actually crossed the tunnel.
    const received = report.end?.sum_received;
    if (received === undefined) throw new LabError('iperf3 report has no end.sum_received');
    return {
      gbps: received.bits_per_second / 1e9,
      bytesReceived: received.bytes,
      lossPercent: options.protocol === 'udp' ? received.lost_percent ?? null : null,
    };
  } finally {
    await serverProcess.stop();
  }
}

export type LinkStats = { readonly rxBytes: number; readonly rxPackets: number; readonly txBytes: number; readonly txPackets: number };

/** The kernel's counters for `dev` (`ip -stats link show`). */
export async function linkStats(ns: Netns, dev: string): Promise<LinkStats> {
  const text = (await ns.ip(['-j', '-s', 'link', 'show', 'dev', dev])).stdout;
  const parsed = JSON.parse(text) as ReadonlyArray<{ stats64?: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } } }>;
  const stats = parsed[0]?.stats64;
  if (stats === undefined) throw new LabError(`no stats64 for ${dev} in ${ns.name}`);
  return { rxBytes: stats.rx.bytes, rxPackets: stats.rx.packets, txBytes: stats.tx.bytes, txPackets: stats.tx.packets };
}

// ---------------------------------------------------------------------------------------------
// The usual topology: two sides joined by one veth, a tunnel between them

/** Underlay (veth) and tunnel addresses of the two-sided topology. */
export const PAIR_ADDRESSES = {
  underlay: { a: ['198.18.0.1/24', 'fd5a::1/64'], b: ['198.18.0.2/24', 'fd5a::2/64'] },
  tunnel: { a: ['198.19.0.1/24', 'fd5b::1/64'], b: ['198.19.0.2/24', 'fd5b::2/64'] },
  listenPort: { a: 51820, b: 51821 },
} as const;

export type Side = {
  readonly ns: Netns;
  readonly underlay: VethEnd;
  readonly daemon: Daemon;
  readonly ifname: string;
  readonly keys: KeyPair;
  readonly listenPort: number;
  /** What was given to `wg setconf`; `restartSide` applies it again. */
  readonly config: InterfaceConfig;
  readonly tunnelAddresses: readonly string[];
  readonly tunnelMtu: number | undefined;
  /** Tunnel addresses without prefix. */
  readonly tunnelV4: string;
  readonly tunnelV6: string;
};

export type Pair = { readonly a: Side; readonly b: Side };

export type PairOptions = {
  readonly implA: WgImpl;
  readonly implB: WgImpl;
  readonly underlayMtu?: number;
  readonly tunnelMtu?: number;
  /** Which side knows the other's endpoint up front; default both. */
  readonly endpoints?: 'both' | 'a-knows-b' | 'b-knows-a';
  readonly persistentKeepalive?: number;
};

/** Brings a tunnel interface up in `ns` with the given addresses (CIDR) and optional MTU. */
export async function upTunnel(ns: Netns, ifname: string, addresses: readonly string[], mtu?: number): Promise<void> {
  for (const cidr of addresses) await ns.addAddress(ifname, cidr);
  await ns.setLink(ifname, [...(mtu === undefined ? [] : ['mtu', String(mtu)]), 'up']);
}

/** `cidr`'s address as a host route: /32 or /128. */
export function hostRoute(cidr: string): string {
  return `${hostOf(cidr)}/${cidr.includes(':') ? 128 : 32}`;
}

/** Starts a daemon in `ns`, applies `config` and brings the tunnel up: one side, ready for traffic. */
async function startSide(impl: WgImpl, ns: Netns, underlay: VethEnd, ifname: string, keys: KeyPair,
  config: InterfaceConfig, tunnelAddresses: readonly string[], tunnelMtu: number | undefined): Promise<Side> {
  const daemon = await impl.start(ns, ifname);
  await wgSetconf(ns, ifname, config);
  await upTunnel(ns, ifname, tunnelAddresses, tunnelMtu);
  const [tunnelV4 = '', tunnelV6 = ''] = tunnelAddresses.map(hostOf);
  return { ns, underlay, daemon, ifname, keys, listenPort: config.listenPort ?? 0, config, tunnelAddresses,
    tunnelMtu, tunnelV4, tunnelV6 };
}

/** Stops a side's daemon and starts `impl` again on the same interface with the same keys and config. */
export async function restartSide(side: Side, impl: WgImpl): Promise<Side> {
  await side.daemon.stop();
  return startSide(impl, side.ns, side.underlay, side.ifname, side.keys, side.config, side.tunnelAddresses,
    side.tunnelMtu);
}

/** Two namespaces `a` and `b` joined by veth, each running a daemon, configured as each other's peer. */
export async function buildPair(lab: Lab, options: PairOptions): Promise<Pair> {
  const [nsA, nsB] = await Promise.all([lab.namespace('a'), lab.namespace('b')]);
  const veth = await lab.veth(nsA, nsB, {
    labelA: 'va', labelB: 'vb',
    addressesA: PAIR_ADDRESSES.underlay.a, addressesB: PAIR_ADDRESSES.underlay.b,
    ...(options.underlayMtu === undefined ? {} : { mtu: options.underlayMtu }),
  });
  const keys = { a: await generateKeyPair(), b: await generateKeyPair() };
  const endpoints = options.endpoints ?? 'both';
  const makeSide = (label: 'a' | 'b', ns: Netns, impl: WgImpl, end: VethEnd, peerEnd: VethEnd): Promise<Side> => {
    const other = label === 'a' ? 'b' : 'a';
    const knowsPeer = endpoints === 'both' || endpoints === `${label}-knows-${other}`;
    const config: InterfaceConfig = {
      privateKey: keys[label].privateKey,
      listenPort: PAIR_ADDRESSES.listenPort[label],
      peers: [{
        publicKey: keys[other].publicKey,
        allowedIps: PAIR_ADDRESSES.tunnel[other].map(hostRoute),
        ...(knowsPeer ? { endpoint: endpointOf(peerEnd.addresses[0] ?? '', PAIR_ADDRESSES.listenPort[other]) } : {}),
        ...(options.persistentKeepalive === undefined ? {} : { persistentKeepalive: options.persistentKeepalive }),
      }],
    };
    return startSide(impl, ns, end, lab.name(`w${label}`), keys[label], config, PAIR_ADDRESSES.tunnel[label],
      options.tunnelMtu);
  };
  const [a, b] = await Promise.all([
    makeSide('a', nsA, options.implA, veth.a, veth.b),
    makeSide('b', nsB, options.implB, veth.b, veth.a),
  ]);
  return { a, b };
}

// ---------------------------------------------------------------------------------------------
// node:test glue

export type LabTestOptions = {
  /** Declares the test only for pairings this accepts (for a behaviour one implementation is known to lack here). */
  readonly when?: (pairing: ImplPairing) => boolean;
  /** Pairings (ZTGATE_LAB_IMPLS syntax) this test also runs with, beyond the chosen ones: for core tests. */
  readonly alsoWith?: string;
};

/**
 * Declares one test per implementation pairing from `ZTGATE_LAB_IMPLS`, each with a fresh lab
 * that is closed (everything removed) however the test ends.
 */
export function labTest(title: string, timeoutMs: number, body: (lab: Lab, pairing: ImplPairing) => Promise<void>,
  options: LabTestOptions = {}): void {
  const chosen = pairingsFromEnv();
  const extra = parsePairings(options.alsoWith ?? '').filter((p) => !chosen.some((c) => c.name === p.name));
  for (const pairing of [...chosen, ...extra]) {
    if (options.when !== undefined && !options.when(pairing)) continue;
    test(`${title} [${pairing.name}]`, { timeout: timeoutMs }, () => withLab((lab) => body(lab, pairing)));
  }
}

// ---------------------------------------------------------------------------------------------
// Counting drops

/** The latest drop counters each ztgate thread logged ("dropped packets" JSONL records), per thread. */
export function latestDropCounts(output: string): Record<string, Record<string, number>> {
  const byThread: Record<string, Record<string, number>> = {};
  for (const line of output.split('\n')) {
    if (!line.includes('"dropped packets"')) continue;
    try {
      const record = JSON.parse(line) as { thread: string; drops: Record<string, number> };
      byThread[record.thread] = record.drops;
    } catch {
      // A line cut at the start of the kept output: a later report repeats the counters.
    }
  }
  return byThread;
}

/** Drop counters summed over threads, by reason. */
export function dropsByReason(byThread: Record<string, Record<string, number>>): Record<string, number> {
  const total: Record<string, number> = {};
  for (const counts of Object.values(byThread)) {
    for (const [reason, n] of Object.entries(counts)) total[reason] = (total[reason] ?? 0) + n;
  }
  return total;
}

/** Datagrams the kernel dropped for a full socket buffer in `ns` (UDP over IPv4 and IPv6). */
export async function kernelUdpDrops(ns: Netns): Promise<number> {
  const snmp = (await ns.exec('cat', ['/proc/net/snmp'])).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  const names = snmp[0]?.split(/\s+/) ?? [];
  const v4 = Number(snmp[1]?.split(/\s+/)[names.indexOf('RcvbufErrors')] ?? 0);
  const v6 = Number(/Udp6RcvbufErrors\s+(\d+)/.exec((await ns.exec('cat', ['/proc/net/snmp6'])).stdout)?.[1] ?? 0);
  return v4 + v6;
}
