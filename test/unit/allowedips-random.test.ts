// The trie against the slowest obviously-correct table: a list of prefixes scanned in full
// (the method of wireguard-go's allowedips_rand_test.go), through random inserts, moves, removes,
// peer removals and lookups, for both families.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AllowedIps } from '../../src/wireguard/allowedips.ts';
import { seededRandom as seeded } from '../support/random.ts';

interface NaiveEntry {
  readonly bytes: Uint8Array; // masked
  readonly prefixLength: number;
  peer: number;
}

function masked(bytes: Uint8Array, prefixLength: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.min(8, Math.max(0, prefixLength - 8 * i));
    out[i] = bytes[i] & ((0xff00 >> bits) & 0xff);
  }
  return out;
}

function covers(entry: NaiveEntry, address: Uint8Array): boolean {
  if (entry.bytes.length !== address.length) return false;
  const m = masked(address, entry.prefixLength);
  return m.every((byte, i) => byte === entry.bytes[i]);
}

/** Linear scan; entries kept in the order WireGuard lists them (re-insertion moves to the end). */
class NaiveAllowedIps {
  entries: NaiveEntry[] = [];
  #find(bytes: Uint8Array, prefixLength: number): number {
    const m = masked(bytes, prefixLength);
    return this.entries.findIndex(
      (e) => e.prefixLength === prefixLength && e.bytes.length === m.length && e.bytes.every((b, i) => b === m[i]),
    );
  }
  insert(bytes: Uint8Array, prefixLength: number, peer: number): void {
    const at = this.#find(bytes, prefixLength);
    if (at !== -1) this.entries.splice(at, 1);
    this.entries.push({ bytes: masked(bytes, prefixLength), prefixLength, peer });
  }
  remove(bytes: Uint8Array, prefixLength: number, peer: number): boolean {
    const at = this.#find(bytes, prefixLength);
    if (at === -1 || this.entries[at].peer !== peer) return false;
    this.entries.splice(at, 1);
    return true;
  }
  removePeer(peer: number): void {
    this.entries = this.entries.filter((e) => e.peer !== peer);
  }
  lookup(address: Uint8Array): number {
    let best: NaiveEntry | undefined;
    for (const e of this.entries) {
      if (covers(e, address) && (best === undefined || e.prefixLength > best.prefixLength)) best = e;
    }
    return best === undefined ? -1 : best.peer;
  }
  entriesOf(peer: number): Array<{ bytes: Uint8Array; prefixLength: number }> {
    return this.entries.filter((e) => e.peer === peer).map((e) => ({ bytes: e.bytes, prefixLength: e.prefixLength }));
  }
}


function lookup(table: AllowedIps, address: Uint8Array): number {
  // Put the address at an odd offset inside a larger packet, as a real IP header would.
  const packet = new Uint8Array(address.length + 13);
  packet.set(address, 7);
  return address.length === 4 ? table.lookupV4(packet, 7) : table.lookupV6(packet, 7);
}

function runRandom(seed: number, addressLength: 4 | 16): void {
  const random = seeded(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const bits = addressLength * 8;
  // A few base networks plus noise make prefixes nest and overlap at every depth, which fully
  // random addresses (only overlapping near the root) would rarely do.
  const bases = Array.from({ length: 8 }, () => Uint8Array.from({ length: addressLength }, () => int(256)));
  const randomAddress = (): Uint8Array => {
    const address = Uint8Array.from(bases[int(bases.length)]);
    const flips = int(6);
    for (let i = 0; i < flips; i++) address[int(addressLength)] ^= 1 << int(8);
    if (random() < 0.2) for (let i = 0; i < addressLength; i++) address[i] = int(256);
    return address;
  };
  const randomPrefixLength = (): number => (random() < 0.15 ? [0, 1, bits - 1, bits][int(4)] : int(bits + 1));
  const fast = new AllowedIps();
  const naive = new NaiveAllowedIps();
  const inserted: Array<{ bytes: Uint8Array; prefixLength: number; peer: number }> = [];
  const peers = 30;
  for (let step = 0; step < 4000; step++) {
    const roll = random();
    if (roll < 0.5) {
      const bytes = randomAddress();
      const prefixLength = randomPrefixLength();
      const peer = int(peers);
      fast.insert(bytes, prefixLength, peer);
      naive.insert(bytes, prefixLength, peer);
      inserted.push({ bytes, prefixLength, peer });
    } else if (roll < 0.75 && inserted.length > 0) {
      const { bytes, prefixLength, peer } = inserted[int(inserted.length)];
      // Sometimes name the wrong peer, which must leave the entry in place.
      const claimed = random() < 0.3 ? int(peers) : peer;
      assert.equal(fast.remove(bytes, prefixLength, claimed), naive.remove(bytes, prefixLength, claimed), `remove at ${step}`);
    } else if (roll < 0.78) {
      const peer = int(peers);
      fast.removePeer(peer);
      naive.removePeer(peer);
    } else if (roll < 0.8 && inserted.length > 0) {
      // Re-insert an existing prefix with different host bits for another peer: a move.
      const { bytes, prefixLength } = inserted[int(inserted.length)];
      const networkBits = masked(new Uint8Array(addressLength).fill(0xff), prefixLength);
      const withHost = masked(bytes, prefixLength).map((b, i) => b | (int(256) & ~networkBits[i]));
      const peer = int(peers);
      fast.insert(withHost, prefixLength, peer);
      naive.insert(withHost, prefixLength, peer);
    }
    for (let probe = 0; probe < 5; probe++) {
      const address = randomAddress();
      assert.equal(lookup(fast, address), naive.lookup(address), `seed ${seed} step ${step} lookup ${address.join('.')}`);
    }
    assert.equal(fast.size, naive.entries.length, `size at step ${step}`);
    // Path compression keeps glue nodes binary, so n entries never need more than 2n - 1 nodes.
    assert.ok(fast.nodeCount <= Math.max(0, 2 * fast.size - 1), `${fast.nodeCount} nodes for ${fast.size} entries`);
  }
  for (let peer = 0; peer < peers; peer++) {
    assert.deepEqual(fast.entriesOf(peer), naive.entriesOf(peer), `entries of peer ${peer}`);
  }
  for (let peer = 0; peer < peers; peer++) fast.removePeer(peer);
  assert.equal(fast.size, 0);
  assert.equal(fast.nodeCount, 0, 'every node, glue included, was freed');
}

test('random IPv4 operations match a linear-scan reference', () => {
  for (const seed of [1, 2, 3]) runRandom(seed, 4);
});

test('random IPv6 operations match a linear-scan reference', () => {
  for (const seed of [1, 2, 3]) runRandom(seed, 16);
});

test('wireguard-go style: 250 random prefixes over 100 peers, 10,000 random lookups per family', () => {
  const random = seeded(1);
  for (const addressLength of [4, 16]) {
    const fast = new AllowedIps();
    const naive = new NaiveAllowedIps();
    for (let n = 0; n < 250; n++) {
      const bytes = Uint8Array.from({ length: addressLength }, () => Math.floor(random() * 256));
      const prefixLength = Math.floor(random() * addressLength * 8);
      const peer = Math.floor(random() * 100);
      fast.insert(bytes, prefixLength, peer);
      naive.insert(bytes, prefixLength, peer);
    }
    for (let n = 0; n < 10_000; n++) {
      const address = Uint8Array.from({ length: addressLength }, () => Math.floor(random() * 256));
      assert.equal(lookup(fast, address), naive.lookup(address));
    }
  }
});

test('mixed families share peers without interfering (fast-check)', () => {
  const family = fc.constantFrom(4, 16);
  const prefix = family.chain((length) =>
    fc.record({
      bytes: fc.uint8Array({ minLength: length, maxLength: length }),
      prefixLength: fc.integer({ min: 0, max: length * 8 }),
    }),
  );
  const operation = fc.oneof(
    fc.record({ kind: fc.constant('insert' as const), prefix, peer: fc.integer({ min: 0, max: 5 }) }),
    fc.record({ kind: fc.constant('remove' as const), pick: fc.nat(), peer: fc.integer({ min: 0, max: 5 }) }),
    fc.record({ kind: fc.constant('removePeer' as const), peer: fc.integer({ min: 0, max: 5 }) }),
  );
  fc.assert(
    fc.property(fc.array(operation, { maxLength: 80, size: 'max' }), fc.array(prefix, { minLength: 1, maxLength: 20 }), (operations, probes) => {
      const fast = new AllowedIps();
      const naive = new NaiveAllowedIps();
      const seen: Array<{ bytes: Uint8Array; prefixLength: number }> = [];
      for (const op of operations) {
        if (op.kind === 'insert') {
          fast.insert(op.prefix.bytes, op.prefix.prefixLength, op.peer);
          naive.insert(op.prefix.bytes, op.prefix.prefixLength, op.peer);
          seen.push(op.prefix);
        } else if (op.kind === 'remove') {
          if (seen.length === 0) continue;
          const { bytes, prefixLength } = seen[op.pick % seen.length];
          assert.equal(fast.remove(bytes, prefixLength, op.peer), naive.remove(bytes, prefixLength, op.peer));
        } else {
          fast.removePeer(op.peer);
          naive.removePeer(op.peer);
        }
      }
      assert.equal(fast.size, naive.entries.length);
      // Probe with the inserted prefixes themselves (exact and inside) and with random addresses.
      for (const { bytes } of [...seen, ...probes]) assert.equal(lookup(fast, bytes), naive.lookup(bytes));
      for (let peer = 0; peer <= 5; peer++) assert.deepEqual(fast.entriesOf(peer), naive.entriesOf(peer));
    }),
    { numRuns: 300, interruptAfterTimeLimit: 8000 },
  );
});
