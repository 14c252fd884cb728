// Shared by the io lab tests: run code inside a fresh network namespace, and build packets.
import { execFileSync } from 'node:child_process';
import { CLONE_NEWNET, O_CLOEXEC, O_RDONLY, libc } from '../../src/io/libc.ts';

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

let counter = 0;

/** Creates a namespace named after this process, with loopback up; deleted by `deleteNetns`. */
export function createNetns(): string {
  const name = `ztio-${process.pid}-${counter++}`;
  ip('netns', 'add', name);
  ip('-n', name, 'link', 'set', 'lo', 'up');
  return name;
}

export function deleteNetns(name: string): void {
  try { ip('netns', 'del', name); } catch { /* already gone */ }
}

function openNs(path: string): number {
  const fd = libc.open(path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) throw new Error(`cannot open ${path}`);
  return fd;
}

/**
 * Runs `body` with the main thread inside namespace `name` (setns(2) changes only the calling
 * thread; sockets and TUN devices made meanwhile belong to that namespace), then switches back.
 */
export async function insideNetns<T>(name: string, body: () => Promise<T> | T): Promise<T> {
  const original = openNs('/proc/thread-self/ns/net');
  const target = openNs(`/run/netns/${name}`);
  try {
    if (libc.setns(target, CLONE_NEWNET) < 0) throw new Error(`setns into ${name} failed`);
    try {
      return await body();
    } finally {
      if (libc.setns(original, CLONE_NEWNET) < 0) throw new Error('setns back failed');
    }
  } finally {
    libc.close(target);
    libc.close(original);
  }
}

/** A fresh namespace for the duration of `body`, always deleted afterwards. */
export async function withNetns<T>(body: (name: string) => Promise<T> | T): Promise<T> {
  const name = createNetns();
  try {
    return await insideNetns(name, () => body(name));
  } finally {
    deleteNetns(name);
  }
}

/** RFC 1071 Internet checksum of bytes[from, to). */
export function internetChecksum(bytes: Uint8Array, from: number, to: number): number {
  let sum = 0;
  for (let k = from; k < to; k += 2) sum += ((bytes[k] ?? 0) << 8) | (k + 1 < to ? (bytes[k + 1] ?? 0) : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Writes an IPv4 ICMP echo request (RFC 792) into `into`; returns its length. */
export function writeIcmpEcho(into: Uint8Array, source: readonly number[], destination: readonly number[], id: number, sequence: number, payload: Uint8Array): number {
  const length = 20 + 8 + payload.length;
  const v = new DataView(into.buffer, into.byteOffset, length);
  into.fill(0, 0, length);
  v.setUint8(0, 0x45);
  v.setUint16(2, length);
  v.setUint16(4, id);
  v.setUint8(8, 64); // TTL
  v.setUint8(9, 1); // ICMP
  into.set(source, 12);
  into.set(destination, 16);
  v.setUint16(10, internetChecksum(into, 0, 20));
  v.setUint8(20, 8); // echo request
  v.setUint16(24, id);
  v.setUint16(26, sequence);
  into.set(payload, 28);
  v.setUint16(22, internetChecksum(into, 20, length));
  return length;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
