import { test } from 'node:test';
import assert from 'node:assert/strict';
import { aeadBackend } from '../../src/wireguard/aead.ts';
import type { Endpoint } from '../../src/wireguard/endpoint.ts';
import type { DatagramSource } from '../../src/workers/datapath.ts';
import { warmUdpPaths } from '../../src/io/udp.ts';
import { warmRingPaths, warmTunIntakePaths, warmUdpReaderPaths, warmWaitPaths, warmWorkerPaths } from '../../src/workers/warmup.ts';

/** A source that records how it was used, to show the warm-up only reads it. */
class RecordingSource implements DatagramSource {
  matchCalls = 0;
  endpointCalls = 0;
  readonly endpoint: Endpoint = { family: 4, address: Uint8Array.of(198, 18, 0, 1), port: 51820, localAddress: null, localIfindex: 0 };

  matches(endpoint: Endpoint | null): boolean {
    this.matchCalls++;
    return endpoint === this.endpoint;
  }

  toEndpoint(): Endpoint {
    this.endpointCalls++;
    return this.endpoint;
  }
}

for (const backend of ['sodium', 'noble'] as const) {
  test(`warmWorkerPaths (${backend}): every round trip encrypts and decrypts the packet back`, () => {
    const source = new RecordingSource();
    assert.equal(warmWorkerPaths(aeadBackend(backend), 1420, source, 1_000, 200), 200);
    assert.equal(source.endpointCalls, 1, 'the scratch peer takes its endpoint once and never roams');
    assert.equal(source.matchCalls, 200);
  });
}

test('warmTunIntakePaths finds the scratch peer for every IPv4 and IPv6 packet', () => {
  assert.equal(warmTunIntakePaths(100), 100);
});

test('warmUdpReaderPaths routes every scratch datagram to the shard of its receiver index', () => {
  assert.equal(warmUdpReaderPaths(3, 300), 300);
});

test('warmRingPaths moves every slot through pool, ring and return ring without losing one', () => {
  // Two slots in the scratch pool: a slot not handed back would run the pool dry within rounds.
  assert.equal(warmRingPaths(100), 100);
});

test('warmWaitPaths ends each idle wait as planned: work while spinning, work after announcing sleep, timed out', () => {
  assert.equal(warmWaitPaths(300), 300);
});

test('warmUdpPaths sends one byte to itself over loopback and receives it back', () => {
  assert.equal(warmUdpPaths(), 1);
});
