// DropReporter, which every packet thread calls on every turn of its loop: it must gather the
// counters at most once per report interval, changed or not (gathering them allocates).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DropReporter } from '../../src/workers/thread-support.ts';
import { DROP_REPORT_INTERVAL_MS } from '../../src/control/messages.ts';

test('the counters are gathered once per interval, also while they do not change', () => {
  const reporter = new DropReporter('test');
  let gathered = 0;
  const counts = (): Record<string, number> => {
    gathered++;
    return { noRoute: 0 };
  };
  // One turn every 0.1 ms over three report intervals.
  for (let now = DROP_REPORT_INTERVAL_MS; now < 4 * DROP_REPORT_INTERVAL_MS; now += 0.1) reporter.maybeReport(counts, now);
  assert.equal(gathered, 3);
  reporter.maybeReport(counts, 4 * DROP_REPORT_INTERVAL_MS - 1, true);
  assert.equal(gathered, 4, 'a forced report gathers at once');
});
