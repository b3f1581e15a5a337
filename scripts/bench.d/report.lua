-- report.lua: loaded by the other scripts; wrk calls done() once at the end of a run.
-- Prints one machine-readable line for scripts/bench (latencies in microseconds).
-- summary.errors.status counts answers with status > 399: a broken server cannot look fast.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "status=%d connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
