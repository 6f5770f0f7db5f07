import Balancer
import Foundation
@testable import Simulator
import Testing

/// The generated workload families, the cache bounds and the oracles of `fulcrum-sim evaluate`.
@Suite struct WorkloadTests {
    static let traces = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/traces").path
    static var haveAzure: Bool { FileManager.default.fileExists(atPath: traces + "/azure-llm-2023/AzureLLMInferenceTrace_conv.csv") }

    static let sessionFamilies: [WorkloadFamily] = [.multiTurn, .sharedPrefix, .toolAgent, .mix]

    @Test func aSeedGivesTheSameWorkloadAndAnotherSeedAnotherOne() throws {
        for family in Self.sessionFamilies {
            let first = try Workload(family: family, seed: 3, load: 1, durationSeconds: 60).generate()
            let again = try Workload(family: family, seed: 3, load: 1, durationSeconds: 60).generate()
            let other = try Workload(family: family, seed: 4, load: 1, durationSeconds: 60).generate()
            #expect(first == again, "\(family)")
            #expect(first != other, "\(family)")
            #expect(first.map(\.timestampMilliseconds) == first.map(\.timestampMilliseconds).sorted(), "\(family) not in arrival order")
            #expect(first.allSatisfy { (0..<60_000).contains($0.timestampMilliseconds) }, "\(family) outside the duration")
            #expect(first.allSatisfy { $0.blockIDs.count == ($0.inputTokens + 63) / 64 }, "\(family): one block id per 64 tokens")
        }
    }

    /// The load unit: 1× offers 7,500 prompt tokens per second per engine, whatever the family.
    @Test func everyFamilyOffersTheLoadItIsAskedFor() throws {
        let families = Self.sessionFamilies + (Self.haveAzure ? [.azure, .azureCode] : [])
        for family in families {
            for load in [1.0, 3.0] {
                let workload = Workload(family: family, seed: 1, load: load, durationSeconds: 600, tracesDirectory: Self.traces)
                let requests = try workload.generate()
                let offered = Double(requests.reduce(0) { $0 + $1.inputTokens }) / 600
                let ratio = offered / workload.promptTokensPerSecond
                #expect((0.8...1.2).contains(ratio), "\(workload): offers \(Int(offered)) prompt tokens/s, \(ratio)× what it should")
            }
        }
    }

    @Test func promptsSharingSegmentsShareExactlyTheirFullBlocks() {
        let system = Segment(id: 1, tokens: 150)
        let a = Segment.blocks([system, Segment(id: 2, tokens: 100)], tokensPerBlock: 64)
        let b = Segment.blocks([system, Segment(id: 3, tokens: 100)], tokensPerBlock: 64)
        // 150 shared tokens: two full blocks in common; the third mixes 22 shared tokens with others.
        #expect(a.count == 4 && b.count == 4)
        #expect(Array(a.prefix(2)) == Array(b.prefix(2)))
        #expect(a[2] != b[2])
        // A partial last block is not the full block a longer prompt has in its place.
        let short = Segment.blocks([Segment(id: 9, tokens: 100)], tokensPerBlock: 64)
        let long = Segment.blocks([Segment(id: 9, tokens: 128)], tokensPerBlock: 64)
        #expect(short[0] == long[0] && short[1] != long[1])
        // A prefix of the segments names the same blocks as far as it covers them.
        let whole = [Segment(id: 5, tokens: 300), Segment(id: 6, tokens: 300)]
        let cut = Segment.prefix(whole, tokens: 400)
        #expect(cut == [Segment(id: 5, tokens: 300), Segment(id: 6, tokens: 100)])
        #expect(Array(Segment.blocks(cut, tokensPerBlock: 64).prefix(6)) == Array(Segment.blocks(whole, tokensPerBlock: 64).prefix(6)))
    }

    /// A conversation's next turn carries its previous prompt and answer: in multi-turn traffic
    /// most requests find an earlier request's full blocks as their own prefix.
    @Test func multiTurnRequestsExtendEarlierOnes() throws {
        let requests = try Workload(family: .multiTurn, seed: 1, load: 1, durationSeconds: 300).generate()
        var seen = Set<UInt64>()
        var extending = 0
        for request in requests {
            if request.blockIDs.count > 20, seen.contains(request.blockIDs[20]) { extending += 1 }
            seen.formUnion(request.blockIDs)
        }
        #expect(Double(extending) / Double(requests.count) > 0.5, "\(extending) of \(requests.count)")
    }

    @Test func zipfFavoursTheFirstRanks() {
        let zipf = Zipf(count: 100, exponent: 1.2)
        var random = SeededGenerator(seed: 1)
        var counts = [Int](repeating: 0, count: 100)
        for _ in 0..<20_000 { counts[zipf.sample(random: &random)] += 1 }
        #expect(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99])
        #expect((0.25...0.35).contains(Double(counts[0]) / 20_000), "rank 0 drew \(counts[0])")
    }

    /// Belady on a pooled cache, by hand: blocks 1 2 3 1 2 3 through two slots. On the third
    /// access the block used furthest ahead (3) is dropped, so 1 and 2 hit; LRU would hit none.
    @Test func pooledOptimalIsBeladyByHand() {
        let trace = [1, 2, 3, 1, 2, 3].enumerated().map { index, block in
            TraceRequest(timestampMilliseconds: Double(index), inputTokens: 10, outputTokens: 1, blockIDs: [UInt64(block)])
        }
        // A hit is at most all but the last token: 9 of 10.
        #expect(CacheBounds.pooledOptimal(trace, tokensPerBlock: 10, capacityBlocks: 2) == 18.0 / 60)
        #expect(CacheBounds.infiniteCache(trace, tokensPerBlock: 10) == 27.0 / 60)
        #expect(CacheBounds.pooledOptimal(trace, tokensPerBlock: 10, capacityBlocks: 3) == 27.0 / 60)
    }

    /// Nothing beats the bounds: every strategy and oracle stays at or below the pooled optimum,
    /// which stays at or below the infinite cache.
    @Test func strategiesAndOraclesStayWithinTheBounds() throws {
        var profile = EngineProfile.h100_8b
        profile.kvCapacityTokens = 40_000  // pressure: a tenth of an H100's
        let evaluation = RoutingEvaluation(profile: profile, engines: 4, strategies: [.cacheAware, .shortestTTFT, .leastLoad])
        let workload = Workload(family: .multiTurn, seed: 2, load: 0.5, durationSeconds: 40, engines: 4)
        let row = try evaluation.evaluate(workload)
        #expect(row.requests > 100)
        #expect(row.pooledOptimal <= row.infiniteCache + 1e-9)
        let trace = try workload.generate()
        let small = CacheBounds.pooledOptimal(trace, tokensPerBlock: 64, capacityBlocks: 200)
        #expect(small < row.pooledOptimal, "12,800 tokens cannot hold the working set: \(small)")
        for summary in row.strategies + [row.oracle] {
            #expect(summary.errors == 0, "\(summary.name)")
            #expect(summary.hitRatio <= row.pooledOptimal + 1e-9, "\(summary.name) \(summary.hitRatio) above the bound \(row.pooledOptimal)")
        }
        // Cache-blind placement reaches much less than the oracle.
        let leastLoad = try #require(row.strategies.last)
        #expect(row.fractionOfOracle(leastLoad) < 0.7, "least_load at \(row.fractionOfOracle(leastLoad)) of the oracle")
    }

    @Test func theOraclesReadTheEnginesRealCaches() throws {
        // Two requests with the same 20-block prefix, a second apart: the second goes where the first is.
        var profile = EngineProfile.h100_8b
        profile.blockSize = 64
        let prefix = (1...20).map { UInt64($0) }
        let trace = [
            TraceRequest(timestampMilliseconds: 0, inputTokens: 21 * 64, outputTokens: 4, blockIDs: prefix + [100]),
            TraceRequest(timestampMilliseconds: 1_000, inputTokens: 21 * 64, outputTokens: 4, blockIDs: prefix + [200]),
        ]
        for oracle in TimedReplay.Oracle.allCases {
            let result = TimedReplay(workers: 4, profile: profile).run(trace, oracle: oracle)
            #expect(result.records[0].worker == result.records[1].worker, "\(oracle)")
            #expect(result.records[1].cachedTokens == 20 * 64, "\(oracle)")
        }
    }

    /// The default strategy's floor of issue 21, as a regression guard on short runs: on every
    /// generated family (seed 1, 2×, 30 s of arrivals) cache-aware with the default settings
    /// reaches at least 90 % of the oracle's hit ratio. (The full evaluation is `fulcrum-sim
    /// evaluate`; Docs/benchmarks.md.)
    @Test func theDefaultStrategyReachesNinetyPercentOfTheOracleOnEveryFamily() async throws {
        let families = Self.sessionFamilies + (Self.haveAzure ? [.azure, .azureCode] : [])
        let evaluation = RoutingEvaluation(strategies: [ModelPolicy.defaultStrategy(for: .pdfusion)])
        let workloads = families.map { Workload(family: $0, seed: 1, load: 2, durationSeconds: 30, tracesDirectory: Self.traces) }
        for row in try await evaluation.evaluate(workloads, parallelism: 2) {
            let fraction = row.fractionOfOracle(row.strategies[0])
            #expect(fraction >= 0.9, "\(row.workload): \(row.strategies[0].name) at \(fraction) of the oracle (\(row.strategies[0].hitRatio) against \(row.oracle.hitRatio))")
        }
    }
}
