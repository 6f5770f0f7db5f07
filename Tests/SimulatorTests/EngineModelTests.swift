import Simulator
import Testing

/// The simulated engine against the sanity figures of `../shared/traces/README.md` §5, and its
/// cache behaviour.
@Suite struct EngineModelTests {
    static func request(_ id: UInt64, blocks: [UInt64], input: Int, output: Int = 1, at arrival: Double = 0) -> EngineModel.Request {
        EngineModel.Request(id: id, blocks: blocks, inputTokens: input, outputTokens: output, arrival: arrival)
    }

    static func ttft(_ events: [EngineModel.Event], _ id: UInt64) -> Double? {
        for case let .firstToken(eventID, time, _) in events where eventID == id { return time }
        return nil
    }

    @Test func anIdleEnginePrefillsOneThousandTokensInAboutThirtyMilliseconds() throws {
        var engine = EngineModel(profile: .h100_8b)
        engine.submit(Self.request(1, blocks: Array(1...64), input: 1_024))
        let ttft = try #require(Self.ttft(engine.run(), 1))
        #expect((0.025...0.035).contains(ttft), "TTFT \(ttft * 1000) ms")
    }

    @Test func eightThousandUncachedTokensTakeAboutTwoHundredMilliseconds() throws {
        var engine = EngineModel(profile: .h100_8b)
        engine.submit(Self.request(1, blocks: Array(1...512), input: 8_192))
        let ttft = try #require(Self.ttft(engine.run(), 1))
        #expect((0.170...0.250).contains(ttft), "TTFT \(ttft * 1000) ms")
    }

    @Test func theSamePromptCachedButItsLastBlockIsFast() throws {
        var profile = EngineProfile.h100_8b
        profile.blockSize = 512
        var engine = EngineModel(profile: profile)
        engine.submit(Self.request(1, blocks: Array(1...16), input: 8_192))
        _ = engine.run()
        let start = engine.now
        // 15 full blocks cached, the last (partial, 256 tokens) block new.
        engine.submit(Self.request(2, blocks: Array(1...15) + [99], input: 7_936, at: start))
        let events = engine.run()
        let ttft = try #require(Self.ttft(events, 2)) - start
        #expect((0.010...0.020).contains(ttft), "TTFT \(ttft * 1000) ms")
        #expect(events.contains(.firstToken(id: 2, time: start + ttft, cachedTokens: 7_680)))
    }

    @Test func aDecodeStepGrowsFromAboutSixToAboutThirtyMillisecondsAsTheKVPoolFills() throws {
        var engine = EngineModel(profile: .h100_8b)
        engine.submit(Self.request(1, blocks: [1], input: 1, output: 5))
        _ = engine.step()
        _ = engine.step()
        // README: ≈5–6 ms; this model's empty step is t_lin(1) + 1 ms overhead = 6.6 ms.
        #expect((0.005...0.007).contains(engine.lastIterationSeconds), "empty step \(engine.lastIterationSeconds * 1000) ms")

        var full = EngineModel(profile: .h100_8b)
        for id in 0..<256 {
            let base = UInt64(id) * 1_000
            // 93 prompt + 4 output blocks each: 97 % of the pool; every prompt is prefilled
            // before the first sequence has generated its 64 tokens.
            full.submit(Self.request(UInt64(id), blocks: Array(base..<(base + 93)), input: 1_480, output: 64))
        }
        var fullStep: Double?
        for _ in 0..<200 where fullStep == nil {
            let events = full.step()
            let tokens = events.filter { if case .token = $0 { true } else { false } }.count
            if tokens == 256 { fullStep = full.lastIterationSeconds }
        }
        let step = try #require(fullStep)
        #expect(full.kvBlocksUsed * 100 >= full.kvBlocksTotal * 95, "KV pool \(full.kvBlocksUsed) of \(full.kvBlocksTotal)")
        #expect((0.030...0.035).contains(step), "full step \(step * 1000) ms")
    }

    @Test func prefixesAreReusedUntilEvictedLeastRecentlyUsedFirst() {
        var profile = EngineProfile.h100_8b
        profile.kvCapacityTokens = 16 * 12
        var engine = EngineModel(profile: profile)
        engine.submit(Self.request(1, blocks: [1, 2, 3], input: 48))
        _ = engine.run()
        #expect(engine.cachedPrefix([1, 2, 3, 4]) == 3)
        engine.submit(Self.request(2, blocks: [1, 2, 3, 4], input: 64, at: engine.now))
        let reused = engine.run()
        #expect(reused.contains { if case .firstToken(2, _, 48) = $0 { true } else { false } })
        // 12 blocks: request 3 (6 prompt + 1 output) fits beside the 4 cached ones; request 4
        // then needs 7 with 2 free, and the least recently used go first: 1, 2, 3, 4, 10.
        engine.submit(Self.request(3, blocks: Array(10...15), input: 96, at: engine.now))
        _ = engine.run()
        #expect(engine.cachedPrefix([1, 2, 3, 4]) == 4)
        engine.submit(Self.request(4, blocks: Array(20...25), input: 96, at: engine.now))
        _ = engine.run()
        #expect(engine.cachedPrefix([1, 2, 3, 4]) == 0)
        #expect(engine.kvBlocksUsed <= engine.kvBlocksTotal)
    }

    @Test func requestsQueueForKVAndOversizedOnesAreRejected() {
        var profile = EngineProfile.h100_8b
        profile.kvCapacityTokens = 16 * 8
        var engine = EngineModel(profile: profile)
        engine.submit(Self.request(1, blocks: Array(1...5), input: 80, output: 16))
        engine.submit(Self.request(2, blocks: Array(11...15), input: 80, output: 16))
        engine.submit(Self.request(3, blocks: Array(21...30), input: 160, output: 1))
        _ = engine.step()
        #expect(engine.runningRequests == 1 && engine.waitingRequests == 2, "the second waits for KV")
        let events = engine.run()
        #expect(events.contains(.rejected(id: 3, reason: "needs 11 KV blocks, the engine has 8")))
        #expect(events.contains { if case .finished(2, _) = $0 { true } else { false } })
        #expect(engine.isIdle)
    }
}
