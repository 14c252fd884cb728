// Cryptokey routing table (whitepaper §2): maps inner IP addresses to the peer allowed to use them.
// Outbound, the longest matching prefix picks the peer to encrypt to; inbound, a decrypted packet's
// source address must map back to the peer whose key decrypted it.
//
// One path-compressed binary trie per address family (the shape wireguard-go's device/allowedips.go
// and the kernel's allowedips.c use): every node holds a masked prefix; a node without a peer is a
// "glue" node that exists only to branch and always has exactly two children, so n prefixes need
// at most 2n - 1 nodes. Nodes live in typed arrays indexed by node id rather than as objects:
// lookups touch only integers and allocate nothing, and 130,000 prefixes are a few flat buffers.
// What a lookup reads (key, prefix length, children, peer) sits together in one 32-byte record,
// so each step of the descent costs one cache line; the rest (parent, list links) is kept apart.
// Each peer's entries form a doubly-linked list through the nodes, in insertion order, which makes
// removePeer linear in that peer's entries and gives `wg show` a stable order. The lists' ends are
// kept in arrays indexed by peer id (ids are dense: the device hands out the lowest free one), not
// in a map of small objects: every packet thread holds a copy of this table, for every peer.

import { ConfigError } from '../errors.ts';

const NO_NODE = -1;
const NO_PEER = -1;
const INITIAL_CAPACITY = 64;
const INITIAL_PEER_CAPACITY = 16;
/** Peer ids index arrays here, so they are bounded (the device's peer table holds far fewer). */
const MAX_PEER_ID = (1 << 22) - 1;

/**
 * Layout of one node's record in AllowedIps#nodes (Int32 slots):
 *
 *   0..3  key: the masked prefix as four big-endian 32-bit words (IPv4 uses word 0 only)
 *   4     prefix length (cidr)
 *   5, 6  children for address bit 0 / 1 just after the prefix (NO_NODE if none)
 *   7     peer id, or NO_PEER for a glue node (for a free node: the next free node)
 */
const RECORD = 8;
const KEY_WORDS = 4;
const CIDR = 4;
const CHILD = 5;
const PEER = 7;

/** PREFIX_WORD_MASKS[cidr * 4 + w]: the bits of key word `w` that a /cidr prefix covers. */
const PREFIX_WORD_MASKS = (() => {
  const masks = new Int32Array(129 * KEY_WORDS);
  for (let cidr = 0; cidr <= 128; cidr++) {
    for (let word = 0; word < KEY_WORDS; word++) {
      const bits = Math.min(32, Math.max(0, cidr - word * 32));
      masks[cidr * KEY_WORDS + word] = bits === 0 ? 0 : -1 << (32 - bits);
    }
  }
  return masks;
})();

export class AllowedIps {
  #capacity = INITIAL_CAPACITY;
  /** Hot per-node records, RECORD slots each (layout above). */
  #nodes = new Int32Array(INITIAL_CAPACITY * RECORD);
  /** 1 for nodes of the IPv6 trie (needed to format entries and to find a root). */
  #isV6 = new Uint8Array(INITIAL_CAPACITY);
  #parents = new Int32Array(INITIAL_CAPACITY);
  #prevOfPeer = new Int32Array(INITIAL_CAPACITY);
  #nextOfPeer = new Int32Array(INITIAL_CAPACITY);
  #usedNodes = 0;
  #freeList = NO_NODE;
  #freeNodes = 0;
  #rootV4 = NO_NODE;
  #rootV6 = NO_NODE;
  /** First and last node of each peer's entry list (NO_NODE when it has none), by peer id. */
  #heads = new Int32Array(INITIAL_PEER_CAPACITY).fill(NO_NODE);
  #tails = new Int32Array(INITIAL_PEER_CAPACITY).fill(NO_NODE);
  #size = 0;
  /** Insertions still to come in the current batch (see expectInsertions). */
  #expectedInsertions = 0;
  #generation = 0;
  /** Scratch key words for insert/remove/lookupV6, so none of them allocates. */
  readonly #scratch = new Int32Array(KEY_WORDS);

  /** Number of prefixes in the table (both families). */
  get size(): number {
    return this.#size;
  }

  /**
   * Changes whenever a prefix is routed to a peer or removed: a lookup result remembered together
   * with the generation it was made in stays valid while the generation is the same.
   */
  get generation(): number {
    return this.#generation;
  }

  /** Trie nodes in use, glue included: at most 2 * size - 1 (for memory reports and tests). */
  get nodeCount(): number {
    return this.#usedNodes - this.#freeNodes;
  }

  /** Bytes held by the node and peer arrays, growth slack included (for memory reports). */
  get byteLength(): number {
    return this.#capacity * (RECORD * 4 + 1 + 4 + 4 + 4) + this.#heads.byteLength + this.#tails.byteLength;
  }

  /**
   * Announces that the next `prefixes` insertions come as one batch, so that when the arrays must
   * grow they grow once, to hold the rest of the batch (each insertion adds at most two nodes),
   * instead of growing step by step: every outgrown copy is garbage until the next full
   * collection, and the last step leaves much of its arrays unused. Nodes the batch frees first
   * (a peer's routes replaced) are reused before any growth.
   */
  expectInsertions(prefixes: number): void {
    if (!Number.isInteger(prefixes) || prefixes < 0) throw new RangeError(`allowedips: cannot expect ${prefixes} insertions`);
    this.#expectedInsertions = prefixes;
  }

  /**
   * Routes `bytes/prefixLength` to `peer`. Host bits beyond the prefix are ignored. Inserting a
   * prefix that is already present moves it to `peer` (and to the end of that peer's entry list),
   * as WireGuard does.
   */
  insert(bytes: Uint8Array, prefixLength: number, peer: number): void {
    const isV6 = checkPrefix(bytes, prefixLength);
    if (!Number.isInteger(peer) || peer < 0 || peer > MAX_PEER_ID) {
      throw new RangeError(`allowedips: peer id must be an integer in 0..${MAX_PEER_ID}, got ${peer}`);
    }
    const key = this.#loadKey(bytes, prefixLength);
    if (this.#expectedInsertions > 0) this.#expectedInsertions--;
    let parent = NO_NODE;
    let bitFromParent = 0;
    let node = isV6 ? this.#rootV6 : this.#rootV4;
    // The array only changes when a node is allocated, which ends the descent.
    const nodes = this.#nodes;
    while (node !== NO_NODE) {
      const at = node * RECORD;
      const nodeCidr = nodes[at + CIDR];
      const common = Math.min(commonBits(nodes, at, key), nodeCidr, prefixLength);
      if (common === nodeCidr) {
        if (nodeCidr === prefixLength) {
          this.#setPeer(node, peer);
          return;
        }
        // The node's prefix contains the new one: descend.
        parent = node;
        bitFromParent = bitAt(key, 0, nodeCidr);
        node = nodes[at + CHILD + bitFromParent];
        continue;
      }
      // Read the node's next bit before allocating: allocation may replace the array.
      const nodeBit = bitAt(nodes, at, common);
      const fresh = this.#newNode(key, prefixLength, isV6);
      this.#setPeer(fresh, peer);
      if (common === prefixLength) {
        // The new prefix contains the node's: it takes the node's place, the node hangs below it.
        this.#link(fresh, nodeBit, node);
        this.#link(parent, bitFromParent, fresh);
      } else {
        // The prefixes diverge at bit `common`: a glue node branches to both.
        const glue = this.#newNode(key, common, isV6);
        this.#link(glue, nodeBit, node);
        this.#link(glue, nodeBit ^ 1, fresh);
        this.#link(parent, bitFromParent, glue);
      }
      return;
    }
    const fresh = this.#newNode(key, prefixLength, isV6);
    this.#setPeer(fresh, peer);
    this.#link(parent, bitFromParent, fresh);
  }

  /** Removes `bytes/prefixLength` if it is routed to `peer`; returns whether it was. */
  remove(bytes: Uint8Array, prefixLength: number, peer: number): boolean {
    const isV6 = checkPrefix(bytes, prefixLength);
    const key = this.#loadKey(bytes, prefixLength);
    const nodes = this.#nodes;
    let node = isV6 ? this.#rootV6 : this.#rootV4;
    while (node !== NO_NODE) {
      const at = node * RECORD;
      const nodeCidr = nodes[at + CIDR];
      if (nodeCidr > prefixLength || commonBits(nodes, at, key) < nodeCidr) return false;
      if (nodeCidr === prefixLength) {
        // NO_PEER must not match: that would "remove" a glue node.
        if (nodes[at + PEER] !== peer || peer === NO_PEER) return false;
        this.#removeEntry(node);
        return true;
      }
      node = nodes[at + CHILD + bitAt(key, 0, nodeCidr)];
    }
    return false;
  }

  /** Removes every prefix routed to `peer`; linear in that peer's entries. */
  removePeer(peer: number): void {
    if (!(peer >= 0 && peer < this.#heads.length)) return;
    // #removeEntry unlinks the head each time.
    while (this.#heads[peer] !== NO_NODE) this.#removeEntry(this.#heads[peer]);
  }

  /** Longest-prefix match of the IPv4 address at packet[offset..offset+4); -1 if none. */
  lookupV4(packet: Uint8Array, offset: number): number {
    if (!(offset >= 0 && offset + 4 <= packet.length)) {
      throw new RangeError(`allowedips: IPv4 address at offset ${offset} lies outside ${packet.length} bytes`);
    }
    const address =
      (packet[offset] << 24) | (packet[offset + 1] << 16) | (packet[offset + 2] << 8) | packet[offset + 3];
    const nodes = this.#nodes;
    let found = NO_PEER;
    let node = this.#rootV4;
    while (node !== NO_NODE) {
      const at = node * RECORD;
      const cidr = nodes[at + CIDR];
      if (((nodes[at] ^ address) & PREFIX_WORD_MASKS[cidr * KEY_WORDS]) !== 0) break;
      const peer = nodes[at + PEER];
      if (peer !== NO_PEER) found = peer;
      if (cidr === 32) break;
      node = nodes[at + CHILD + ((address >>> (31 - cidr)) & 1)];
    }
    return found;
  }

  /** Longest-prefix match of the IPv6 address at packet[offset..offset+16); -1 if none. */
  lookupV6(packet: Uint8Array, offset: number): number {
    if (!(offset >= 0 && offset + 16 <= packet.length)) {
      throw new RangeError(`allowedips: IPv6 address at offset ${offset} lies outside ${packet.length} bytes`);
    }
    const address = this.#scratch;
    for (let word = 0, at = offset; word < KEY_WORDS; word++, at += 4) {
      address[word] = (packet[at] << 24) | (packet[at + 1] << 16) | (packet[at + 2] << 8) | packet[at + 3];
    }
    const a0 = address[0];
    const a1 = address[1];
    const a2 = address[2];
    const a3 = address[3];
    const nodes = this.#nodes;
    let found = NO_PEER;
    let node = this.#rootV6;
    while (node !== NO_NODE) {
      const at = node * RECORD;
      const cidr = nodes[at + CIDR];
      const m = cidr * KEY_WORDS;
      const differs =
        ((nodes[at] ^ a0) & PREFIX_WORD_MASKS[m]) |
        ((nodes[at + 1] ^ a1) & PREFIX_WORD_MASKS[m + 1]) |
        ((nodes[at + 2] ^ a2) & PREFIX_WORD_MASKS[m + 2]) |
        ((nodes[at + 3] ^ a3) & PREFIX_WORD_MASKS[m + 3]);
      if (differs !== 0) break;
      const peer = nodes[at + PEER];
      if (peer !== NO_PEER) found = peer;
      if (cidr === 128) break;
      node = nodes[at + CHILD + bitAt(address, 0, cidr)];
    }
    return found;
  }

  /** The prefixes routed to `peer`, in insertion order (for `wg show` and UAPI get). */
  entriesOf(peer: number): Array<{ bytes: Uint8Array; prefixLength: number }> {
    const result: Array<{ bytes: Uint8Array; prefixLength: number }> = [];
    if (!(peer >= 0 && peer < this.#heads.length)) return result;
    for (let node = this.#heads[peer]; node !== NO_NODE; node = this.#nextOfPeer[node]) {
      const at = node * RECORD;
      const bytes = new Uint8Array(this.#isV6[node] === 1 ? 16 : 4);
      for (let i = 0; i < bytes.length; i++) bytes[i] = this.#nodes[at + (i >>> 2)] >>> (24 - 8 * (i & 3));
      result.push({ bytes, prefixLength: this.#nodes[at + CIDR] });
    }
    return result;
  }

  /** Copies `bytes` into the scratch key words, masked to `prefixLength` bits. */
  #loadKey(bytes: Uint8Array, prefixLength: number): Int32Array {
    const key = this.#scratch;
    for (let word = 0; word < KEY_WORDS; word++) {
      const at = word * 4;
      const value =
        at < bytes.length ? (bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3] : 0;
      key[word] = value & PREFIX_WORD_MASKS[prefixLength * KEY_WORDS + word];
    }
    return key;
  }

  #newNode(key: Int32Array, cidr: number, isV6: boolean): number {
    let node = this.#freeList;
    if (node !== NO_NODE) {
      this.#freeList = this.#nodes[node * RECORD + PEER];
      this.#freeNodes--;
    } else {
      // Room for the rest of an announced batch (this insertion included), else half again rather
      // than double: less unused room in a table that is not known to grow much more.
      if (this.#usedNodes === this.#capacity) {
        this.#resize(Math.max(this.#capacity + (this.#capacity >> 1), this.#usedNodes + 2 * (this.#expectedInsertions + 1)));
      }
      node = this.#usedNodes++;
    }
    const nodes = this.#nodes;
    const at = node * RECORD;
    for (let word = 0; word < KEY_WORDS; word++) {
      nodes[at + word] = key[word] & PREFIX_WORD_MASKS[cidr * KEY_WORDS + word];
    }
    nodes[at + CIDR] = cidr;
    nodes[at + CHILD] = NO_NODE;
    nodes[at + CHILD + 1] = NO_NODE;
    nodes[at + PEER] = NO_PEER;
    this.#isV6[node] = isV6 ? 1 : 0;
    this.#parents[node] = NO_NODE;
    this.#prevOfPeer[node] = NO_NODE;
    this.#nextOfPeer[node] = NO_NODE;
    return node;
  }

  #freeNode(node: number): void {
    this.#nodes[node * RECORD + PEER] = this.#freeList;
    this.#freeList = node;
    this.#freeNodes++;
  }

  #resize(capacity: number): void {
    this.#nodes = grown(this.#nodes, capacity * RECORD);
    this.#isV6 = grown(this.#isV6, capacity);
    this.#parents = grown(this.#parents, capacity);
    this.#prevOfPeer = grown(this.#prevOfPeer, capacity);
    this.#nextOfPeer = grown(this.#nextOfPeer, capacity);
    this.#capacity = capacity;
  }

  /** Makes `child` the `bit` child of `parent`, or the root of its family when there is no parent. */
  #link(parent: number, bit: number, child: number): void {
    if (parent === NO_NODE) {
      if (this.#isV6[child] === 1) this.#rootV6 = child;
      else this.#rootV4 = child;
    } else {
      this.#nodes[parent * RECORD + CHILD + bit] = child;
    }
    this.#parents[child] = parent;
  }

  /** Puts `replacement` (possibly none) where `node` hangs below `parent`. */
  #replaceChild(parent: number, node: number, replacement: number, isV6: boolean): void {
    if (parent === NO_NODE) {
      if (isV6) this.#rootV6 = replacement;
      else this.#rootV4 = replacement;
    } else {
      const slot = parent * RECORD + CHILD;
      this.#nodes[this.#nodes[slot] === node ? slot : slot + 1] = replacement;
    }
    if (replacement !== NO_NODE) this.#parents[replacement] = parent;
  }

  #setPeer(node: number, peer: number): void {
    this.#generation++;
    const at = node * RECORD + PEER;
    if (this.#nodes[at] === NO_PEER) this.#size++;
    else this.#unlinkFromPeer(node);
    this.#nodes[at] = peer;
    if (peer >= this.#heads.length) this.#growPeers(peer);
    const tail = this.#tails[peer];
    this.#prevOfPeer[node] = tail;
    this.#nextOfPeer[node] = NO_NODE;
    if (tail === NO_NODE) this.#heads[peer] = node;
    else this.#nextOfPeer[tail] = node;
    this.#tails[peer] = node;
  }

  /** Makes the peer arrays long enough for `peer` (doubling, so ids added in order cost O(1) each). */
  #growPeers(peer: number): void {
    const length = Math.min(MAX_PEER_ID + 1, Math.max(peer + 1, this.#heads.length * 2));
    const heads = new Int32Array(length).fill(NO_NODE);
    const tails = new Int32Array(length).fill(NO_NODE);
    heads.set(this.#heads);
    tails.set(this.#tails);
    this.#heads = heads;
    this.#tails = tails;
  }

  #unlinkFromPeer(node: number): void {
    const peer = this.#nodes[node * RECORD + PEER];
    const prev = this.#prevOfPeer[node];
    const next = this.#nextOfPeer[node];
    if (prev === NO_NODE) this.#heads[peer] = next;
    else this.#nextOfPeer[prev] = next;
    if (next === NO_NODE) this.#tails[peer] = prev;
    else this.#prevOfPeer[next] = prev;
  }

  /** Drops the node's route and then any node that no longer needs to exist (keeps glue nodes binary). */
  #removeEntry(node: number): void {
    this.#generation++;
    this.#unlinkFromPeer(node);
    const nodes = this.#nodes;
    const at = node * RECORD;
    nodes[at + PEER] = NO_PEER;
    this.#size--;
    const left = nodes[at + CHILD];
    const right = nodes[at + CHILD + 1];
    if (left !== NO_NODE && right !== NO_NODE) return; // still needed to branch: it becomes glue
    const isV6 = this.#isV6[node] === 1;
    const child = left !== NO_NODE ? left : right;
    const parent = this.#parents[node];
    this.#replaceChild(parent, node, child, isV6);
    this.#freeNode(node);
    if (child !== NO_NODE || parent === NO_NODE || nodes[parent * RECORD + PEER] !== NO_PEER) return;
    // The parent is a glue node that just lost one of its two children: splice it out.
    const parentLeft = nodes[parent * RECORD + CHILD];
    const sibling = parentLeft !== NO_NODE ? parentLeft : nodes[parent * RECORD + CHILD + 1];
    this.#replaceChild(this.#parents[parent], parent, sibling, isV6);
    this.#freeNode(parent);
  }
}

/** Bit `position` (0 = most significant) of the big-endian words starting at words[base]. */
function bitAt(words: Int32Array, base: number, position: number): number {
  return (words[base + (position >>> 5)] >>> (31 - (position & 31))) & 1;
}

/** How many leading bits the key at keys[base] shares with `key` (up to 128). */
function commonBits(keys: Int32Array, base: number, key: Int32Array): number {
  for (let word = 0; word < KEY_WORDS; word++) {
    const difference = keys[base + word] ^ key[word];
    if (difference !== 0) return word * 32 + Math.clz32(difference);
  }
  return KEY_WORDS * 32;
}

function grown<T extends Int32Array | Uint8Array>(array: T, length: number): T {
  const bigger = (array instanceof Int32Array ? new Int32Array(length) : new Uint8Array(length)) as T;
  bigger.set(array);
  return bigger;
}

/** Validates a prefix argument; returns whether it is IPv6. */
function checkPrefix(bytes: Uint8Array, prefixLength: number): boolean {
  if (!(bytes instanceof Uint8Array) || (bytes.length !== 4 && bytes.length !== 16)) {
    throw new TypeError('allowedips: an address must be a Uint8Array of 4 or 16 bytes');
  }
  const maxBits = bytes.length * 8;
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > maxBits) {
    throw new RangeError(`allowedips: prefix length must be an integer in 0..${maxBits}, got ${prefixLength}`);
  }
  return bytes.length === 16;
}

// ---- Text form of prefixes (wg(8) and UAPI "allowed_ip=") ----

const DECIMAL_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const PREFIX_DIGITS = /^[0-9]{1,3}$/;

/**
 * Parses "10.0.0.0/8", "fd00::/64", or a bare address (a /32 or /128). The address is returned as
 * written: host bits are kept (AllowedIps.insert masks them, as the kernel does).
 */
export function parseCidr(text: string): { bytes: Uint8Array; prefixLength: number } {
  if (typeof text !== 'string') throw new TypeError('allowedips: a CIDR must be a string');
  const slash = text.indexOf('/');
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const bytes = addressText.includes(':') ? parseIPv6(addressText) : parseIPv4(addressText);
  if (bytes === null) {
    throw new ConfigError(`allowedips: '${text}' does not start with a valid IPv4 or IPv6 address`);
  }
  const maxBits = bytes.length * 8;
  if (slash === -1) return { bytes, prefixLength: maxBits };
  const lengthText = text.slice(slash + 1);
  if (!PREFIX_DIGITS.test(lengthText)) {
    throw new ConfigError(`allowedips: '${text}' has no valid prefix length after '/'`);
  }
  const prefixLength = Number(lengthText);
  if (prefixLength > maxBits) {
    throw new ConfigError(
      `allowedips: prefix length ${prefixLength} in '${text}' is too long for IPv${maxBits === 32 ? 4 : 6} (at most ${maxBits})`,
    );
  }
  return { bytes, prefixLength };
}

/** Dotted quad without leading zeros (inet_pton's rules: "010" is rejected rather than read as octal). */
function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!DECIMAL_OCTET.test(parts[i])) return null;
    const value = Number(parts[i]);
    if (value > 255) return null;
    bytes[i] = value;
  }
  return bytes;
}

/** RFC 4291 §2.2 text form: hex groups, at most one "::", optionally a dotted quad at the end. */
function parseIPv6(text: string): Uint8Array | null {
  const gap = text.indexOf('::');
  if (gap !== -1 && text.indexOf('::', gap + 1) !== -1) return null;
  const headText = gap === -1 ? text : text.slice(0, gap);
  const tailText = gap === -1 ? '' : text.slice(gap + 2);
  const head = headText === '' ? [] : headText.split(':');
  const tail = tailText === '' ? [] : tailText.split(':');
  const words: number[] = [];
  const groups = [...head, ...tail];
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i];
    const isLast = i === groups.length - 1 && (gap === -1 || tail.length > 0);
    if (isLast && group.includes('.')) {
      const embedded = parseIPv4(group);
      if (embedded === null) return null;
      words.push((embedded[0] << 8) | embedded[1], (embedded[2] << 8) | embedded[3]);
    } else if (HEX_GROUP.test(group)) {
      words.push(Number.parseInt(group, 16));
    } else {
      return null;
    }
  }
  // "::" stands for at least one zero group (inet_pton rejects it beside eight explicit groups).
  if (gap === -1 ? words.length !== 8 : words.length > 7) return null;
  // Words before the gap go at the front, words after it at the back; the gap is zeros. An embedded
  // dotted quad can only be the last group, so every group before the gap is exactly one word.
  const headWords = gap === -1 ? words.length : head.length;
  const bytes = new Uint8Array(16);
  const tailWords = words.length - headWords;
  for (let i = 0; i < words.length; i++) {
    const position = i < headWords ? i : 8 - tailWords + (i - headWords);
    bytes[2 * position] = words[i] >>> 8;
    bytes[2 * position + 1] = words[i] & 0xff;
  }
  return bytes;
}

/**
 * Formats a prefix the way wg(8) prints allowed IPs: inet_ntop(3) as glibc implements it, so IPv6
 * is lowercase with the longest run (leftmost on ties) of two or more zero groups shown as "::",
 * and ::a.b.c.d / ::ffff:a.b.c.d keep their embedded IPv4 in dotted form.
 */
export function formatCidr(bytes: Uint8Array, prefixLength: number): string {
  checkPrefix(bytes, prefixLength);
  return `${bytes.length === 4 ? formatIPv4(bytes, 0) : formatIPv6(bytes)}/${prefixLength}`;
}

function formatIPv4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

function formatIPv6(bytes: Uint8Array): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((bytes[2 * i] << 8) | bytes[2 * i + 1]);
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && words[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  if (bestLength < 2) bestStart = -1;
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      text += '::';
      i += bestLength - 1;
      continue;
    }
    if (i > 0 && i !== bestStart + bestLength) text += ':';
    const embedsIPv4 = i === 6 && bestStart === 0 && (bestLength === 6 || (bestLength === 5 && words[5] === 0xffff));
    if (embedsIPv4) return text + formatIPv4(bytes, 12);
    text += words[i].toString(16);
  }
  return text;
}
