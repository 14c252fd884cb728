// Keeping a lightly used path warm (src/workers/keep-warm.ts), seen from outside: after a ping, a
// ztgate daemon's threads wake about every KEEP_WARM_TICK_MS for the window ZTGATE_KEEP_WARM_MS
// sets, then go back to sleeping a second at a time; with the window at 0 they never tick. Wake-ups
// are counted as the voluntary context switches of all the daemon's threads (/proc/PID/task).

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildPair, labTest, ping, requireRoot } from './lab.ts';
import type { ImplPairing } from './lab.ts';
import { KEEP_WARM_TICK_MS } from '../../src/workers/keep-warm.ts';

await requireRoot();

const WINDOW_MS = 1_500;
const MEASURE_MS = 500;
/** What a ticking worker does in MEASURE_MS, halved for scheduling slack. */
const TICKING_AT_LEAST = MEASURE_MS / KEEP_WARM_TICK_MS / 2;
/** Idle threads wake about once a second each (workers, the UDP reader, the control thread's timers). */
const IDLE_AT_MOST = 25;

const aIsZtgate = (pairing: ImplPairing): boolean => pairing.a.name.startsWith('ztgate');

function voluntarySwitches(pid: number): number {
  let total = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const match = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      total += Number(match?.[1] ?? 0);
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return total;
}

async function wakeUpsOver(pid: number, ms: number): Promise<number> {
  const before = voluntarySwitches(pid);
  await sleep(ms);
  return voluntarySwitches(pid) - before;
}

for (const windowMs of [WINDOW_MS, 0]) {
  labTest(`keep-warm window ${windowMs} ms: ticks after data only inside the window`, 60_000, async (lab, impls) => {
    const saved = process.env['ZTGATE_KEEP_WARM_MS'];
    process.env['ZTGATE_KEEP_WARM_MS'] = String(windowMs);
    try {
      const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
      const pid = a.daemon.process.pid;
      const result = await ping(a.ns, b.tunnelV4, { count: 3, intervalS: 0.2, replyTimeoutS: 2, deadlineS: 10 });
      assert.equal(result.received, 3, 'pings through the tunnel');
      const inside = await wakeUpsOver(pid, MEASURE_MS);
      await sleep(WINDOW_MS + 500);
      const after = await wakeUpsOver(pid, 1_000);
      if (windowMs > 0) assert.ok(inside >= TICKING_AT_LEAST, `${inside} wake-ups in ${MEASURE_MS} ms inside the window`);
      else assert.ok(inside <= IDLE_AT_MOST, `${inside} wake-ups in ${MEASURE_MS} ms with keep-warm off`);
      assert.ok(after <= IDLE_AT_MOST, `${after} wake-ups in 1 s after the window`);
    } finally {
      if (saved === undefined) delete process.env['ZTGATE_KEEP_WARM_MS'];
      else process.env['ZTGATE_KEEP_WARM_MS'] = saved;
    }
  }, { when: aIsZtgate });
}
