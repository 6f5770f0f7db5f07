import Foundation
import Hummingbird
import HummingbirdTesting
import Simulator
import Testing

/// The modelled engine behind its HTTP API.
@Suite struct SimulatedEngineTests {
    static func usage(_ text: String) -> (prompt: Int, cached: Int)? {
        for line in text.split(separator: "\n") where line.contains("\"usage\"") {
            let json = line.hasPrefix("data: ") ? String(line.dropFirst(6)) : String(line)
            guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                  let usage = object["usage"] as? [String: Any] else { continue }
            let cached = (usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int ?? 0
            return (usage["prompt_tokens"] as? Int ?? 0, cached)
        }
        return nil
    }

    @Test(.timeLimit(.minutes(1)))
    func repeatedPrefixesAreServedFromCacheAndReported() async throws {
        var profile = EngineProfile.h100_8b
        profile.blockSize = 512
        let engine = SimulatedEngine(options: .init(id: "e", profile: profile))
        try await Application(router: engine.makeRouter()).test(.router) { client in
            let hashes = (1...16).map(String.init).joined(separator: ",")
            let body = #"{"model":"m","prompt":"x","max_tokens":4,"fulcrum_block_hashes":[\#(hashes)],"fulcrum_input_tokens":8192}"#
            let started = ContinuousClock.now
            var first = ""
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: body)) { response in
                #expect(response.status == .ok)
                first = String(buffer: response.body)
            }
            let elapsed = ContinuousClock.now - started
            #expect(Self.usage(first)?.prompt == 8_192 && Self.usage(first)?.cached == 0)
            #expect(elapsed >= .milliseconds(170), "8k uncached tokens take about 0.2 s, took \(elapsed)")
            // The same prefix again: all but the last token come from the cache, and it is fast.
            let again = ContinuousClock.now
            var second = ""
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: body)) { response in
                second = String(buffer: response.body)
            }
            #expect(Self.usage(second)?.cached == 8_191)
            #expect(ContinuousClock.now - again < elapsed)
            // Text prompts: equal prefixes give equal blocks (here 2 of 3 cached).
            let text = String(repeating: "a", count: 512 * 4 * 2)
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: #"{"model":"m","prompt":"\#(text)","max_tokens":1}"#)) { _ in }
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: #"{"model":"m","prompt":"\#(text + String(repeating: "b", count: 2_048))","max_tokens":1,"stream":true,"stream_options":{"include_usage":true}}"#)) { response in
                let text = String(buffer: response.body)
                #expect(text.hasSuffix("data: [DONE]\n\n"))
                #expect(Self.usage(text)?.cached == 1_024, "\(text.suffix(300))")
            }
            try await client.execute(uri: "/status", method: .get) { response in
                let status = String(buffer: response.body)
                #expect(status.contains(#""kv_blocks_total":781"#), "\(status)")
            }
            try await client.execute(uri: "/reset", method: .post) { _ in }
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: body)) { response in
                #expect(Self.usage(String(buffer: response.body))?.cached == 0, "a reset engine starts cold")
            }
            // A prompt larger than the whole KV cache is refused at once.
            let huge = (1...800).map(String.init).joined(separator: ",")
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: #"{"model":"m","prompt":"x","fulcrum_block_hashes":[\#(huge)]}"#)) { response in
                #expect(response.status == .badRequest)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aCrashedEngineRefusesEverythingThenComesBackCold() async throws {
        var profile = EngineProfile.h100_8b
        profile.blockSize = 512
        let engine = SimulatedEngine(options: .init(id: "e", profile: profile))
        try await Application(router: engine.makeRouter()).test(.router) { client in
            let body = #"{"model":"m","prompt":"x","max_tokens":1,"fulcrum_block_hashes":[1,2,3]}"#
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: body)) { #expect($0.status == .ok) }
            // Long enough for the two checks on a loaded machine (the suite runs in parallel).
            try await client.execute(uri: "/fault", method: .post, body: ByteBuffer(string: #"{"crash_for_ms":2000}"#)) { #expect($0.status == .ok) }
            try await client.execute(uri: "/health", method: .get) { #expect($0.status == .serviceUnavailable) }
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: body)) { #expect($0.status == .serviceUnavailable) }
            var healthy = false
            for _ in 0..<100 where !healthy {
                try await Task.sleep(for: .milliseconds(50))
                try await client.execute(uri: "/health", method: .get) { healthy = $0.status == .ok }
            }
            #expect(healthy, "the engine comes back after its crash")
            try await client.execute(uri: "/v1/completions", method: .post, body: ByteBuffer(string: body)) { response in
                #expect(Self.usage(String(buffer: response.body))?.cached == 0, "a restarted engine has lost its cache")
            }
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(String(buffer: response.body).contains("vllm:prefix_cache_queries_total"))
            }
        }
    }

    @Test func textBlocksFollowTheDocumentedScheme() {
        let (blocks, tokens) = PromptBlocks.blocks(text: String(repeating: "x", count: 100), tokensPerBlock: 8)
        #expect(tokens == 25 && blocks.count == 4)
        let (longer, _) = PromptBlocks.blocks(text: String(repeating: "x", count: 96) + "yyyy", tokensPerBlock: 8)
        #expect(Array(longer.prefix(3)) == Array(blocks.prefix(3)) && longer[3] != blocks[3])
        // Replayed trace text: equal id prefixes give equal blocks, exactly one per id.
        let a = PromptBlocks.text(forBlockIDs: [1, 2, 3], inputTokens: 1_300, tokensPerBlock: 512)
        let b = PromptBlocks.text(forBlockIDs: [1, 2, 4], inputTokens: 1_300, tokensPerBlock: 512)
        #expect(a.utf8.count == 5_200)
        let blocksA = PromptBlocks.blocks(text: a, tokensPerBlock: 512).blocks
        let blocksB = PromptBlocks.blocks(text: b, tokensPerBlock: 512).blocks
        #expect(blocksA.count == 3 && Array(blocksA.prefix(2)) == Array(blocksB.prefix(2)) && blocksA[2] != blocksB[2])
    }
}
