// The measuring instruments' pure parts: perf script parsing, stack folding, top frames and the
// SVG renderer (perf/flame.ts), and the UDP rate search and /proc readers (perf/measure.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fold, frameName, parsePerfScript, renderFlameGraph, samplesByRoot, topFrames } from '../../perf/flame.ts';
import {
  formatColumns, hopTimings, median, parseCpuTicks, parseNetEvents, parseSchedStat, parseSocketDrops, parseUdpErrors, searchHighestRate, warningsIn,
} from '../../perf/measure.ts';
import type { RateTrial } from '../../perf/measure.ts';

const SCRIPT = [
  'node 100/100 ',
  '\t    7f0000001000 chacha20_encrypt_bytes+0x1a (/usr/lib/libsodium.so.23)',
  '\t    2f00aa JS:*encrypt file:///repo/src/workers/datapath.ts:154:10 (/tmp/perf-100.map)',
  '\t    2f00bb JS:~loop file:///repo/src/workers/worker.ts:200:1 (/tmp/perf-100.map)',
  '',
  '../workers/work 100/104 ',
  '\t    ffffffff81000000 do_syscall_64+0x5 ([kernel.kallsyms])',
  '\t    7f0000002000 [unknown] (/usr/lib/koffi.node)',
  '\t    2f00bb JS:~loop file:///repo/src/workers/worker.ts:200:1 (/tmp/perf-100.map)',
  '',
  'node 100/100 ',
  '\t    7f0000001000 chacha20_encrypt_bytes+0x44 (/usr/lib/libsodium.so.23)',
  '\t    2f00aa JS:*encrypt file:///repo/src/workers/datapath.ts:154:10 (/tmp/perf-100.map)',
  '\t    2f00bb JS:~loop file:///repo/src/workers/worker.ts:200:1 (/tmp/perf-100.map)',
  '',
].join('\n');

test('frameName strips offsets, names unknown symbols by library and marks kernel frames', () => {
  assert.equal(frameName('poly1305_blocks+0x10', '/usr/lib/libsodium.so', '/repo'), 'poly1305_blocks');
  assert.equal(frameName('[unknown]', '/usr/lib/koffi.node', '/repo'), '[koffi.node]');
  assert.equal(frameName('tcp_v4_rcv', '[kernel.kallsyms]', '/repo'), 'tcp_v4_rcv [k]');
  assert.equal(frameName('JS:*encrypt file:///repo/src/a.ts:1:2', '/tmp/perf-1.map', '/repo'), '*encrypt src/a.ts:1:2');
  assert.equal(frameName('LazyCompile:~f /repo/b.ts:3:4', '/tmp/perf-1.map', '/repo/'), '~f b.ts:3:4');
});

test('parsePerfScript reads every sample with its threads and frames, innermost first', () => {
  const samples = parsePerfScript(SCRIPT, '/repo');
  assert.equal(samples.length, 3);
  assert.deepEqual(samples[0], {
    comm: 'node', pid: 100, tid: 100,
    frames: ['chacha20_encrypt_bytes', '*encrypt src/workers/datapath.ts:154:10', '~loop src/workers/worker.ts:200:1'],
  });
  assert.equal(samples[1]!.comm, '../workers/work');
  assert.equal(samples[1]!.tid, 104);
  assert.deepEqual(samples[1]!.frames, ['do_syscall_64 [k]', '[koffi.node]', '~loop src/workers/worker.ts:200:1']);
});

test('fold, topFrames and samplesByRoot count stacks, self and total shares', () => {
  const samples = parsePerfScript(SCRIPT, '/repo');
  const folded = fold(samples, (s) => [`pid ${s.pid}`, s.comm]);
  assert.equal(folded.get('pid 100;node;~loop src/workers/worker.ts:200:1;*encrypt src/workers/datapath.ts:154:10;chacha20_encrypt_bytes'), 2);
  assert.equal(folded.size, 2);
  const tops = topFrames(folded, 10, 2);
  assert.equal(tops.samples, 3);
  assert.deepEqual(tops.self[0], { name: 'chacha20_encrypt_bytes', samples: 2, percent: (100 * 2) / 3 });
  assert.deepEqual(tops.total[0], { name: '~loop src/workers/worker.ts:200:1', samples: 3, percent: 100 });
  assert.ok(!tops.total.some((f) => f.name === 'node' || f.name.startsWith('pid ')), 'synthetic roots are skipped');
  assert.deepEqual(samplesByRoot(folded, 2).map((r) => [r.name, r.samples]), [['pid 100 / node', 2], ['pid 100 / ../workers/work', 1]]);
});

test('fold with trimRuntime replaces the frames below the outermost project frame with one', () => {
  const sample = { comm: 'node', pid: 1, tid: 1, frames: ['leaf', '*encrypt src/workers/datapath.ts:1:1', 'Builtins_JSEntry', 'start_thread'] };
  assert.deepEqual([...fold([sample], () => ['r'], true).keys()], ['r;(node runtime);*encrypt src/workers/datapath.ts:1:1;leaf']);
  assert.deepEqual([...fold([sample], () => ['r']).keys()], ['r;start_thread;Builtins_JSEntry;*encrypt src/workers/datapath.ts:1:1;leaf']);
  const native = { comm: 'node', pid: 1, tid: 1, frames: ['read', 'start_thread'] };
  assert.deepEqual([...fold([native], () => ['r'], true).keys()], ['r;start_thread;read']);
});

test('a semicolon inside a frame name cannot split it into two frames', () => {
  const folded = fold([{ comm: 'x', pid: 1, tid: 1, frames: ['a;b'] }], () => ['root']);
  assert.deepEqual([...folded.keys()], ['root;a:b']);
});

test('renderFlameGraph draws one box per frame, widths proportional to samples, text escaped', () => {
  const folded = new Map([['root;a;<b>', 3], ['root;c', 1]]);
  const svg = renderFlameGraph(folded, { title: 'T & t', width: 410 });
  assert.match(svg, /^<\?xml/);
  assert.ok(svg.includes('T &amp; t'));
  assert.ok(svg.includes('&lt;b&gt; (3 samples, 75.00%)'));
  assert.ok(!svg.includes('<b>'));
  const width = (name: string): number => Number(new RegExp(`<title>${name} \\(\\d+ samples[^<]*</title><rect x="[\\d.]+" y="\\d+" width="([\\d.]+)"`).exec(svg)?.[1]);
  // 410 px minus 2 × 10 px of margin = 390 px for 4 samples.
  assert.equal(width('all'), 390);
  assert.equal(width('a'), 292.5);
  assert.equal(width('c'), 97.5);
  assert.equal((svg.match(/<g><title>/g) ?? []).length, 5, "all, root, a, <b>, c");
});

/** A fake link that carries `capacityMbps` without loss and drops everything above it. */
function link(capacityMbps: number): { measure: (offered: number) => Promise<RateTrial>; offered: number[] } {
  const offered: number[] = [];
  return {
    offered,
    measure: async (offeredMbps) => {
      offered.push(offeredMbps);
      const lossPercent = offeredMbps <= capacityMbps ? 0 : (100 * (offeredMbps - capacityMbps)) / offeredMbps;
      return { offeredMbps, receivedGbps: Math.min(offeredMbps, capacityMbps) / 1000, lossPercent };
    },
  };
}

test('searchHighestRate doubles, then bisects to within the resolution, within its trial budget', async () => {
  const fake = link(730);
  const result = await searchHighestRate(fake.measure, { startMbps: 200, maxMbps: 10_000, maxLossPercent: 1, maxTrials: 12, resolution: 0.05 });
  assert.deepEqual(fake.offered.slice(0, 3), [200, 400, 800]);
  assert.ok(result.bestMbps <= 737 && result.bestMbps >= 730 * 0.95, `found ${result.bestMbps}`);
  assert.ok(fake.offered.length <= 12);
  const bounded = link(730);
  const short = await searchHighestRate(bounded.measure, { startMbps: 200, maxMbps: 10_000, maxLossPercent: 1, maxTrials: 3, resolution: 0.01 });
  assert.equal(bounded.offered.length, 3);
  assert.equal(short.bestMbps, 400);
});

test('searchHighestRate reports 0 when even the lowest rate loses, and stops at the maximum', async () => {
  const dead = await searchHighestRate(async (offeredMbps) => ({ offeredMbps, receivedGbps: 0, lossPercent: 100 }),
    { startMbps: 100, maxMbps: 1000, maxLossPercent: 1, maxTrials: 4, resolution: 0.1 });
  assert.equal(dead.bestMbps, 0);
  assert.equal(dead.trials.length, 4);
  const fast = link(1e9);
  const capped = await searchHighestRate(fast.measure, { startMbps: 100, maxMbps: 500, maxLossPercent: 1, maxTrials: 10, resolution: 0.1 });
  assert.equal(capped.bestMbps, 500);
  assert.deepEqual(fast.offered, [100, 200, 400, 500]);
  await assert.rejects(searchHighestRate(fast.measure, { startMbps: 0, maxMbps: 1, maxLossPercent: 1, maxTrials: 1, resolution: 0 }), RangeError);
});

test('parseUdpErrors adds the IPv4 and IPv6 counters by name', () => {
  const snmp = 'Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 7 12 5 2\n';
  assert.deepEqual(parseUdpErrors(snmp, 'Udp6InDatagrams 3\nUdp6RcvbufErrors 4\nUdp6SndbufErrors 1\n'), { rcvbufErrors: 9, sndbufErrors: 3 });
  assert.deepEqual(parseUdpErrors(snmp), { rcvbufErrors: 5, sndbufErrors: 2 });
  assert.throws(() => parseUdpErrors('Ip: a\nIp: 1\n'), /no Udp/);
});

test('parseCpuTicks reads utime + stime even when the command name has spaces and parentheses', () => {
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
  fields[11] = '250';
  fields[12] = '40';
  assert.equal(parseCpuTicks(`1234 (we (ird) name) ${fields.join(' ')}`), 290);
  assert.throws(() => parseCpuTicks('1234 (x) S'), /unreadable/);
});

test('parseSchedStat reads ns on a CPU, ns waiting and slices, and refuses anything else', () => {
  assert.deepEqual(parseSchedStat('123456789 2000 42\n'), { onCpuNs: 123456789, waitNs: 2000, slices: 42 });
  assert.throws(() => parseSchedStat('123 456'), /unreadable/);
  assert.throws(() => parseSchedStat(''), /unreadable/);
});

test('warningsIn keeps pino records at level 40 and above, ignoring other output', () => {
  const output = [
    '{"level":30,"msg":"dropped packets"}',
    '{"level":40,"msg":"link watcher failed"}',
    'not json {',
    '{"level":50,"msg":"fatal-ish"}',
    '{"msg":"no level"}',
  ].join('\n');
  assert.deepEqual(warningsIn(output), [{ level: 40, msg: 'link watcher failed' }, { level: 50, msg: 'fatal-ish' }]);
});

test('parseSocketDrops sums the drops column of the given socket inodes only', () => {
  const table = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            ',
    '  12: 00000000:B9FF 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1320286 2 000000008bb69120 5',
    '  13: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1320290 2 000000008bb69999 40',
    '  14: 00000000:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 000000008bb69aaa 3',
    '',
  ].join('\n');
  assert.equal(parseSocketDrops(table, new Set([1320286, 77])), 8);
  assert.equal(parseSocketDrops(table, new Set([1320290])), 40);
  assert.equal(parseSocketDrops(table, new Set()), 0);
  assert.throws(() => parseSocketDrops('sl local_address\n', new Set([1])), /unreadable/);
});

test('hopTimings follows each echo through the pair, leaving out one whose reply never came', () => {
  const line = (comm: string, t: number, event: string, dev: string, len: number): string =>
    `${comm.padStart(16)} ${t.toFixed(6)}:   net:${event}: dev=${dev} skbaddr=0xffff888102443800 len=${len} rc=0`;
  const echo = (t0: number): string[] => [
    line('ping', t0, 'net_dev_xmit', 'tunA', 84),
    line('../workers/work', t0 + 0.000200, 'net_dev_xmit', 'vethA', 170),
    line('../workers/work', t0 + 0.000204, 'netif_receive_skb', 'vethB', 156),
    line('../workers/work', t0 + 0.000400, 'netif_receive_skb', 'tunB', 84),
    line('../workers/work', t0 + 0.000415, 'net_dev_xmit', 'tunB', 84),
    line('../workers/work', t0 + 0.000475, 'net_dev_xmit', 'vethB', 170),
    line('V8 DefaultWorke', t0 + 0.000480, 'net_dev_xmit', 'vethA', 96), // a keepalive in between
    line('../workers/work', t0 + 0.000600, 'netif_receive_skb', 'tunA', 84),
  ];
  const lost = echo(2).slice(0, 4); // the request reached B, nothing came back
  const script = ['# a comment perf may print', ...echo(1), ...lost, ...echo(3)].join('\n');
  const events = parseNetEvents(script);
  assert.equal(events.length, 20);
  assert.deepEqual(events[0], { comm: 'ping', time: 1, kind: 'xmit', device: 'tunA', length: 84 });
  assert.equal(events[6]!.comm, 'V8 DefaultWorke');
  const hops = hopTimings(events, { tunA: 'tunA', underlayA: 'vethA', tunB: 'tunB', underlayB: 'vethB' }, 84);
  assert.equal(hops.length, 2);
  for (const hop of hops) {
    const rounded = Object.fromEntries(Object.entries(hop).map(([k, v]) => [k, Math.round(v)]));
    assert.deepEqual(rounded, { aOut: 200, bIn: 200, bReply: 15, bOut: 60, aIn: 125, total: 600 });
  }
});

test('formatColumns left-aligns the first column, right-aligns the rest and rules the header', () => {
  const table = formatColumns(['pair', 'Mbit/s'], [['ztgate', '982'], ['wireguard-go', '54']]);
  assert.equal(table, [
    'pair          Mbit/s',
    '------------  ------',
    'ztgate           982',
    'wireguard-go      54',
  ].join('\n'));
});

test('median takes the middle value, or the mean of the middle two, and skips missing values', () => {
  assert.equal(median([3, null, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([null]), null);
  assert.equal(median([]), null);
});
