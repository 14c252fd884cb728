// Keeping a lightly used packet path warm. On this class of machine (a small VM) a worker woken
// after a few milliseconds asleep finds its code and data gone from the CPU's caches: every native
// call costs 10–30 µs instead of 0.5–2, and a ping's leg through one side took twice wireguard-go's
// time, all of it in the first wake-up (perf/README.md, "Leg by leg"). So for a while after it last
// moved data, a worker that has nothing to do sleeps KEEP_WARM_TICK_MS at a time and turns through
// its reads when the sleep ends, finding nothing; the next real packet then meets a warm path. It
// costs CPU only while traffic is light (busy workers do not sleep, idle ones sleep long): about
// 1.4–2.5 % of a core per daemon with one to five pings a second (perf/README.md, "Keeping the path
// warm").

/** How long after its last data packet a worker keeps its path warm, unless configured. */
export const DEFAULT_KEEP_WARM_MS = 2_000;
/** The longest keep-warm window accepted (an hour: longer is a misconfiguration, not a choice). */
export const MAX_KEEP_WARM_MS = 3_600_000;
/**
 * The sleep between two warm-keeping turns. Measured through a pair with one ping a second: 5 ms
 * kept the RTT at 0.38–0.45 ms (0.67–0.82 without) for 1.5–2.6 % of a core per daemon; 10 and 20 ms
 * gave 0.44–0.64 ms, less steadily; 2 ms was no faster and wakes 2.5 times as often.
 */
export const KEEP_WARM_TICK_MS = 5;

/**
 * How long a worker that found nothing to do sleeps: a keep-warm tick while its last data packet
 * (at `lastDataAt`) is less than `keepWarmMs` old, else `idleMs`.
 */
export function idleWaitMs(now: number, lastDataAt: number, keepWarmMs: number, idleMs: number): number {
  return now - lastDataAt < keepWarmMs ? Math.min(KEEP_WARM_TICK_MS, idleMs) : idleMs;
}
