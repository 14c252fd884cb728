// One monotonic clock for every thread. performance.now() counts from each thread's own start, so
// timestamps handed between threads (a keypair's creation time, say) add the thread's timeOrigin:
// milliseconds on a common epoch that advance monotonically within a thread.
export function monotonicNow(): number {
  return performance.timeOrigin + performance.now();
}
