import AsyncHTTPClient
import Balancer
import Foundation
import FulcrumAPI
import NIOCore
@testable import Server
@testable import Serving
import Simulator
import Testing

/// The serving layer in one process: a single-node cluster with its HTTP listener and simulated
/// engines on loopback.
@Suite(.serialized) struct ServingAPITests {
    @Test(.timeLimit(.minutes(1)))
    func routesReleasesAndCountsDecisions() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m"), .init(id: "b", model: "m")]) { harness in
            try await harness.register(0)
            try await harness.register(1)
            let prompt = String(repeating: "the same long system prompt ", count: 20)
            let first = try await harness.post("/v1/route", #"{"model":"m","request_id":"r1","prompt":"\#(prompt)","max_tokens":8}"#)
            #expect(first.status == 200, "\(first.text)")
            let decision = try #require(first.decode(RouteResponse.self))
            let targets = decision.targets
            #expect(targets.count == 1 && targets[0].role == "PDFUSION")
            #expect(decision.degraded == false)
            // The same prompt again lands where its prefix is cached.
            let second = try await harness.post("/v1/route", #"{"model":"m","request_id":"r2","prompt":"\#(prompt) and more"}"#)
            let secondTargets = try #require(second.decode(RouteResponse.self)).targets
            #expect(secondTargets[0].workerId == targets[0].workerId)
            #expect(secondTargets[0].reason == "hit")
            let token = decision.releaseToken
            let released = try await harness.post("/v1/release", #"{"release_token":"\#(token)","outcome":"ok"}"#)
            #expect(released.status == 200 && released.decode(ReleaseResponse.self)?.released == 1)
            let again = try await harness.post("/v1/release", #"{"release_token":"\#(token)"}"#)
            #expect(again.status == 404 && again.errorField == "release_token")
            // The decided prefixes reach the log within a flush interval: a new leader would know them.
            let chosen = targets[0].workerId
            try await harness.waitForState("prefixes replicated") { $0.state.cachedBlockCount(workerID: chosen) > 0 }
            let metrics = try await harness.get("/metrics")
            #expect(metrics.text.contains(#"fulcrum_routing_decisions_total{model="m",role="PDFUSION",strategy="cache_aware",reason="hit"} 1"#))
            #expect(metrics.text.contains("fulcrum_raft_term "))
            #expect(metrics.text.contains("fulcrum_http_request_duration_seconds_bucket"))
            #expect(metrics.text.contains(#"fulcrum_worker_healthy{worker="w0",model="m",role="PDFUSION"}"#))
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func everyMalformedRequestGetsA4xxNamingTheField() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")]) { harness in
            try await harness.register(0)
            let cases: [(String, String, Int, String)] = [
                ("/v1/route", "{not json", 400, "body"),
                ("/v1/route", "", 400, "body"),
                ("/v1/route", #"{"prompt":"x"}"#, 400, "model"),
                ("/v1/route", #"{"model":42}"#, 400, "model"),
                ("/v1/route", #"{"model":""}"#, 400, "model"),
                ("/v1/route", #"{"model":"nope"}"#, 404, "model"),
                ("/v1/route", #"{"model":"m","prompt_tokens":-5}"#, 400, "prompt_tokens"),
                ("/v1/route", #"{"model":"m","max_tokens":-1}"#, 400, "max_tokens"),
                ("/v1/route", #"{"model":"m","tokens_per_block":0}"#, 400, "tokens_per_block"),
                ("/v1/route", #"{"model":"m","roles":["TRAINER"]}"#, 400, "roles[0]"),
                ("/v1/route", #"{"model":"m","roles":"PREFILL"}"#, 400, "roles"),
                ("/v1/route", #"{"model":"m","prompt":"a","token_ids":[1]}"#, 400, "prompt"),
                ("/v1/route", #"{"model":"m","token_ids":[-1]}"#, 400, "token_ids[0]"),
                ("/v1/route", #"{"model":"m","block_hashes":[\#((0..<70_000).map { _ in "1" }.joined(separator: ","))]}"#, 400, "block_hashes"),
                ("/v1/route", #"{"model":"m","tier":"gold"}"#, 400, "tier"),
                ("/v1/route", #"{"model":"m","location":{"latitude":91,"longitude":0}}"#, 400, "location"),
                ("/v1/route", #"{"model":"m","location":{"latitude":1}}"#, 400, "location.longitude"),
                ("/v1/release", #"{"release_token":"abc"}"#, 400, "release_token"),
                ("/v1/release", #"{"release_token":"1.2.3","outcome":"meh"}"#, 400, "outcome"),
                ("/v1/release", #"{}"#, 400, "release_token"),
                ("/v1/chat/completions", #"{"model":"m"}"#, 400, "messages"),
                ("/v1/chat/completions", #"{"model":"m","messages":[]}"#, 400, "messages"),
                ("/v1/chat/completions", #"{"model":"m","messages":[{"content":"x"}]}"#, 400, "messages[0].role"),
                ("/v1/chat/completions", #"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, 400, "stream"),
                ("/v1/chat/completions", #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-3}"#, 400, "max_tokens"),
                ("/v1/chat/completions", #"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#, 400, "max_tokens"),
                ("/v1/chat/completions", #"{"messages":[{"role":"user","content":"x"}]}"#, 400, "model"),
                ("/v1/chat/completions", #"["model"]"#, 400, "body"),
                ("/v1/completions", #"{"model":"m"}"#, 400, "prompt"),
                ("/v1/completions", #"{"model":"m","prompt":{"a":1}}"#, 400, "prompt"),
                ("/v1/completions", #"{"model":"nope","prompt":"x"}"#, 404, "model"),
                ("/rtp_llm/schedule", #"{"seq_len":10}"#, 400, "request_id"),
                ("/rtp_llm/schedule", #"{"request_id":1,"seq_len":-10}"#, 400, "seq_len"),
                ("/rtp_llm/schedule", #"{"request_id":0,"seq_len":10}"#, 400, "request_id"),
                ("/rtp_llm/schedule", #"{"request_id":1,"seq_len":10,"block_cache_keys":["a"]}"#, 400, "block_cache_keys[0]"),
                ("/v1/workers", #"{"id":"x","model":"m","role":"COOK","address":"127.0.0.1:1"}"#, 400, "role"),
                ("/v1/workers", #"{"id":"x","model":"m","role":"DECODE","address":"nowhere"}"#, 400, "address"),
                ("/v1/workers", #"{"id":"x","model":"m","role":"DECODE","address":"h:1","capacity":{"kv_blocks":-1}}"#, 400, "capacity.kv_blocks"),
                ("/v1/workers", #"{"id":"x","model":"m","role":"DECODE","address":"h:1","labels":{"status":"snmp"}}"#, 400, "labels.status"),
                ("/v1/workers", #"{"model":"m","role":"DECODE","address":"h:1"}"#, 400, "id"),
                ("/v1/workers", #"{"id":"x","model":"m","role":"DECODE","address":"h:1","group":"\#(String(repeating: "g", count: 300))"}"#, 400, "group"),
                ("/v1/workers", #"{"id":"x","model":"m","role":"DECODE","address":"h:1","labels":{"k":"\#(String(repeating: "v", count: 2_000))"}}"#, 400, "labels.k"),
                ("/v1/workers", #"{"id":"x","model":"m","role":"DECODE","address":"\#(String(repeating: "h", count: 300)):1"}"#, 400, "address"),
                ("/v1/workers/w0/heartbeat", #"{"resources":{"core_loads":[0.5,2]}}"#, 400, "resources.core_loads[1]"),
                ("/v1/workers/w0/heartbeat", #"{"resources":{"memory_total_bytes":-1}}"#, 400, "resources.memory_total_bytes"),
                ("/v1/workers/w0/heartbeat", #"{"load":{"running_requests":-1}}"#, 400, "load.running_requests"),
                ("/v1/workers/ghost/heartbeat", #"{}"#, 404, "id"),
            ]
            for (path, body, status, field) in cases {
                let answer = try await harness.post(path, body)
                #expect(answer.status == status, "\(path) \(body.prefix(80)): \(answer.status) \(answer.text.prefix(300))")
                #expect(answer.errorField == field, "\(path) \(body.prefix(80)): \(answer.text.prefix(300))")
                #expect(answer.headers.first(name: "Content-Type")?.contains("json") == true, "\(path)")
            }
            // Invalid UTF-8 in a JSON string.
            let invalid = try await ServingHarness.raw("POST", harness.url + "/v1/route", bytes: Array(#"{"model":"m","prompt":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8))
            #expect(invalid.status == 400 && invalid.errorField == "body", "\(invalid.text)")
            let badConfig: [(String, String, String, Int, String)] = [
                ("PUT", "/admin/config/policies/m", #"{"strategies":{"PREFILL":"fastest"}}"#, 400, "strategies.PREFILL"),
                ("PUT", "/admin/config/policies/m", #"{"split":[{"name":"a","strategy":"random","weight":0}]}"#, 400, "split.a.weight"),
                ("PATCH", "/admin/config/settings", #"{"kv_high_watermark":2}"#, 400, "kv_high_watermark"),
                ("PATCH", "/admin/config/settings", #"{"kv_hihg_watermark":0.5}"#, 400, "kv_hihg_watermark"),
                ("PUT", "/admin/config/tiers/t", #"{"vcpus":-2}"#, 400, "tiers.t.vcpus"),
            ]
            for (method, path, body, status, field) in badConfig {
                let answer = try await ServingHarness.raw(method, harness.url + path, body: body)
                #expect(answer.status == status && answer.errorField == field, "\(path): \(answer.text)")
            }
            // Nothing bad reached the log.
            let workers = await harness.node.withMachine { machine, _ in machine.state.workers.map(\.id) }
            #expect(workers == ["w0"])
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func configChangesAtRunTimeSteerRouting() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m"), .init(id: "b", model: "m"), .init(id: "c", model: "m")]) { harness in
            for index in 0..<3 { try await harness.register(index) }
            let put = try await ServingHarness.raw("PUT", harness.url + "/admin/config/policies/m", body: #"{"strategies":{"PDFUSION":"round_robin"}}"#)
            #expect(put.status == 200, "\(put.text)")
            var picks: [String] = []
            for index in 0..<6 {
                let answer = try await harness.post("/v1/route", #"{"model":"m","request_id":"rr\#(index)","prompt":"same"}"#)
                let target = answer.decode(RouteResponse.self)?.targets.first
                picks.append(target?.workerId ?? "?")
                #expect(target?.strategy == "round_robin")
            }
            #expect(Set(picks) == ["w0", "w1", "w2"] && Set(picks.prefix(3)).count == 3)
            let patch = try await ServingHarness.raw("PATCH", harness.url + "/admin/config/settings", body: #"{"cache_hit_threshold":0.9,"sticky_ttl_ms":1000}"#)
            #expect(patch.status == 200, "\(patch.text)")
            let config = try await harness.get("/admin/config")
            let configuration = try #require(config.decode(BalancerConfiguration.self))
            #expect(configuration.settings.cacheHitThreshold == 0.9 && configuration.settings.stickyTtlMs == 1000)
            #expect(configuration.settings.kvHighWatermark == 0.92)
            #expect(configuration.policies["m"]?.strategies == ["PDFUSION": "round_robin"])
            let split = try await ServingHarness.raw("PUT", harness.url + "/admin/config/default_policy", body: #"{"split":[{"name":"a","strategy":"random","weight":1},{"name":"b","strategy":"least_load","weight":1}]}"#)
            #expect(split.status == 200)
            let deleted = try await ServingHarness.raw("DELETE", harness.url + "/admin/config/policies/m")
            #expect(deleted.status == 200)
            var arms = Set<String>()
            for index in 0..<40 {
                let answer = try await harness.post("/v1/route", #"{"model":"m","request_id":"ab\#(index)"}"#)
                if let arm = answer.decode(RouteResponse.self)?.arm { arms.insert(arm) }
            }
            #expect(arms == ["a", "b"])
            // Drain takes a worker out of rotation.
            for id in ["w0", "w1"] { #expect(try await harness.post("/admin/workers/\(id)/drain", "").status == 200) }
            for index in 0..<5 {
                let answer = try await harness.post("/v1/route", #"{"model":"m","request_id":"d\#(index)"}"#)
                #expect(answer.decode(RouteResponse.self)?.targets.first?.workerId == "w2")
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func streamsChunkByChunkAndReleasesWhenTheStreamEnds() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m", tokenIntervalMilliseconds: 60)]) { harness in
            try await harness.register(0)
            var request = HTTPClientRequest(url: harness.url + "/v1/chat/completions")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: #"{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hello"}]}"#))
            let response = try await ServingHarness.client.execute(request, timeout: .seconds(10))
            #expect(response.status.code == 200)
            #expect(response.headers.first(name: "Content-Type") == "text/event-stream")
            #expect(response.headers.first(name: "X-Fulcrum-Worker") == "w0")
            var arrivals: [ContinuousClock.Instant] = []
            var text = ""
            for try await chunk in response.body {
                arrivals.append(.now)
                text += String(buffer: chunk)
            }
            #expect(text.hasSuffix("data: [DONE]\n\n"))
            // Five tokens and the chunk that carries `finish_reason`.
            #expect(text.components(separatedBy: #"{"content":"t"#).count - 1 == 5)
            #expect(text.components(separatedBy: "data: {").count - 1 == 6)
            // Tokens come 60 ms apart: a buffering proxy would deliver them at once.
            #expect(arrivals.count >= 5)
            #expect(arrivals.last! - arrivals.first! >= .milliseconds(200))
            // The reservation was handed back when the stream ended.
            try await harness.waitForState("reservation released") { $0.router.ledger.requestCount == 0 }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aClientThatGoesAwayReleasesItsReservation() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m", tokenIntervalMilliseconds: 50)]) { harness in
            try await harness.register(0)
            var request = HTTPClientRequest(url: harness.url + "/v1/completions")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: #"{"model":"m","stream":true,"max_tokens":200,"prompt":"go"}"#))
            let reading = Task {
                let response = try await ServingHarness.client.execute(request, timeout: .seconds(10))
                for try await _ in response.body { break }
            }
            try await harness.waitForState("reservation taken") { $0.router.ledger.requestCount > 0 }
            _ = await reading.result
            try await harness.waitForState("reservation released after the client left", timeout: 15) { $0.router.ledger.requestCount == 0 }
            #expect(harness.engines[0].served.count == 1)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func prefillThenDecodeFollowsTheWorkerProtocol() async throws {
        try await ServingHarness.with(engines: [.init(id: "p", model: "m", role: "PREFILL"), .init(id: "d", model: "m", role: "DECODE")]) { harness in
            try await harness.register(0, id: "prefill", role: "PREFILL")
            try await harness.register(1, id: "decode", role: "DECODE")
            let answer = try await harness.post("/v1/chat/completions", #"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hello"}]}"#)
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.headers.first(name: "X-Fulcrum-Worker") == "decode")
            let prefill = try #require(harness.engines[0].served.first)
            #expect(prefill.role == "prefill" && prefill.maxTokens == 1 && !prefill.stream && prefill.decodeWorker == harness.engineAddresses[1])
            let decode = try #require(harness.engines[1].served.first)
            #expect(decode.role == "decode" && decode.maxTokens == 4 && decode.prefillWorker == harness.engineAddresses[0])
            try await harness.waitForState("both reservations released") { $0.router.ledger.requestCount == 0 }
        }
    }

    /// Issue 16, item 10: a prefill that failed other than by a refused connection (here it
    /// never answers) leaked its reservation and never reached the prefill worker's breaker.
    @Test(.timeLimit(.minutes(1)))
    func aPrefillThatTimesOutReleasesItsReservationAndFeedsTheBreaker() async throws {
        try await ServingHarness.with(
            engines: [.init(id: "p", model: "m", role: "PREFILL"), .init(id: "d", model: "m", role: "DECODE")],
            serving: {
                $0.upstreamTimeoutMilliseconds = 400
                $0.circuitFailures = 1
                $0.statusIntervalMilliseconds = 60_000
            }
        ) { harness in
            try await harness.register(0, id: "prefill", role: "PREFILL")
            try await harness.register(1, id: "decode", role: "DECODE")
            var stall = SimulatedEngine.Faults()
            stall.stall = true
            harness.engines[0].setFaults(stall)
            let answer = try await harness.post("/v1/chat/completions", #"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hello"}]}"#)
            #expect(answer.status == 504, "\(answer.status) \(answer.text)")
            #expect(answer.text.contains("prefill_failed"))
            try await harness.waitForState("the reservation released") { $0.router.ledger.requestCount == 0 }
            try await harness.waitForState("the prefill worker's circuit opened") { machine in
                machine.state.workers.first { $0.id == "prefill" }?.circuit == .open
            }
            harness.engines[0].setFaults(SimulatedEngine.Faults())
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aRefusedConnectionIsRetriedOnAnotherWorker() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], serving: { $0.statusIntervalMilliseconds = 60_000 }) { harness in
            try await harness.register(0, id: "alive")
            // A worker on a port nobody listens on (status polls are off, so it stays routable).
            let dead = try await harness.post("/v1/workers", #"{"id":"dead","model":"m","role":"PDFUSION","address":"127.0.0.1:1"}"#)
            #expect(dead.status == 200)
            _ = try await ServingHarness.raw("PUT", harness.url + "/admin/config/policies/m", body: #"{"strategies":{"PDFUSION":"round_robin"}}"#)
            for index in 0..<6 {
                let answer = try await harness.post("/v1/completions", #"{"model":"m","prompt":"p\#(index)","max_tokens":2}"#)
                #expect(answer.status == 200, "\(answer.text)")
                #expect(answer.headers.first(name: "X-Fulcrum-Worker") == "alive")
            }
            #expect(harness.engines[0].served.count == 6)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aStreamThatBreaksIsNeverRetriedElsewhere() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m"), .init(id: "b", model: "m")]) { harness in
            try await harness.register(0, id: "breaks")
            try await harness.register(1, id: "fine")
            var faults = SimulatedEngine.Faults()
            faults.abortAfterTokens = 3
            harness.engines[0].setFaults(faults)
            _ = try await harness.post("/admin/workers/fine/drain", "")
            var request = HTTPClientRequest(url: harness.url + "/v1/completions")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: #"{"model":"m","stream":true,"max_tokens":10,"prompt":"go"}"#))
            let response = try await ServingHarness.client.execute(request, timeout: .seconds(10))
            #expect(response.status.code == 200)
            var text = ""
            do {
                for try await chunk in response.body { text += String(buffer: chunk) }
            } catch {
                // The broken upstream ends the client's stream too.
            }
            // Up to the three events sent before the abort (the last can die with the connection).
            let events = text.components(separatedBy: "data: {").count - 1
            #expect((1...3).contains(events), "\(events) events")
            #expect(!text.contains("[DONE]"))
            #expect(harness.engines[0].served.count == 1 && harness.engines[1].served.isEmpty)
            try await harness.waitForState("released") { $0.router.ledger.requestCount == 0 }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func serverErrorsOpenTheCircuitAndTrafficMovesAway() async throws {
        try await ServingHarness.with(engines: [.init(id: "bad", model: "m"), .init(id: "good", model: "m")]) { harness in
            try await harness.register(0, id: "bad")
            try await harness.register(1, id: "good")
            var faults = SimulatedEngine.Faults()
            faults.errorRate = 1
            harness.engines[0].setFaults(faults)
            _ = try await ServingHarness.raw("PUT", harness.url + "/admin/config/policies/m", body: #"{"strategies":{"PDFUSION":"round_robin"}}"#)
            var errors = 0
            for index in 0..<20 {
                let answer = try await harness.post("/v1/completions", #"{"model":"m","prompt":"p\#(index)","max_tokens":1}"#)
                if answer.status == 500 { errors += 1 }
                if errors == 5 { break }
            }
            #expect(errors == 5)
            try await harness.waitForState("circuit open") { $0.state.worker(id: "bad")?.circuit == .open }
            for index in 0..<5 {
                let answer = try await harness.post("/v1/completions", #"{"model":"m","prompt":"q\#(index)","max_tokens":1}"#)
                #expect(answer.status == 200 && answer.headers.first(name: "X-Fulcrum-Worker") == "good")
            }
            // 4xx never trips a circuit: the good worker's stays closed after client errors.
            for _ in 0..<8 {
                _ = try await harness.post("/v1/release", #"{"release_token":"1.1.1","outcome":"client_error","worker_id":"good"}"#)
            }
            // After the open period a trial goes through; the engine recovered, so it closes.
            harness.engines[0].setFaults(SimulatedEngine.Faults())
            try await harness.waitForState("half-open") { $0.state.worker(id: "bad")?.circuit == .halfOpen }
            for index in 0..<4 { _ = try await harness.post("/v1/completions", #"{"model":"m","prompt":"t\#(index)","max_tokens":1}"#) }
            try await harness.waitForState("closed again") { $0.state.worker(id: "bad")?.circuit == .closed }
            #expect(await harness.node.withMachine { machine, _ in machine.state.worker(id: "good")?.circuit } == .closed)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func healthFollowsStatusPollsWithThresholds() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m"), .init(id: "b", model: "m")]) { harness in
            try await harness.register(0, labels: ["status": "vllm"])
            try await harness.register(1, labels: ["status": "sglang"])
            try await harness.waitForState("healthy") { machine in machine.state.workers.allSatisfy { $0.health == .healthy } }
            var faults = SimulatedEngine.Faults()
            faults.garbageStatus = true
            harness.engines[0].setFaults(faults)
            try await harness.waitForState("unhealthy on garbage") { $0.state.worker(id: "w0")?.health == .unhealthy }
            let routed = try await harness.post("/v1/route", #"{"model":"m"}"#)
            #expect(routed.decode(RouteResponse.self)?.targets.first?.workerId == "w1")
            faults = SimulatedEngine.Faults()
            faults.statusDelayMs = 2_000
            harness.engines[0].setFaults(faults)
            try await Task.sleep(for: .milliseconds(300))
            #expect(await harness.node.withMachine { machine, _ in machine.state.worker(id: "w0")?.health } == .unhealthy)
            harness.engines[0].setFaults(SimulatedEngine.Faults())
            try await harness.waitForState("healthy again") { $0.state.worker(id: "w0")?.health == .healthy }
            // Loads reached the log (coalesced), so routing sees them.
            try await harness.waitForState("load reported") { ($0.state.worker(id: "w1")?.load.reportedAt ?? 0) > 0 }
            let heartbeat = try await harness.post("/v1/workers/w0/heartbeat", #"{"resources":{"core_loads":[0.1,0.9],"memory_total_bytes":1000,"memory_used_bytes":10}}"#)
            #expect(heartbeat.status == 200, "\(heartbeat.text)")
            try await harness.waitForState("resources replicated") { $0.state.worker(id: "w0")?.resources.coreLoads == [0.1, 0.9] }
            let deleted = try await ServingHarness.raw("DELETE", harness.url + "/v1/workers/w1")
            #expect(deleted.status == 200)
            #expect(try await ServingHarness.raw("DELETE", harness.url + "/v1/workers/w1").status == 404)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func flexLBScheduleAnswersInItsOwnShape() async throws {
        try await ServingHarness.with(
            engines: [.init(id: "p", model: "m", role: "PREFILL"), .init(id: "d", model: "m", role: "DECODE")],
            serving: { $0.flexLBScheduleHoldMilliseconds = 300 }
        ) { harness in
            try await harness.register(0, id: "p", role: "PREFILL", labels: ["grpc_port": "9999"])
            try await harness.register(1, id: "d", role: "DECODE")
            let answer = try await harness.post("/rtp_llm/schedule", #"{"request_id":12345,"block_cache_keys":[-5,7,9],"seq_len":1500,"generate_timeout":1000,"request_time_ms":1700000000000}"#)
            #expect(answer.status == 200, "\(answer.text)")
            let scheduled = try #require(answer.decode(ScheduleResponse.self))
            #expect(scheduled.success && scheduled.code == 200)
            #expect(scheduled.realMasterHost == harness.url.replacingOccurrences(of: "http://", with: ""))
            let servers = scheduled.serverStatus
            #expect(servers.map(\.role) == ["PREFILL", "DECODE"])
            #expect(servers[0].serverIp == "127.0.0.1" && servers[0].grpcPort == 9999)
            #expect(servers[1].group == "")
            // Frontends POST `{}` and read FlexLB's field names (rtp_llm/server/host_service.py and
            // org.flexlb.dao.loadbalance.Response at alibaba/rtp-llm 4b8d39cd5).
            for method in ["POST", "GET"] {
                let info = try await ServingHarness.raw(method, harness.url + "/rtp_llm/master/info", body: method == "POST" ? "{}" : nil)
                #expect(info.status == 200)
                let object = try #require(try JSONSerialization.jsonObject(with: Data(info.text.utf8)) as? [String: Any], "\(info.text)")
                #expect(object["real_master_host"] as? String == harness.url.replacingOccurrences(of: "http://", with: ""))
                #expect(object["code"] as? Int == 200 && object["success"] as? Bool == true && object["queue_length"] as? Int == 0)
                #expect(object["ready"] as? Bool == true && object["is_master"] as? Bool == true && object["leader_id"] as? Int == 1)
                let summary = try #require(object["worker_summary"] as? [String: [String: Any]], "\(info.text)")
                #expect(summary["PREFILL"]?["discovered"] as? Int == 1 && summary["DECODE"]?["alive"] as? Int == 1)
                #expect(summary["PREFILL"]?["maxQueueTokens"] != nil)
            }
            try await Task.sleep(for: .milliseconds(400))
            _ = try await harness.post("/admin/workers/p/drain", "")
            let failed = try await harness.post("/rtp_llm/schedule", #"{"request_id":"abc","seq_len":10}"#)
            let refusal = try #require(failed.decode(ScheduleResponse.self))
            // FlexLB's HTTP-era failure shape: HTTP 500, its code in the body (8400 NO_AVAILABLE_WORKER).
            #expect(failed.status == 500 && !refusal.success && refusal.code == 8400)
            #expect(refusal.errorMessage.contains("draining"))
            // Frontends never release a schedule: its reservation ended after flexlb_schedule_hold_ms
            // (swept by the next decision, this failed one).
            try await harness.waitForState("the schedule's hold ended", timeout: 5) { $0.router.ledger.requestCount == 0 }
        }
    }

    /// Frontends send `engine_service`; with two models served, the replicated alias decides.
    @Test(.timeLimit(.minutes(1)))
    func modelAliasesAreReplicatedConfigurationAndRouteEngineService() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m"), .init(id: "b", model: "n")]) { harness in
            try await harness.register(0, id: "a", model: "m")
            try await harness.register(1, id: "b", model: "n")
            let ambiguous = try await harness.post("/rtp_llm/schedule", #"{"request_id":1,"model":"engine_service","seq_len":10}"#)
            #expect(ambiguous.status == 400 && ambiguous.errorField == "model", "\(ambiguous.text)")
            let set = try await ServingHarness.raw("PUT", harness.url + "/admin/config/aliases/engine_service", body: #"{"model":"n"}"#)
            #expect(set.status == 200, "\(set.text)")
            let scheduled = try #require(try await harness.post("/rtp_llm/schedule", #"{"request_id":2,"model":"engine_service","seq_len":10}"#).decode(ScheduleResponse.self))
            #expect(scheduled.code == 200 && scheduled.serverStatus.first?.httpPort == Int(harness.engineAddresses[1].split(separator: ":")[1]))
            // Any entry point: /v1/route takes the alias too.
            let alias = try await ServingHarness.raw("PUT", harness.url + "/admin/config/aliases/gpt-4o", body: #"{"model":"m"}"#)
            #expect(alias.status == 200)
            let routed = try #require(try await harness.post("/v1/route", #"{"model":"gpt-4o"}"#).decode(RouteResponse.self))
            #expect(routed.model == "m" && routed.targets.first?.workerId == "a")
            let config = try #require(try await harness.get("/admin/config").decode(BalancerConfiguration.self))
            #expect(config.aliases == ["engine_service": "n", "gpt-4o": "m"])
            let selfAlias = try await ServingHarness.raw("PUT", harness.url + "/admin/config/aliases/m", body: #"{"model":"m"}"#)
            #expect(selfAlias.status == 400 && selfAlias.errorField == "model", "\(selfAlias.text)")
            let removed = try await ServingHarness.raw("DELETE", harness.url + "/admin/config/aliases/gpt-4o")
            #expect(removed.status == 200)
            #expect(try await harness.post("/v1/route", #"{"model":"gpt-4o"}"#).status == 404)
        }
    }
}
