import AsyncHTTPClient
import Balancer
import Foundation
import KVEvents
import NIOCore
@testable import Serving
import Simulator
import NetworkTestSupport
import Testing

/// The prefix index follows what engines report they hold: a modelled engine publishes its
/// cache's changes over ZeroMQ (vLLM's maps, SGLang's arrays), and the node subscribes.
/// Requests go to the engine directly, around Fulcrum, so only the events can tell the index.
@Suite(.serialized) struct KVEventIndexTests {
    static func profile() -> EngineProfile {
        var profile = EngineProfile.h100_8b
        profile.blockSize = 16
        profile.kvCapacityTokens = 16 * 40
        return profile
    }

    static func direct(_ address: String, tokens: [UInt32]) async throws {
        let answer = try await ServingHarness.raw(
            "POST", "http://\(address)/v1/completions", body: #"{"model":"m","max_tokens":1,"prompt":[\#(tokens.map(String.init).joined(separator: ","))]}"#
        )
        guard answer.status == 200 else { throw HarnessError("the engine answered \(answer.status): \(answer.text)") }
    }

    @Test(.timeLimit(.minutes(1)), arguments: [EngineDialect.vllm, .sglang])
    func theIndexHoldsWhatTheEngineReports(dialect: EngineDialect) async throws {
        let publisher = try KVEventPublisher(endpoint: "tcp://127.0.0.1:*", replayEndpoint: "tcp://127.0.0.1:*", encoding: dialect.kvEventEncoding)
        defer { publisher.stop() }
        try await ServingHarness.with(
            engines: [.init(id: "e", model: "m", profile: Self.profile(), dialect: dialect)], kvEvents: [0: publisher]
        ) { harness in
            let registered = try await harness.post("/v1/workers", #"""
                {"id":"w","model":"m","role":"PDFUSION","address":"\#(harness.engineAddresses[0])","engine":"\#(dialect.rawValue)",
                 "kv_events":{"endpoint":"\#(publisher.endpoint)","replay_endpoint":"\#(publisher.replayEndpoint!)"}}
                """#)
            #expect(registered.status == 200, "\(registered.text)")
            let hasher = BlockHasher(tokensPerBlock: 16)
            // Four full blocks and a partial one: the engine caches (and reports) the four.
            let first: [UInt32] = Array(1...72)
            let expected = Array(hasher.blocks(tokens: first, model: "m"))
            #expect(expected.count == 4)
            // The subscription starts with a replay from 0; give it a moment to connect.
            try await Task.sleep(for: .milliseconds(300))
            try await Self.direct(harness.engineAddresses[0], tokens: first)
            try await harness.waitForState("the stored blocks reach the index") { machine in
                Set(machine.state.cachedBlocks(workerID: "w")).isSuperset(of: expected)
            }
            // A lost live batch is replayed: the next batch shows the gap.
            publisher.dropLive(1)
            let second: [UInt32] = Array(1_001...1_032)
            try await Self.direct(harness.engineAddresses[0], tokens: second)
            let third: [UInt32] = Array(2_001...2_032)
            try await Self.direct(harness.engineAddresses[0], tokens: third)
            let later = hasher.blocks(tokens: second, model: "m") + hasher.blocks(tokens: third, model: "m")
            try await harness.waitForState("the dropped batch came back through the replay socket") { machine in
                Set(machine.state.cachedBlocks(workerID: "w")).isSuperset(of: later)
            }
            // Filling the cache with other prompts evicts the first: the index drops it too.
            for round in 0..<4 {
                try await Self.direct(harness.engineAddresses[0], tokens: (0..<160).map { UInt32(10_000 * (round + 3) + $0) })
            }
            try await harness.waitForState("evicted blocks leave the index") { machine in
                Set(machine.state.cachedBlocks(workerID: "w")).isDisjoint(with: expected)
            }
            // A reset engine (AllBlocksCleared) holds nothing.
            _ = try await ServingHarness.raw("POST", "http://\(harness.engineAddresses[0])/reset")
            try await harness.waitForState("a cleared engine holds nothing") { $0.state.cachedBlocks(workerID: "w").isEmpty }
            // The gap was seen and filled from the replay socket (not from later live batches).
            var metrics = ""
            for _ in 0..<40 {
                metrics = try await harness.get("/metrics").text
                // Every reason's series exists from the start: wait for the replay's answer too.
                if metrics.contains(#"fulcrum_kv_event_frames_total{reason="gaps"} 1"#),
                   !metrics.contains(#"fulcrum_kv_event_frames_total{reason="replayed"} 0"#) { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(metrics.contains(#"fulcrum_kv_event_frames_total{reason="gaps"} 1"#), "\(metrics.split(separator: "\n").filter { $0.contains("kv_event") })")
            #expect(!metrics.contains(#"fulcrum_kv_event_frames_total{reason="replayed"} 0"#))
        }
    }

    /// Text prompts routed through the model's tokenizer (vLLM's `/tokenize`) land on the blocks
    /// the engine reported: the prompt went to the engine directly, so only its events could
    /// have told the index; the next turn of a conversation routes on its cached prefix.
    @Test(.timeLimit(.minutes(1)))
    func textPromptsMatchReportedBlocksThroughTheTokenizer() async throws {
        let publisher = try KVEventPublisher(endpoint: "tcp://127.0.0.1:*", replayEndpoint: nil, encoding: .maps)
        defer { publisher.stop() }
        let port = freePorts(1)[0]
        try await ServingHarness.with(
            engines: [.init(id: "e", model: "m", profile: Self.profile(), dialect: .vllm)],
            serving: { $0.tokenizerURLs = ["m": "http://127.0.0.1:\(port)/tokenize"] }, kvEvents: [0: publisher], enginePorts: [0: port]
        ) { harness in
            let registered = try await harness.post("/v1/workers", #"{"id":"w","model":"m","role":"PDFUSION","address":"\#(harness.engineAddresses[0])","engine":"vllm","kv_events":{"endpoint":"\#(publisher.endpoint)"}}"#)
            #expect(registered.status == 200, "\(registered.text)")
            try await Task.sleep(for: .milliseconds(300))
            let text = String(repeating: "abcd", count: 16 * 5)
            let direct = try await ServingHarness.raw("POST", "http://\(harness.engineAddresses[0])/v1/completions", body: #"{"model":"m","max_tokens":1,"prompt":"\#(text)"}"#)
            #expect(direct.status == 200)
            let expected = BlockHasher(tokensPerBlock: 16).blocks(tokens: PromptBlocks.tokens(text: text), model: "m")
            try await harness.waitForState("the engine's blocks reach the index") { Set($0.state.cachedBlocks(workerID: "w")).isSuperset(of: expected) }
            let routed = try await harness.post("/v1/completions", #"{"model":"m","max_tokens":1,"prompt":"\#(text)xyz"}"#)
            #expect(routed.status == 200, "\(routed.text)")
            #expect(routed.headers.first(name: "X-Fulcrum-Matched-Blocks") == "5", "\(routed.headers)")
            // A conversation: the second turn routes on the first turn's tokens, without waiting.
            let first = #"{"role":"user","content":"hello there"}"#
            _ = try await harness.post("/v1/chat/completions", #"{"model":"m","max_tokens":1,"messages":[\#(first)]}"#)
            _ = try await harness.post("/v1/chat/completions", #"{"model":"m","max_tokens":1,"messages":[\#(first),{"role":"assistant","content":"t0"},{"role":"user","content":"more"}]}"#)
            let metrics = try await harness.get("/metrics").text
            #expect(metrics.contains(#"fulcrum_tokenizer_requests_total{outcome="prefix"} 1"#), "\(metrics.split(separator: "\n").filter { $0.contains("tokenizer") })")
        }
    }

    @Test func registrationChecksTheEndpoints() async throws {
        try await ServingHarness.with(engines: [.init(id: "e", model: "m")]) { harness in
            for (endpoint, field) in [("http://x:1", "kv_events.endpoint"), ("tcp://*:5557", "kv_events.endpoint"), ("tcp://host", "kv_events.endpoint")] {
                let answer = try await harness.post("/v1/workers", #"{"id":"w","model":"m","role":"PDFUSION","address":"\#(harness.engineAddresses[0])","kv_events":{"endpoint":"\#(endpoint)"}}"#)
                #expect(answer.status == 400 && answer.errorField == field, "\(endpoint): \(answer.text)")
            }
            let replay = try await harness.post("/v1/workers", #"{"id":"w","model":"m","role":"PDFUSION","address":"\#(harness.engineAddresses[0])","kv_events":{"endpoint":"tcp://127.0.0.1:5557","replay_endpoint":"ipc:///x"}}"#)
            #expect(replay.status == 400 && replay.errorField == "kv_events.replay_endpoint")
        }
    }
}
