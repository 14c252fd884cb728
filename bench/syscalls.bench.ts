// µs per 1420-byte datagram on loopback inside a fresh network namespace: UdpSocket.sendOne
// (one sendmsg each) against sendBatch (sendmmsg, 32 per call), and recvBatch (recvmmsg) on the
// receiving side. Run as root: node bench/syscalls.bench.ts [datagrams]
import { DatagramMeta, UdpSocket, parseAddress } from '../src/io/udp.ts';
import { withNetns } from '../test/lab/io-helpers.ts';

const DATAGRAMS = Number(process.argv[2] ?? 200_000);
const BATCH = 32;
const SIZE = 1420;
const SLOT = 2048;

await withNetns(() => {
  const sender = UdpSocket.open(0, { batchSize: BATCH });
  const receiver = UdpSocket.open(0, { batchSize: BATCH });
  try {
    const sab = new SharedArrayBuffer(2 * BATCH * SLOT);
    const out = Array.from({ length: BATCH }, (_, i) => new Uint8Array(sab, i * SLOT, SLOT));
    const into = Array.from({ length: BATCH }, (_, i) => new Uint8Array(sab, (BATCH + i) * SLOT, SLOT));
    const meta = new DatagramMeta(BATCH);
    const received = new DatagramMeta(BATCH);
    const loopback = parseAddress('127.0.0.1');
    for (let i = 0; i < BATCH; i++) {
      meta.setLength(i, SIZE);
      meta.setRemote(i, 4, loopback.bytes, receiver.port());
    }
    let receiveNs = 0n;
    let receivedCount = 0;
    const drain = (): void => {
      const start = process.hrtime.bigint();
      let n: number;
      while ((n = receiver.recvBatch(into, received)) > 0) receivedCount += n;
      receiveNs += process.hrtime.bigint() - start;
    };

    const timeSends = (label: string, send: () => number): void => {
      receiveNs = 0n;
      receivedCount = 0;
      let sent = 0;
      let sendNs = 0n;
      while (sent < DATAGRAMS) {
        const start = process.hrtime.bigint();
        sent += send();
        sendNs += process.hrtime.bigint() - start;
        drain();
      }
      const perSend = Number(sendNs) / 1000 / sent;
      const perReceive = receivedCount > 0 ? Number(receiveNs) / 1000 / receivedCount : NaN;
      console.log(`${label.padEnd(28)} send ${perSend.toFixed(3)} µs/datagram   recvBatch ${perReceive.toFixed(3)} µs/datagram   (${sent} sent, ${receivedCount} received)`);
    };

    // Warm up the JIT and the socket buffers.
    for (let k = 0; k < 2000; k++) { sender.sendBatch(out, meta, BATCH); drain(); }
    timeSends('sendOne (sendmsg)', () => {
      for (let i = 0; i < BATCH; i++) sender.sendOne(out[i] as Uint8Array, meta, i);
      return BATCH;
    });
    timeSends(`sendBatch ×${BATCH} (sendmmsg)`, () => sender.sendBatch(out, meta, BATCH));
  } finally {
    sender.close();
    receiver.close();
  }
});
