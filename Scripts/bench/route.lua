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


dofile("Scripts/bench/report.lua")
