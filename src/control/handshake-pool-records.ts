// How handshake jobs and their results cross between the control thread and the handshake threads
// (handshake-pool.ts, workers/handshake-worker.ts): fixed-size records packed into one buffer per
// batch, whose ArrayBuffer is transferred, not cloned. A structured clone of the job objects
// serializes every key and hash separately, and cost the control thread more than the rest of a
// handshake's bookkeeping. Job ids are u32 (the engine's ids wrap far beyond what is ever out).
import { KEY_SIZE, MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, TIMESTAMP_SIZE } from '../wireguard/constants.ts';
import type { PresharedKey, PrivateKey, PublicKey } from '../wireguard/keys.ts';
import type { HandshakeJob, HandshakeJobResult } from '../wireguard/noise.ts';
import { INITIATION_TIMESTAMP_SIZE } from '../wireguard/messages.ts';

const KIND_OPEN = 1;
const KIND_RESPOND = 2;
/** A result of an openInitiation job whose static key did not open. */
const KIND_OPEN_FAILED = 3;

/**
 * kind (1), id (4), then the fields. Jobs: openInitiation = private key, public key, message (217
 * bytes in all, the larger); respond = remote static, preshared key, timestamp, hash, chaining key,
 * remote ephemeral, sender index. Results: openInitiation = remote static, hash, chaining key,
 * remote ephemeral, sealed timestamp, sender index (165, the larger); respond = response, send key,
 * receive key.
 */
const HEADER = 5;
export const JOB_RECORD_SIZE = HEADER + 2 * KEY_SIZE + MESSAGE_INITIATION_SIZE;
export const RESULT_RECORD_SIZE = HEADER + 4 * KEY_SIZE + INITIATION_TIMESTAMP_SIZE + 4;

function writeU32(out: Uint8Array, at: number, value: number): void {
  out[at] = value & 0xff;
  out[at + 1] = (value >>> 8) & 0xff;
  out[at + 2] = (value >>> 16) & 0xff;
  out[at + 3] = (value >>> 24) & 0xff;
}

function writeHeader(out: Uint8Array, at: number, kind: number, id: number): void {
  out[at] = kind;
  writeU32(out, at + 1, id);
}

function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

/** Packs fields one after another from `at`; returns where the next goes. */
function put(out: Uint8Array, at: number, ...fields: readonly Uint8Array[]): number {
  for (const field of fields) {
    out.set(field, at);
    at += field.length;
  }
  return at;
}

/** Writes `job` as record `index` of `out`. */
export function encodeJob(job: HandshakeJob, out: Uint8Array, index: number): void {
  const at = index * JOB_RECORD_SIZE;
  if (job.kind === 'openInitiation') {
    writeHeader(out, at, KIND_OPEN, job.id);
    put(out, at + HEADER, job.local.privateKey, job.local.publicKey, job.message.subarray(0, MESSAGE_INITIATION_SIZE));
    return;
  }
  writeHeader(out, at, KIND_RESPOND, job.id);
  const c = job.consumed;
  const next = put(out, at + HEADER, job.remoteStatic, job.presharedKey, c.timestamp, c.hash, c.chainingKey, c.remoteEphemeral);
  writeU32(out, next, c.senderIndex);
}

/** Record `index` of `records` as a job; its byte fields are views into `records`. */
export function decodeJob(records: Uint8Array, index: number): HandshakeJob {
  const at = index * JOB_RECORD_SIZE;
  const id = readU32(records, at + 1);
  const field = (offset: number, length: number): Uint8Array => records.subarray(at + HEADER + offset, at + HEADER + offset + length);
  if (records[at] === KIND_OPEN) {
    return {
      kind: 'openInitiation', id,
      local: { privateKey: field(0, KEY_SIZE) as PrivateKey, publicKey: field(KEY_SIZE, KEY_SIZE) as PublicKey },
      message: field(2 * KEY_SIZE, MESSAGE_INITIATION_SIZE),
    };
  }
  const consumedAt = 2 * KEY_SIZE;
  const remoteStatic = field(0, KEY_SIZE) as PublicKey;
  return {
    kind: 'respond', id, remoteStatic, presharedKey: field(KEY_SIZE, KEY_SIZE) as PresharedKey,
    consumed: {
      remoteStatic,
      timestamp: field(consumedAt, TIMESTAMP_SIZE),
      hash: field(consumedAt + TIMESTAMP_SIZE, KEY_SIZE),
      chainingKey: field(consumedAt + TIMESTAMP_SIZE + KEY_SIZE, KEY_SIZE),
      remoteEphemeral: field(consumedAt + TIMESTAMP_SIZE + 2 * KEY_SIZE, KEY_SIZE),
      senderIndex: readU32(records, at + HEADER + consumedAt + TIMESTAMP_SIZE + 3 * KEY_SIZE),
    },
  };
}

/** Writes `result` as record `index` of `out`. */
export function encodeResult(result: HandshakeJobResult, out: Uint8Array, index: number): void {
  const at = index * RESULT_RECORD_SIZE;
  if (result.kind === 'respond') {
    writeHeader(out, at, KIND_RESPOND, result.id);
    put(out, at + HEADER, result.response.subarray(0, MESSAGE_RESPONSE_SIZE), result.keys.sendKey, result.keys.receiveKey);
    return;
  }
  const opened = result.opened;
  if (opened === null) {
    writeHeader(out, at, KIND_OPEN_FAILED, result.id);
    return;
  }
  writeHeader(out, at, KIND_OPEN, result.id);
  const next = put(out, at + HEADER, opened.remoteStatic, opened.hash, opened.chainingKey, opened.remoteEphemeral, opened.sealedTimestamp);
  writeU32(out, next, opened.senderIndex);
}

/** Record `index` of `records` as a result; its byte fields are views into `records`. */
export function decodeResult(records: Uint8Array, index: number): HandshakeJobResult {
  const at = index * RESULT_RECORD_SIZE;
  const id = readU32(records, at + 1);
  const field = (offset: number, length: number): Uint8Array => records.subarray(at + HEADER + offset, at + HEADER + offset + length);
  switch (records[at]) {
    case KIND_RESPOND:
      return {
        kind: 'respond', id, response: field(0, MESSAGE_RESPONSE_SIZE),
        keys: { sendKey: field(MESSAGE_RESPONSE_SIZE, KEY_SIZE), receiveKey: field(MESSAGE_RESPONSE_SIZE + KEY_SIZE, KEY_SIZE) },
      };
    case KIND_OPEN:
      return {
        kind: 'openInitiation', id,
        opened: {
          remoteStatic: field(0, KEY_SIZE) as PublicKey,
          hash: field(KEY_SIZE, KEY_SIZE),
          chainingKey: field(2 * KEY_SIZE, KEY_SIZE),
          remoteEphemeral: field(3 * KEY_SIZE, KEY_SIZE),
          sealedTimestamp: field(4 * KEY_SIZE, INITIATION_TIMESTAMP_SIZE),
          senderIndex: readU32(records, at + HEADER + 4 * KEY_SIZE + INITIATION_TIMESTAMP_SIZE),
        },
      };
    default:
      return { kind: 'openInitiation', id, opened: null };
  }
}
