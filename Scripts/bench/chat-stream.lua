-- wrk: POST /v1/chat/completions with "stream": true (16 tokens from a fast simulated engine),
-- prompts drawn from 256 conversations; one JSON line of results at the end. wrk's latency is
-- the time to the complete streamed answer.
local counter = 0
local headers = {["Content-Type"] = "application/json"}
if os.getenv("CONNECTION_CLOSE") == "1" then headers["Connection"] = "close" end
request = function()
    counter = counter + 1
    local conversation = counter % 256
    local body = string.format(
        '{"model":"sim-model","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"conversation %d: %s"}]}',
        conversation, string.rep("shared context of conversation " .. conversation .. " ", 24))
    return wrk.format("POST", "/v1/chat/completions", headers, body)
end

done = function(summary, latency, requests)
    local seconds = summary.duration / 1e6
    io.write(string.format(
        'RESULT {"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"errors":%d,"non2xx":%d}\n',
        summary.requests, summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, summary.errors.status))
end
