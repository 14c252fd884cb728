// ztgate's command line. `ztgate wg [-f|--foreground] [--workers N] [--log-level L] IFNAME` runs a
// static-mode WireGuard device managed by `wg` over UAPI, a drop-in for `wireguard-go IFNAME`: it
// detaches once the interface and the UAPI socket are ready, unless -f or WG_PROCESS_FOREGROUND=1.
import { spawn } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createLogger, parseLogLevel } from './log.ts';
import { Device, describeStartError } from '../control/device.ts';
import { runNetcheck } from './netcheck.ts';
import { CONNECT_USAGE, runConnect } from './connect.ts';
import { parseKeepWarm, parseWorkers, runUntilStopped, UsageError } from './daemon.ts';

const USAGE = `usage:
  ztgate wg [-f|--foreground] [--workers N] [--keep-warm-ms MS] [--log-level LEVEL] IFNAME
      a WireGuard device managed by wg(8), like wireguard-go (detaches unless -f)
  ztgate netcheck --stun HOST[:PORT] [--stun ...] [--turn HOST[:PORT] (--turn-username U
                  --turn-password P | --turn-secret S)] [--timeout MS] [--json]
      UDP reachability, host/server-reflexive addresses, NAT mapping, a TURN relayed address
${CONNECT_USAGE}
  ztgate --version`;

/** The environment variable wireguard-go reads to stay in the foreground; we honour it too. */
const FOREGROUND_ENV = 'WG_PROCESS_FOREGROUND';
/** File descriptor on which a detached child tells its parent it is ready. */
const READY_FD = 3;

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--version' || command === '-v') {
    process.stdout.write('ztgate 0.1.0\n');
    return 0;
  }
  if (command === 'wg') return runWg(rest);
  if (command === 'netcheck') return runNetcheck(rest);
  if (command === 'connect') return runConnect(rest);
  throw new UsageError(command === undefined ? 'missing command' : `unknown command '${command}'`);
}

async function runWg(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...args],
    options: {
      foreground: { type: 'boolean', short: 'f', default: false },
      workers: { type: 'string' },
      'keep-warm-ms': { type: 'string' },
      'log-level': { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError('wg takes exactly one interface name');
  const interfaceName = positionals[0]!;
  const workers = parseWorkers(values.workers ?? process.env['ZTGATE_WORKERS']);
  const keepWarmMs = parseKeepWarm(values['keep-warm-ms'] ?? process.env['ZTGATE_KEEP_WARM_MS']);
  const level = parseLogLevel(values['log-level'] ?? process.env['ZTGATE_LOG_LEVEL'] ?? process.env['LOG_LEVEL']);
  const foreground = values.foreground || process.env[FOREGROUND_ENV] === '1';
  if (!foreground) return detach(args);

  const logger = createLogger(level, { interface: interfaceName });
  let device: Device;
  try {
    device = await Device.start({ interfaceName, workers, keepWarmMs, logger, logLevel: level });
  } catch (error) {
    logger.error({ err: error }, 'cannot start');
    process.stderr.write(`ztgate: ${interfaceName}: ${describeStartError(error)}\n`);
    return 1;
  }
  signalReady();
  await runUntilStopped(device);
  logger.info('shut down');
  return 0;
}

/**
 * Re-runs this command in the foreground as a detached child and waits for it to report ready (or
 * to fail), as wireguard-go does, so that `wg` can be used as soon as this process exits.
 */
function detach(args: readonly string[]): Promise<number> {
  const logFile = process.env['ZTGATE_LOG_FILE'];
  const logFd = logFile === undefined ? 'ignore' : openSync(logFile, 'a');
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'wg', ...args], {
    detached: true,
    env: { ...process.env, [FOREGROUND_ENV]: '1', ZTGATE_READY_FD: String(READY_FD) },
    stdio: ['ignore', 'ignore', logFile === undefined ? 'pipe' : logFd, 'pipe'],
  });
  let errorText = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (errorText.length < 4096) errorText += chunk.toString();
  });
  return new Promise((resolve) => {
    const readyPipe = child.stdio[READY_FD] as NodeJS.ReadableStream | null;
    readyPipe?.once('data', () => {
      child.unref();
      child.stderr?.destroy();
      (readyPipe as unknown as { destroy(): void }).destroy();
      resolve(0);
    });
    child.once('exit', (code) => {
      const lines = errorText.split('\n').filter((line) => line.startsWith('ztgate:'));
      process.stderr.write(lines.length > 0 ? `${lines.join('\n')}\n` : `ztgate: the daemon exited with status ${code}\n`);
      resolve(code === 0 || code === null ? 1 : code);
    });
  });
}

function signalReady(): void {
  const fd = process.env['ZTGATE_READY_FD'];
  if (fd === undefined) return;
  try {
    writeSync(Number(fd), 'ready\n');
    closeSync(Number(fd));
  } catch {
    // The parent is gone: nobody to tell.
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError || (error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`ztgate: ${error.message}\n${USAGE}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`ztgate: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
