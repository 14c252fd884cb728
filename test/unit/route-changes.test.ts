import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteChangeBatch } from '../../src/control/messages.ts';
import { applyRouteChanges } from '../../src/workers/commands.ts';
import { AllowedIps, parseCidr } from '../../src/wireguard/allowedips.ts';

test('a packed route batch replays inserts, removals and peer removals in order', () => {
  // Room for 10 changes up front; the batch grows past that as needed.
  const batch = new RouteChangeBatch(10);
  const v4 = parseCidr('10.1.2.0/24');
  const v6 = parseCidr('fd00::1/128');
  for (let peer = 0; peer < 100; peer++) batch.insert(parseCidr(`10.9.${peer}.0/24`).bytes, 24, peer);
  batch.insert(v4.bytes, 24, 7);
  batch.insert(v6.bytes, 128, 7);
  batch.insert(v6.bytes, 128, 8);
  batch.remove(v4.bytes, 24, 7);
  batch.removePeer(3);
  const finished = batch.finish();
  assert.ok(finished.records.buffer instanceof SharedArrayBuffer, 'one shared copy for every thread');
  const changes = structuredClone(finished);
  assert.equal(changes.count, 105);
  // Posting shares the memory rather than copying it: a write to one shows in the other.
  const original = finished.records[0];
  finished.records[0] = 0xee;
  assert.equal(changes.records[0], 0xee, 'posting shares the buffer rather than copying it');
  finished.records[0] = original;
  const routes = new AllowedIps();
  applyRouteChanges(routes, changes);
  assert.deepEqual(routes.entriesOf(7).map((e) => e.prefixLength), [24]);
  assert.deepEqual(routes.entriesOf(8).map((e) => [...e.bytes]), [[...parseCidr('10.9.8.0/24').bytes], [...v6.bytes]]);
  assert.deepEqual(routes.entriesOf(3), []);
  assert.equal(routes.lookupV4(Uint8Array.of(10, 1, 2, 3), 0), -1);
});

test('a route batch rejects a negative expected size', () => {
  assert.throws(() => new RouteChangeBatch(-1), RangeError);
});
