-- wrk: POST /v1/route with prompts drawn from 256 conversations (shared prefixes, so the
-- cache-aware strategy has real work), printing one JSON line of results at the end.
local counter = 0
request = function()
    counter = counter + 1
    local conversation = counter % 256
    local body = string.format(
        '{"model":"sim-model","prompt":"conversation %d: %s turn %d","max_tokens":64}',
        conversation, string.rep("shared context of conversation " .. conversation .. " ", 24), counter)
    return wrk.format("POST", "/v1/route", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
    local seconds = summary.duration / 1e6
    io.write(string.format(
        'RESULT {"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"errors":%d,"non2xx":%d}\n',
        summary.requests, summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
