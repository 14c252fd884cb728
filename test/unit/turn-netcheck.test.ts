// netcheck's pure parts: the RFC 4787 mapping classification and the server-argument parser (the
// lab test, test/lab/netcheck.test.ts, runs the whole command behind real NATs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetcheckUsageError, classifyNat, parseServerArgument } from '../../src/main/netcheck.ts';

const HOST = ['10.0.0.2:5000', '[fd00::2]:5000'];

test('classifyNat: none, endpoint-independent, endpoint-dependent, unknown', () => {
  const seen = (server: string, address: string): { server: string; address: string } => ({ server, address });
  assert.equal(classifyNat(HOST, [seen('192.0.2.1:3478', '10.0.0.2:5000')]), 'none', 'one answer showing a host address is enough');
  assert.equal(classifyNat(HOST, [seen('192.0.2.1:3478', '[fd00::2]:5000'), seen('192.0.2.2:3478', '[fd00::2]:5000')]), 'none');
  assert.equal(classifyNat(HOST, [seen('192.0.2.1:3478', '203.0.113.1:5000'), seen('192.0.2.2:3478', '203.0.113.1:5000')]), 'endpoint-independent');
  assert.equal(classifyNat(HOST, [seen('192.0.2.1:3478', '203.0.113.1:5000'), seen('192.0.2.1:3479', '203.0.113.1:6000')]), 'endpoint-dependent',
    'another port on the same server IP is another destination');
  assert.equal(classifyNat(HOST, [seen('192.0.2.1:3478', '203.0.113.1:5000')]), 'unknown', 'one mapping says nothing about the next');
  assert.equal(classifyNat(HOST, []), 'unknown');
  assert.equal(classifyNat(HOST, [seen('192.0.2.1:3478', '203.0.113.1:5000'), seen('192.0.2.1:3478', '203.0.113.1:5000')]), 'unknown',
    'two answers from one server address are one observation');
});

test('parseServerArgument: HOST, HOST:PORT, [IPv6]:PORT, bare IPv6; port defaults to 3478', () => {
  assert.deepEqual(parseServerArgument('192.0.2.1:3479'), { host: '192.0.2.1', port: 3479 });
  assert.deepEqual(parseServerArgument('stun.example.net'), { host: 'stun.example.net', port: 3478 });
  assert.deepEqual(parseServerArgument('[2001:db8::1]:19302'), { host: '2001:db8::1', port: 19302 });
  assert.deepEqual(parseServerArgument('[2001:db8::1]'), { host: '2001:db8::1', port: 3478 });
  assert.deepEqual(parseServerArgument('2001:db8::1'), { host: '2001:db8::1', port: 3478 });
  for (const bad of ['', ':3478', 'host:0', 'host:65536', 'host:port', 'a b:1', '[::1]:x']) {
    assert.throws(() => parseServerArgument(bad), NetcheckUsageError, bad);
  }
});
