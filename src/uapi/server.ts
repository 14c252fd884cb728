// The UAPI socket: /var/run/wireguard/<ifname>.sock, where wg(8) finds a userspace WireGuard
// device (https://www.wireguard.com/xplatform/). A thin I/O shell around protocol.ts: it frames
// each connection's bytes into requests, hands parsed operations to the device's handler, and
// writes the replies in order. Socket placement and permissions follow wireguard-go's
// ipc/uapi_unix.go: directory 0755, socket 0700, a live socket is never taken over, a stale one
// (its process gone) is replaced.

import { connect, createServer, type Server, type Socket } from 'node:net';
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { SyscallError } from '../errors.ts';
import type { Logger } from '../main/log.ts';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  UAPI_ERRNO,
  UapiError,
  UapiRequestDecoder,
  formatErrno,
  formatGet,
  setOperations,
  type DeviceSnapshot,
  type SetOperation,
  type UapiRequest,
} from './protocol.ts';

export const DEFAULT_SOCKET_DIRECTORY = '/var/run/wireguard';

/** What the device behind the socket provides. Both run synchronously, one request at a time. */
export interface UapiHandler {
  snapshot(): DeviceSnapshot;
  /**
   * Iterating `operations` parses them, and throws UapiError at the first malformed line: iterate
   * once to the end before changing anything, then again to apply (see setOperations). A failure
   * of the apply itself should throw UapiError too (e.g. errno -98).
   */
  apply(operations: Iterable<SetOperation>): void;
}

export interface UapiServerOptions {
  readonly interfaceName: string;
  readonly handler: UapiHandler;
  readonly socketDirectory?: string;
  /** Largest accepted `set=1` body in bytes (default 64 MiB); a larger one gets errno -5. */
  readonly maxRequestBytes?: number;
  readonly logger?: Logger;
}

export interface UapiServer {
  readonly socketPath: string;
  /** Stops accepting, drops open connections, and removes the socket file (if still ours). */
  close(): Promise<void>;
}

/** Linux interface names: at most IFNAMSIZ - 1 = 15 bytes, no '/', ':' or whitespace. */
const INTERFACE_NAME = /^[^/:\s]{1,15}$/;

export async function listenUapi(options: UapiServerOptions): Promise<UapiServer> {
  const { interfaceName, handler, logger } = options;
  if (typeof interfaceName !== 'string' || !INTERFACE_NAME.test(interfaceName) || interfaceName === '.' || interfaceName === '..') {
    throw new RangeError(`uapi: '${String(interfaceName)}' is not a valid interface name`);
  }
  const maxRequestBytes = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  const directory = options.socketDirectory ?? DEFAULT_SOCKET_DIRECTORY;
  const socketPath = `${directory}/${interfaceName}.sock`;

  await mkdir(directory, { recursive: true, mode: 0o755 });
  await removeStaleSocket(socketPath);

  const connections = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    serveConnection(socket, handler, maxRequestBytes, logger);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // wireguard-go creates the socket under umask 077. Changing the umask is process-wide (and not
  // allowed in worker threads), so the mode is set right after bind instead; until then the
  // default umask leaves the socket without group/other write bits, which connect(2) requires.
  await chmod(socketPath, 0o700);
  const { ino } = await lstat(socketPath);
  server.on('error', (error) => logger?.error({ err: error }, 'uapi: server error'));
  logger?.info({ socketPath }, 'uapi: listening');

  return {
    socketPath,
    close: () => closeServer(server, connections, socketPath, ino),
  };
}

/** Refuses a socket another live process serves; removes one whose process is gone. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(socketPath)).isSocket();
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return;
    throw error;
  }
  if (!isSocket) {
    throw new SyscallError('bind', osConstants.errno.EEXIST, `uapi: ${socketPath} exists and is not a socket`);
  }
  const live = await new Promise<boolean>((resolve, reject) => {
    const probe = connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (error) => {
      if (errorCode(error) === 'ECONNREFUSED') resolve(false);
      else reject(error);
    });
  });
  if (live) {
    throw new SyscallError('bind', osConstants.errno.EADDRINUSE, `uapi: ${socketPath} is served by another live process`);
  }
  await unlink(socketPath).catch((error: unknown) => {
    if (errorCode(error) !== 'ENOENT') throw error;
  });
}

async function closeServer(server: Server, connections: Set<Socket>, socketPath: string, ino: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  for (const socket of connections) socket.destroy();
  await closed;
  // libuv unlinks the path on close; this covers the case where it did not, without touching a
  // socket someone else has bound at the same path since.
  try {
    if ((await lstat(socketPath)).ino === ino) await unlink(socketPath);
  } catch (error) {
    if (errorCode(error) !== 'ENOENT') throw error;
  }
}

/**
 * Serves one connection: requests are answered strictly in order. When the peer reads slower than
 * it asks (pipelined `get=1`s), reading pauses until the replies drain, so memory stays bounded.
 * A client that disconnects mid-request has that request dropped, never half-applied.
 */
function serveConnection(socket: Socket, handler: UapiHandler, maxRequestBytes: number, logger: Logger | undefined): void {
  const decoder = new UapiRequestDecoder(maxRequestBytes);
  let closing = false;
  let inputEnded = false;

  const pump = (): void => {
    while (!closing && !socket.writableNeedDrain) {
      const request = decoder.next();
      if (request === undefined) {
        if (inputEnded) {
          closing = true;
          socket.end();
        } else {
          socket.resume();
        }
        return;
      }
      respond(request);
    }
    if (!closing) socket.pause();
  };

  const respond = (request: UapiRequest): void => {
    switch (request.kind) {
      case 'get':
        socket.write(answerGet(handler, logger));
        return;
      case 'set':
        socket.write(answerSet(handler, request.body, logger));
        return;
      case 'reject':
        logger?.warn({ errno: request.error.errno }, request.error.message);
        socket.write(formatErrno(request.error.errno));
        return;
      case 'abort':
        logger?.warn({ errno: request.error.errno }, request.error.message);
        closing = true;
        socket.end(formatErrno(request.error.errno));
        return;
      case 'unknownOperation':
        logger?.warn({ line: request.line.slice(0, 80) }, 'uapi: unknown operation, closing the connection');
        closing = true;
        socket.end();
        return;
    }
  };

  socket.on('data', (chunk: Buffer) => {
    if (closing) return;
    decoder.push(chunk);
    pump();
  });
  socket.on('drain', pump);
  socket.on('end', () => {
    inputEnded = true;
    if (decoder.inRequest) logger?.debug('uapi: client ended the connection mid-request; request dropped');
    pump();
  });
  socket.on('finish', () => socket.destroy());
  // ECONNRESET/EPIPE from a client that went away: nothing to answer, the socket closes itself.
  socket.on('error', (error) => logger?.debug({ err: error }, 'uapi: connection error'));
}

function answerGet(handler: UapiHandler, logger: Logger | undefined): string {
  try {
    return formatGet(handler.snapshot());
  } catch (error) {
    return formatErrno(failureErrno(error, 'get', logger));
  }
}

function answerSet(handler: UapiHandler, body: string, logger: Logger | undefined): string {
  try {
    handler.apply(setOperations(body));
    return formatErrno(0);
  } catch (error) {
    return formatErrno(failureErrno(error, 'set', logger));
  }
}

function failureErrno(error: unknown, operation: 'get' | 'set', logger: Logger | undefined): number {
  if (error instanceof UapiError) {
    logger?.warn({ errno: error.errno }, error.message);
    return error.errno;
  }
  logger?.error({ err: error }, `uapi: ${operation} failed unexpectedly`);
  return UAPI_ERRNO.unknown;
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : undefined;
}
