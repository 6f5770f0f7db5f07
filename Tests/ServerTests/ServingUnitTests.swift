import Balancer
import Foundation
@testable import Server
@testable import Serving
import FulcrumAgent
import Testing

@Suite struct HealthAndCircuitTests {
    @Test func healthyAfterTwoSuccessesUnhealthyAfterThreeFailures() {
        var tracker = HealthTracker(verdict: .unknown)
        #expect(tracker.record(success: true, latencyMilliseconds: 10, healthyAfter: 2, unhealthyAfter: 3) == nil)
        #expect(tracker.record(success: true, latencyMilliseconds: 20, healthyAfter: 2, unhealthyAfter: 3) == .healthy)
        #expect(tracker.latencyMilliseconds == 12)  // 10 + 0.2 × (20 − 10)
        #expect(tracker.record(success: false, latencyMilliseconds: nil, healthyAfter: 2, unhealthyAfter: 3) == nil)
        #expect(tracker.record(success: false, latencyMilliseconds: nil, healthyAfter: 2, unhealthyAfter: 3) == nil)
        // A success in between resets the count.
        #expect(tracker.record(success: true, latencyMilliseconds: 12, healthyAfter: 2, unhealthyAfter: 3) == nil)
        for _ in 0..<2 { #expect(tracker.record(success: false, latencyMilliseconds: nil, healthyAfter: 2, unhealthyAfter: 3) == nil) }
        #expect(tracker.record(success: false, latencyMilliseconds: nil, healthyAfter: 2, unhealthyAfter: 3) == .unhealthy)
        #expect(tracker.record(success: false, latencyMilliseconds: nil, healthyAfter: 2, unhealthyAfter: 3) == nil)
        #expect(tracker.record(success: true, latencyMilliseconds: 1, healthyAfter: 2, unhealthyAfter: 3) == nil)
        #expect(tracker.record(success: true, latencyMilliseconds: 1, healthyAfter: 2, unhealthyAfter: 3) == .healthy)
    }

    @Test func circuitOpensOnFailuresNeverOnClientErrors() {
        var breaker = CircuitBreaker(state: .closed, now: 0)
        for _ in 0..<50 { #expect(breaker.record(.clientError, now: 1, failureThreshold: 5) == nil) }
        for _ in 0..<4 { #expect(breaker.record(.serverError, now: 1, failureThreshold: 5) == nil) }
        #expect(breaker.record(.ok, now: 1, failureThreshold: 5) == nil)
        for outcome in [UpstreamOutcome.serverError, .connectError, .timeout, .serverError] {
            #expect(breaker.record(outcome, now: 2, failureThreshold: 5) == nil)
        }
        #expect(breaker.record(.timeout, now: 2, failureThreshold: 5) == .open)
        #expect(breaker.tick(now: 1_000, openMilliseconds: 5_000) == nil)
        #expect(breaker.tick(now: 5_002, openMilliseconds: 5_000) == .halfOpen)
        // A failed trial re-opens at once; a good one closes.
        #expect(breaker.record(.serverError, now: 5_003, failureThreshold: 5) == .open)
        #expect(breaker.tick(now: 10_003, openMilliseconds: 5_000) == .halfOpen)
        #expect(breaker.record(.ok, now: 10_004, failureThreshold: 5) == .closed)
        #expect(breaker.state == .closed)
    }
}

@Suite struct StatusParserTests {
    @Test func nativeStatus() throws {
        let load = try StatusParser.native(Array(#"{"running_requests":3,"waiting_requests":2,"kv_blocks_used":10,"kv_blocks_total":100,"step_latency_ms":4.5,"extra":1}"#.utf8), now: 7)
        #expect(load == EngineLoad(runningRequests: 3, waitingRequests: 2, kvBlocksUsed: 10, kvBlocksTotal: 100, stepLatencyMilliseconds: 4.5, reportedAt: 7))
        #expect(throws: (any Error).self) { try StatusParser.native(Array(#"{"running_requests":-1}"#.utf8), now: 0) }
        #expect(throws: (any Error).self) { try StatusParser.native(Array("garbage".utf8), now: 0) }
        #expect(throws: (any Error).self) { try StatusParser.native(Array(#"{"running_requests":"many"}"#.utf8), now: 0) }
    }

    @Test func vllmMetricsAreSummedOverLabelSets() throws {
        let text = """
            # HELP vllm:num_requests_running Number of requests running.
            # TYPE vllm:num_requests_running gauge
            vllm:num_requests_running{engine="0",model_name="m"} 3.0
            vllm:num_requests_running{engine="1",model_name="m"} 2.0
            vllm:num_requests_waiting{model_name="m"} 7.0
            vllm:kv_cache_usage_perc{model_name="m"} 0.25
            vllm:prompt_tokens_total{model_name="m"} 12345.0
            """
        let load = try StatusParser.vllm(text, now: 1)
        #expect(load.runningRequests == 5 && load.waitingRequests == 7)
        #expect(abs(load.kvUsage - 0.25) < 1e-9)
        #expect(throws: StatusParseError.self) { try StatusParser.vllm("process_cpu_seconds_total 3\n", now: 1) }
        let old = try StatusParser.vllm("vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.5\nvllm:num_requests_waiting NaN\n", now: 1)
        #expect(old.runningRequests == 1 && abs(old.kvUsage - 0.5) < 1e-9 && old.waitingRequests == 0)
    }

    /// vLLM's `/metrics` as its Prometheus client writes it: the gauges of vllm-project/vllm
    /// `vllm/v1/metrics/loggers.py` at a6f0308 (`vllm:num_requests_running`,
    /// `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, labels `engine` and
    /// `model_name`), with quoted label values holding spaces, braces, escaped quotes and commas;
    /// exponents, NaN, infinities and timestamps.
    @Test func vllmMetricsAreParsedRobustly() throws {
        let text = #"""
            # HELP vllm:num_requests_running Number of requests in model execution batches.
            # TYPE vllm:num_requests_running gauge
            vllm:num_requests_running{engine="0",model_name="my model {v2}, "final""} 3.0
            vllm:num_requests_running{engine="1",model_name="my model {v2}, "final""} 2e+00 1712345678000
            vllm:num_requests_waiting{engine="0",model_name="a\b"} 1.0e1
            vllm:num_requests_waiting{engine="1",model_name="x"} +Inf
            vllm:num_requests_waiting{engine="2",model_name="x"} -3
            vllm:kv_cache_usage_perc{engine="0",model_name="x"} 0.5
            vllm:kv_cache_usage_perc{engine="1",model_name="x"} NaN
            vllm:num_requests_running{engine="3",model_name="unterminated} 100
            vllm:num_requests_running_total 100
            """#
        let load = try StatusParser.vllm(text, now: 1)
        #expect(load.runningRequests == 5 && load.waitingRequests == 10)
        #expect(abs(load.kvUsage - 0.5) < 1e-9)
    }

    /// `/get_load`'s `num_reqs` counts running and waiting requests (sgl-project/sglang's
    /// scheduler), so a waiting request is counted once, as waiting.
    @Test func sglangLoadAcceptsRankListsAndObjects() throws {
        let ranks = try StatusParser.sglang(Array(#"[{"dp_rank":0,"num_reqs":2,"num_waiting_reqs":1,"num_tokens":100},{"dp_rank":1,"num_reqs":3,"num_waiting_reqs":0,"num_tokens":50}]"#.utf8), now: 1)
        #expect(ranks.runningRequests == 4 && ranks.waitingRequests == 1 && ranks.queuedPrefillTokens == 150)
        let single = try StatusParser.sglang(Array(#"{"num_reqs":4}"#.utf8), now: 1)
        #expect(single.runningRequests == 4)
        #expect(throws: (any Error).self) { try StatusParser.sglang(Array(#"{"something":"else"}"#.utf8), now: 1) }
        #expect(throws: (any Error).self) { try StatusParser.sglang(Array("[1,2".utf8), now: 1) }
    }

    /// `GET /v1/loads` as SGLang writes it: sgl-project/sglang
    /// `python/sglang/srt/entrypoints/v1_loads.py` at 5b49fe622 (`get_loads`: `timestamp`,
    /// `version`, `dp_rank_count`, `loads` — each `GetLoadsReqOutput` without its `timestamp`
    /// and `None` fields, plus `num_total_reqs` — and `aggregate`), the fields of
    /// `GetLoadsReqOutput` from `python/sglang/srt/managers/io_struct.py` at f11d231
    /// (`num_used_tokens`, `num_total_tokens` = used plus pending prefill tokens,
    /// `max_total_num_tokens`, `token_usage`, `num_waiting_uncached_tokens`).
    @Test func sglangV1LoadsCountsEachRequestOnceAndReadsKVUsage() throws {
        let body = #"""
            {"timestamp":"2026-08-01T10:30:00.123456+00:00","version":"0.5.8","dp_rank_count":2,"loads":[
             {"dp_rank":0,"num_running_reqs":5,"num_waiting_reqs":2,"num_waiting_uncached_tokens":700,"num_used_tokens":3000,"num_total_tokens":3900,"max_total_num_tokens":10000,"token_usage":0.3,"gen_throughput":120.5,"cache_hit_rate":0.4,"utilization":0.3,"max_running_requests":256,"num_total_reqs":7},
             {"dp_rank":1,"num_running_reqs":1,"num_waiting_reqs":0,"num_used_tokens":1000,"num_total_tokens":1250,"max_total_num_tokens":10000,"token_usage":0.1,"gen_throughput":40.0,"cache_hit_rate":0.2,"utilization":0.1,"max_running_requests":256,"num_total_reqs":1}],
             "aggregate":{"total_running_reqs":6,"total_waiting_reqs":2,"total_reqs":8,"avg_token_usage":0.2,"avg_throughput":80.25,"avg_utilization":0.2}}
            """#
        let load = try StatusParser.sglang(Array(body.utf8), now: 1)
        #expect(load.runningRequests == 6 && load.waitingRequests == 2)
        #expect(abs(load.kvUsage - 0.2) < 1e-9)
        // Prompt tokens waiting: the uncached count where the engine reports it, else total − used.
        #expect(load.queuedPrefillTokens == 700 + 250)
        let usageOnly = try StatusParser.sglang(Array(#"{"loads":[{"num_running_reqs":2,"num_waiting_reqs":1,"token_usage":0.5}]}"#.utf8), now: 1)
        #expect(usageOnly.runningRequests == 2 && abs(usageOnly.kvUsage - 0.5) < 1e-9)
        // Hostile values: negative, huge, not numbers; a list that is not one.
        let hostile = try StatusParser.sglang(Array(#"{"loads":[{"num_running_reqs":-4,"num_waiting_reqs":1e300,"token_usage":7}]}"#.utf8), now: 1)
        #expect(hostile.runningRequests == 0 && hostile.waitingRequests == Bounds.requests && hostile.kvUsage == 1)
        #expect(throws: StatusParseError.self) { try StatusParser.sglang(Array(#"{"loads":"many"}"#.utf8), now: 1) }
        #expect(throws: StatusParseError.self) { try StatusParser.sglang(Array(#"{"loads":[{"dp_rank":0}]}"#.utf8), now: 1) }
        #expect(StatusFormat.sglang.path == "/v1/loads?include=core" && StatusFormat.sglangGetLoad.path == "/get_load")
    }

    @Test func theStatusLabelPicksTheFormat() {
        var worker = Worker(id: "w", model: "m", role: .decode, address: "h:1")
        #expect(StatusFormat(worker: worker) == .native)
        worker.labels["status"] = "vllm"
        #expect(StatusFormat(worker: worker) == .vllm)
        worker.labels["status"] = "tcp"
        #expect(StatusFormat(worker: worker).path == nil)
    }
}

@Suite struct SecurityUnitTests {
    @Test func networksMatchTheirAddressesOnly() {
        let ten = CIDR("10.0.0.0/8")!
        #expect(ten.contains("10.200.3.4"))
        #expect(ten.contains("::ffff:10.1.2.3"))
        #expect(!ten.contains("11.0.0.1"))
        #expect(!ten.contains("not an address"))
        #expect(CIDR("192.168.1.77/24")!.description == "192.168.1.0/24")
        let v6 = CIDR("fd00::/8")!
        #expect(v6.contains("fd12::1") && !v6.contains("fe80::1") && !v6.contains("10.0.0.1"))
        #expect(CIDR("127.0.0.1")!.contains("127.0.0.1") && !CIDR("127.0.0.1")!.contains("127.0.0.2"))
        #expect(CIDR("0.0.0.0/0")!.contains("8.8.8.8"))
        for bad in ["10.0.0.0/33", "10.0.0/8", "fd00::/129", "", "/8", "10.0.0.0/x"] { #expect(CIDR(bad) == nil, "\(bad)") }
    }

    @Test func tokenBucketsRefillAtTheirRate() {
        let limiter = RateLimiter(rate: 10, burst: 3)
        for _ in 0..<3 { #expect(limiter.acquire("a", now: 100) == nil) }
        let wait = limiter.acquire("a", now: 100)
        #expect(wait != nil && abs(wait! - 0.1) < 1e-9)
        #expect(limiter.acquire("b", now: 100) == nil)  // per client
        for _ in 0..<2 { #expect(limiter.acquire("a", now: 100.25) == nil) }
        #expect(limiter.acquire("a", now: 100.25) != nil)
    }

    @Test func trackedClientsAreBounded() {
        let limiter = RateLimiter(rate: 1_000, burst: 1, maxClients: 100)
        for index in 0..<10_000 { _ = limiter.acquire("client-\(index)", now: Double(index)) }
        #expect(limiter.trackedClients <= 100)
    }

    @Test func keysCarryScopes() {
        var settings = SecuritySettings()
        settings.apiKeys = [.init(key: "router-key-0123456789", scopes: [.route]), .init(key: "admin-key-0123456789", scopes: [.admin])]
        #expect(settings.key("router-key-0123456789")?.allows(.route) == true)
        #expect(settings.key("router-key-0123456789")?.allows(.admin) == false)
        #expect(settings.key("admin-key-0123456789")?.allows(.worker) == true)
        #expect(settings.key("router-key-012345678") == nil)
    }
}

@Suite struct ServingTypesTests {
    @Test func releaseTokensRoundTripAndRefuseGarbage() {
        let token = ReleaseToken(node: 3, epoch: 77, token: 12)
        #expect(ReleaseToken(token.description) == token)
        for bad in ["", "1.2", "1.2.3.4", "a.b.c", "1..3", "-1.2.3", "1.99999999999.3"] { #expect(ReleaseToken(bad) == nil, "\(bad)") }
    }

    @Test func outcomesFollowTheStatusClass() {
        #expect(UpstreamOutcome(status: 200) == .ok)
        #expect(UpstreamOutcome(status: 429) == .clientError)
        #expect(UpstreamOutcome(status: 503) == .serverError)
        #expect(!UpstreamOutcome.clientError.isFailure && UpstreamOutcome.timeout.isFailure)
    }

    @Test func hostStatsParseProcAndNvidiaSMI() {
        let before = HostStats.cpuTimes(procStat: "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0\ncpu1 5 0 5 40 0 0 0\nintr 1 2 3\n")
        let after = HostStats.cpuTimes(procStat: "cpu  30 0 30 140 0 0 0 0 0 0\ncpu0 25 0 25 50 0 0 0\ncpu1 5 0 5 90 0 0 0\n")
        #expect(before.count == 2)
        #expect(HostStats.coreLoads(from: before, to: after) == [0.8, 0])
        let memory = HostStats.memory(procMeminfo: "MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:    4000 kB\n")
        #expect(memory.total == 16_000 * 1_024 && memory.used == 12_000 * 1_024)
        let gpus = HostStats.gpus(nvidiaSMI: "45, 81920, 40960\n100, 81920, 81920\nbad line\n")
        #expect(gpus.count == 2 && gpus[0].utilization == 0.45 && gpus[0].memoryTotalBytes == 81_920 << 20)
        let (stats, sample) = HostStats.read(previous: nil, diskPath: "/")
        #expect(!sample.isEmpty && stats.coreLoads.count == sample.count && stats.memoryTotalBytes > 0 && stats.diskTotalBytes > 0)
    }
}
