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


dofile("Scripts/bench/report.lua")
