-- wrk script: POST the JSON body in $BENCH_BODY; report mean and percentiles as one JSON line.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.4f, "errors": %d, "mean_ms": %.4f, "p50_ms": %.4f, "p99_ms": %.4f}\n',
    summary.requests, summary.duration / 1e6, errors, latency.mean / 1000,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
