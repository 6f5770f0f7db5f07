import Balancer
import Foundation
import Simulator
import Testing

/// The trace through the router and the engines' timing model in virtual time.
@Suite struct TimedReplayTests {
    static let profile: EngineProfile = {
        var profile = EngineProfile.h100_8b
        profile.blockSize = 512
        return profile
    }()

    @Test func aLoneRequestTakesTheEnginesOwnTime() throws {
        let trace = [TraceRequest(timestampMilliseconds: 0, inputTokens: 1_000, outputTokens: 10, blockIDs: [1, 2])]
        let result = TimedReplay(workers: 2, profile: EngineProfile.h100_8b, speed: 1).run(trace, strategy: .roundRobin)
        var engine = EngineModel(profile: .h100_8b)
        engine.submit(EngineModel.Request(id: 1, blocks: [1, 2], inputTokens: 1_000, outputTokens: 10, arrival: 0))
        let events = engine.run()
        guard case .firstToken(_, let firstToken, _) = events.first(where: { if case .firstToken = $0 { true } else { false } }),
            case .finished(_, let finished) = events.last
        else {
            Issue.record("no first token or end: \(events)")
            return
        }
        let record = try #require(result.records.first)
        #expect(record.ttft == firstToken)
        #expect(record.endToEnd == finished)
        #expect(result.summary.completed == 1 && result.summary.errors == 0)
    }

    @Test func theSameInputsGiveTheSameFigures() {
        let trace = ReplayTests.conversations(count: 48, turns: 6)
        let replay = TimedReplay(workers: 4, profile: Self.profile, speed: 20)
        for strategy in [StrategyKind.random, .cacheAware, .shortestTTFT] {
            #expect(replay.run(trace, strategy: strategy).records == replay.run(trace, strategy: strategy).records)
        }
    }

    @Test func cacheAwareStrategiesReuseWhatTheEnginesCached() {
        let trace = ReplayTests.conversations(count: 48, turns: 8)
        // Caches of 120 blocks: a quarter of what the conversations grow to, so where a request
        // goes decides whether its prefix is still there.
        var profile = Self.profile
        profile.kvCapacityTokens = 120 * profile.blockSize
        let replay = TimedReplay(workers: 4, profile: profile, speed: 20)
        let roundRobin = replay.run(trace, strategy: .roundRobin).summary
        for strategy in [StrategyKind.cacheAware, .shortestTTFT] {
            let summary = replay.run(trace, strategy: strategy).summary
            #expect(summary.completed == trace.count && summary.errors == 0)
            #expect(summary.hitRatio > 2 * roundRobin.hitRatio, "\(strategy.name) \(summary.hitRatio), round robin \(roundRobin.hitRatio)")
            #expect(summary.ttftMean < roundRobin.ttftMean, "\(strategy.name) \(summary.ttftMean) s, round robin \(roundRobin.ttftMean) s")
        }
    }

    @Test func noStrategyHerdsWhenEveryRequestSharesItsFirstBlock() {
        let trace = ReplayTests.conversations(count: 64, turns: 6, sharedFirst: true)
        let replay = TimedReplay(workers: 8, profile: Self.profile, speed: 20)
        for strategy in [StrategyKind.roundRobin, .random, .leastLoad, .powerOfTwo, .consistentHash, .cacheAware, .shortestTTFT, .kvPressure] {
            let summary = replay.run(trace, strategy: strategy).summary
            #expect(summary.maxOverMeanRequestsPerWorker <= 1.5, "\(strategy.name) sends \(summary.maxOverMeanRequestsPerWorker)× the mean to one worker")
        }
    }

    @Test func evictionReportsKeepTheRoutersIndexToWhatEnginesHold() {
        let trace = ReplayTests.conversations(count: 64, turns: 8)
        var replay = TimedReplay(workers: 4, profile: Self.profile, speed: 20)
        // An index that believes far more than the engines hold, corrected by their reports.
        replay.settings.prefixBlocksPerWorker = 1_000_000
        replay.reportsEvictions = true
        let summary = replay.run(trace, strategy: .cacheAware).summary
        #expect(summary.completed == trace.count && summary.hitRatio > 0)
    }

    /// The figures `Docs/simulator.md` quotes: at 3× the fleet keeps up, and shortest-TTFT with
    /// its cache affinity keeps the cache-aware hit ratio at a fraction of its tail.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: ReplayTests.mooncake)))
    func onTheMooncakeTraceShortestTTFTKeepsTheHitsAndCutsTheTail() throws {
        let trace = try Trace.load(path: ReplayTests.mooncake)
        let replay = TimedReplay(workers: 8, profile: Self.profile, speed: 3)
        let roundRobin = replay.run(trace, strategy: .roundRobin).summary
        let cacheAware = replay.run(trace, strategy: .cacheAware).summary
        let shortest = replay.run(trace, strategy: .shortestTTFT).summary
        #expect(roundRobin.hitRatio < 0.07)
        #expect(cacheAware.hitRatio > 0.25 && shortest.hitRatio > cacheAware.hitRatio - 0.02, "\(shortest.hitRatio) vs \(cacheAware.hitRatio)")
        #expect(shortest.ttftP99 < 0.8 * cacheAware.ttftP99, "p99 \(shortest.ttftP99) s vs \(cacheAware.ttftP99) s")
        #expect(shortest.ttftP99 < roundRobin.ttftP99 / 4)
    }
}
