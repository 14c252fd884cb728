// A handshake thread of the control thread's pool (control/handshake-pool.ts): runs the responder's
// X25519 work (noise.ts runHandshakeJob) on batches of jobs (packed records,
// control/handshake-pool-records.ts) and posts the results back in the same order. It holds no state: which peer, which index, whether a timestamp is new all stay with the
// engine on the control thread, so the pool can answer in any order and be any size.
import { parentPort } from 'node:worker_threads';
import { decodeJob, encodeResult, JOB_RECORD_SIZE, RESULT_RECORD_SIZE } from '../control/handshake-pool-records.ts';
import { runHandshakeJob } from '../wireguard/noise.ts';

if (parentPort === null) throw new Error('handshake-worker: this file runs as a worker thread');
const port = parentPort;
port.on('message', (jobs: Uint8Array) => {
  const count = jobs.length / JOB_RECORD_SIZE;
  const results = new Uint8Array(count * RESULT_RECORD_SIZE);
  for (let j = 0; j < count; j++) encodeResult(runHandshakeJob(decodeJob(jobs, j)), results, j);
  port.postMessage(results, [results.buffer]);
});
port.postMessage('ready');
