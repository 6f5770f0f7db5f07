-- wrk: prints one JSON line of results at the end of a run (loaded by the request scripts).
done = function(summary, latency, requests)
    local seconds = summary.duration / 1e6
    io.write(string.format(
        'RESULT {"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"errors":%d,"non2xx":%d}\n',
        summary.requests, summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
