// A handshake thread of the control thread's pool (control/handshake-pool.ts): runs the responder's
// X25519 work (noise.ts runHandshakeJob) on batches of jobs and posts the results back in the same
// order. It holds no state: which peer, which index, whether a timestamp is new all stay with the
// engine on the control thread, so the pool can answer in any order and be any size.
import { parentPort } from 'node:worker_threads';
import { runHandshakeJob, type HandshakeJob } from '../wireguard/noise.ts';

if (parentPort === null) throw new Error('handshake-worker: this file runs as a worker thread');
const port = parentPort;
port.on('message', (jobs: readonly HandshakeJob[]) => {
  port.postMessage(jobs.map(runHandshakeJob));
});
port.postMessage('ready');
