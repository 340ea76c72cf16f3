-- wrk hook: prints the run's summary as one JSON line (marker first) for the harness to parse.
-- Durations and latencies are microseconds; errors.status counts HTTP statuses above 399.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'TETHER_WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
