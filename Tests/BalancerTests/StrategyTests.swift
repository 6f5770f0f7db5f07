import Balancer
import Testing

@Suite struct SimpleStrategyTests {
    @Test func roundRobinCyclesThroughEligibleWorkersInIDOrder() throws {
        let state = makeState(
            [makeWorker("a"), makeWorker("b"), makeWorker("c", health: .unhealthy), makeWorker("d")],
            commands: [policy(.roundRobin)]
        )
        var router = Router()
        let picks = try (0..<6).map { try pick(&router, makeRequest("r\($0)"), state) }
        #expect(picks == ["a", "b", "d", "a", "b", "d"])
    }

    @Test func randomOnlyPicksEligibleWorkersAndReachesAllOfThem() throws {
        let state = makeState(
            [makeWorker("a"), makeWorker("b"), makeWorker("c", draining: true)], commands: [policy(.random)]
        )
        var router = Router(seed: 9)
        var seen: [String: Int] = [:]
        for index in 0..<300 {
            let decision = try router.route(makeRequest("r\(index)"), state: state, now: 10)
            seen[decision.targets[0].workerID, default: 0] += 1
            try router.release(token: decision.releaseToken)
        }
        #expect(Set(seen.keys) == ["a", "b"])
        #expect(seen["a"]! > 100 && seen["b"]! > 100)
    }

    @Test func leastLoadPicksTheIdlestWorker() throws {
        let state = makeState(
            [makeWorker("a", running: 5), makeWorker("b", running: 1, waiting: 1), makeWorker("c", running: 3)],
            commands: [policy(.leastLoad)]
        )
        var router = Router()
        #expect(try pick(&router, makeRequest(), state) == "b")
    }

    @Test func tiesAtZeroLoadAreSharedEvenlyInsteadOfHerdingOnTheFirstWorker() throws {
        let workers = (0..<8).map { makeWorker("w\($0)") }
        for strategy in [StrategyKind.leastLoad, .cacheAware, .shortestTTFT] {
            let state = makeState(workers, commands: [policy(strategy)])
            var router = Router()
            var counts: [String: Int] = [:]
            for index in 0..<800 {
                // Every request is released at once: all workers stay at zero load.
                let decision = try router.route(makeRequest("r\(index)"), state: state, now: 10)
                counts[decision.targets[0].workerID, default: 0] += 1
                try router.release(token: decision.releaseToken)
            }
            #expect(counts.count == 8, "\(strategy): \(counts)")
            #expect(counts.values.max()! <= 110, "\(strategy): \(counts)")
        }
    }

    @Test func reservationsCountAsLoadUntilTheEngineReportsAgain() throws {
        var state = makeState([makeWorker("a"), makeWorker("b")], commands: [policy(.leastLoad)])
        var router = Router()
        let first = try pick(&router, makeRequest("1"), state, now: 10)
        let second = try pick(&router, makeRequest("2"), state, now: 11)
        #expect(first != second, "the first pick's reservation makes its worker busier")
        // The engines now report: a's report includes the request, b's does not yet.
        state.apply(CommandEnvelope(issuedAt: 20, command: .reportLoads([
            first: EngineLoad(runningRequests: 1, kvBlocksTotal: 1000, reportedAt: 20),
            second: EngineLoad(runningRequests: 0, kvBlocksTotal: 1000, reportedAt: 5),
        ])))
        // first: 1 (reported, includes its own reservation); second: 0 + 1 reserved after its report.
        let third = try pick(&router, makeRequest("3"), state, now: 21)
        let fourth = try pick(&router, makeRequest("4"), state, now: 22)
        #expect([third, fourth].sorted() == [first, second].sorted())
    }

    @Test func powerOfTwoNeverPicksTheBusierOfItsTwoSamples() throws {
        let state = makeState(
            [makeWorker("hot", running: 100), makeWorker("a"), makeWorker("b"), makeWorker("c")],
            commands: [policy(.powerOfTwo)]
        )
        var router = Router(seed: 3)
        for index in 0..<500 {
            let decision = try router.route(makeRequest("r\(index)"), state: state, now: 10)
            #expect(decision.targets[0].workerID != "hot")
            try router.release(token: decision.releaseToken)
        }
    }
}

@Suite struct CacheAwareTests {
    @Test func aRepeatedPrefixGoesBackToTheWorkerThatHoldsIt() throws {
        var state = makeState((0..<4).map { makeWorker("w\($0)") }, commands: [policy(.cacheAware)])
        var router = Router()
        let prompt = blocks(prefix: 1, shared: 8, unique: 1, count: 10)
        let first = try router.route(makeRequest("1", blocks: prompt), state: state, now: 10)
        #expect(first.targets[0].reason == .cacheMiss)
        flush(&router, into: &state)
        let again = try router.route(makeRequest("2", blocks: blocks(prefix: 1, shared: 8, unique: 2, count: 10)), state: state, now: 11)
        #expect(again.targets[0].workerID == first.targets[0].workerID)
        #expect(again.targets[0].reason == .cacheHit)
        #expect(again.targets[0].matchedBlocks == 8)
    }

    @Test func theLocalOverlayGivesAffinityBeforeTheLogCommits() throws {
        let state = makeState((0..<4).map { makeWorker("w\($0)") }, commands: [policy(.cacheAware)])
        var router = Router()
        let first = try pick(&router, makeRequest("1", blocks: blocks(prefix: 7, shared: 6, unique: 1, count: 8)), state)
        // Nothing flushed: the replicated index is empty, the overlay knows.
        let second = try router.route(makeRequest("2", blocks: blocks(prefix: 7, shared: 6, unique: 2, count: 8)), state: state, now: 11)
        #expect(second.targets[0].workerID == first)
        #expect(second.targets[0].matchedBlocks == 6)
    }

    @Test func workerReportedCacheKeysCountAsHits() throws {
        let prompt = blocks(prefix: 3, shared: 4, unique: 1, count: 4)
        let state = makeState(
            (0..<4).map { makeWorker("w\($0)") },
            commands: [policy(.cacheAware), .recordPrefixes([PrefixRecord(workerID: "w2", blocks: prompt)])]
        )
        var router = Router()
        let decision = try router.route(makeRequest(blocks: prompt), state: state, now: 10)
        #expect(decision.targets[0].workerID == "w2")
        #expect(decision.targets[0].matchedBlocks == 4)
    }

    @Test func anImbalancedClusterFallsBackToLeastLoad() throws {
        let prompt = blocks(prefix: 3, shared: 4, unique: 1, count: 4)
        let state = makeState(
            [makeWorker("holder", running: 80), makeWorker("idle")],
            commands: [policy(.cacheAware), .recordPrefixes([PrefixRecord(workerID: "holder", blocks: prompt)])]
        )
        var router = Router()
        let decision = try router.route(makeRequest(blocks: prompt), state: state, now: 10)
        #expect(decision.targets[0].workerID == "idle")
        #expect(decision.targets[0].reason == .imbalanceFallback)
    }

    @Test func aMissGoesToTheLeastLoadedWorker() throws {
        let state = makeState([makeWorker("a", running: 3), makeWorker("b", running: 1)], commands: [policy(.cacheAware)])
        var router = Router()
        let decision = try router.route(makeRequest(blocks: blocks(prefix: 9, shared: 2, unique: 0, count: 2)), state: state, now: 10)
        #expect(decision.targets[0].workerID == "b")
        #expect(decision.targets[0].reason == .cacheMiss)
    }

    @Test func evictedBlocksNoLongerAttract() throws {
        let prompt = blocks(prefix: 3, shared: 4, unique: 1, count: 4)
        var state = makeState(
            [makeWorker("a"), makeWorker("b")],
            commands: [policy(.cacheAware), .recordPrefixes([PrefixRecord(workerID: "b", blocks: prompt)])]
        )
        state.apply(CommandEnvelope(issuedAt: 5, command: .evictPrefixes([PrefixRecord(workerID: "b", blocks: Array(prompt[1...]))])))
        var router = Router()
        let decision = try router.route(makeRequest(blocks: prompt), state: state, now: 10)
        #expect(decision.targets[0].matchedBlocks == (decision.targets[0].workerID == "b" ? 1 : 0))
    }

    /// Every request shares its first block: no strategy may pile onto one worker.
    @Test(arguments: StrategyKind.allCases.filter { $0 != .sticky && $0 != .resourceAware })
    func aSharedFirstBlockDoesNotHerd(strategy: StrategyKind) throws {
        var state = makeState((0..<8).map { makeWorker("w\($0)") }, commands: [policy(strategy)])
        var router = Router(seed: 11)
        var counts: [String: Int] = [:]
        var open: [UInt64] = []
        for index in 0..<800 {
            let prompt = blocks(prefix: 1, shared: 1, unique: UInt64(index), count: 12)
            let decision = try router.route(makeRequest("r\(index)", blocks: prompt), state: state, now: 10 + UInt64(index))
            counts[decision.targets[0].workerID, default: 0] += 1
            open.append(decision.releaseToken)
            // Requests finish after ~16 more arrive, as in a steady stream.
            if open.count > 16 { try router.release(token: open.removeFirst()) }
            if index % 10 == 0 { flush(&router, into: &state) }
        }
        let mean = 800.0 / 8
        #expect(Double(counts.values.max()!) <= 1.5 * mean, "\(strategy): \(counts.sorted { $0.key < $1.key })")
    }
}

@Suite struct ShortestTTFTTests {
    @Test func aCachedPromptWinsOverAnEquallyIdleWorker() throws {
        let prompt = blocks(prefix: 5, shared: 100, unique: 1, count: 100)
        let state = makeState(
            [makeWorker("cold"), makeWorker("warm")],
            commands: [policy(.shortestTTFT), .recordPrefixes([PrefixRecord(workerID: "warm", blocks: prompt)])]
        )
        var router = Router()
        let decision = try router.route(makeRequest(blocks: prompt, promptTokens: 1600), state: state, now: 10)
        #expect(decision.targets[0].workerID == "warm")
        #expect(decision.targets[0].matchedBlocks == 100)
        #expect(decision.estimatedTTFTMilliseconds < 10)
    }

    @Test func aLongQueueOutweighsACacheHit() throws {
        let prompt = blocks(prefix: 5, shared: 10, unique: 1, count: 10)
        let state = makeState(
            [makeWorker("idle"), makeWorker("warm", queuedPrefill: 200_000)],
            commands: [policy(.shortestTTFT), .recordPrefixes([PrefixRecord(workerID: "warm", blocks: prompt)])]
        )
        var router = Router()
        let decision = try router.route(makeRequest(blocks: prompt, promptTokens: 160), state: state, now: 10)
        #expect(decision.targets[0].workerID == "idle")
        // 160 uncached tokens at 10,000 tokens/s.
        #expect(abs(decision.estimatedTTFTMilliseconds - 16) < 0.001)
    }

    /// 1,600 cached tokens save 160 ms at 10,000 tokens/s; with the default affinity (20) that is
    /// worth 3.2 s of queue, so a conversation stays on its worker behind a 1 s queue, where
    /// plain shortest TTFT (affinity 0) moves it to the idle worker and prefills it again.
    @Test func theCacheAffinityKeepsAConversationOnItsWorkerThroughAModerateQueue() throws {
        let prompt = blocks(prefix: 5, shared: 100, unique: 1, count: 100)
        for (affinity, expected) in [(RoutingSettings().cacheAffinity, "warm"), (0, "idle")] {
            var settings = RoutingSettings()
            settings.cacheAffinity = affinity
            let state = makeState(
                [makeWorker("idle"), makeWorker("warm", queuedPrefill: 10_000)],
                commands: [.setSettings(settings), policy(.shortestTTFT), .recordPrefixes([PrefixRecord(workerID: "warm", blocks: prompt)])]
            )
            var router = Router()
            let decision = try router.route(makeRequest(blocks: prompt, promptTokens: 1600), state: state, now: 10)
            #expect(decision.targets[0].workerID == expected, "affinity \(affinity)")
        }
    }

    @Test func equallyGoodIdleWorkersShareTheTraffic() throws {
        let state = makeState((0..<4).map { makeWorker("w\($0)") }, commands: [policy(.shortestTTFT)])
        var router = Router()
        var counts: [String: Int] = [:]
        for index in 0..<400 {
            let decision = try router.route(makeRequest("r\(index)", promptTokens: 10), state: state, now: 10)
            counts[decision.targets[0].workerID, default: 0] += 1
            _ = try router.release(token: decision.releaseToken)
        }
        #expect(counts.count == 4 && counts.values.allSatisfy { $0 == 100 }, "\(counts)")
    }

    @Test func theEstimateCountsPrefillReservedSinceTheLastReport() throws {
        let state = makeState([makeWorker("only")], commands: [policy(.shortestTTFT)])
        var router = Router()
        let first = try router.route(makeRequest("1", promptTokens: 10_000), state: state, now: 10)
        let second = try router.route(makeRequest("2", promptTokens: 10_000), state: state, now: 11)
        #expect(abs(first.estimatedTTFTMilliseconds - 1000) < 0.001)
        // The first request's 10,000 tokens queue ahead; one running request adds 0.25 ms.
        #expect(abs(second.estimatedTTFTMilliseconds - 2000.25) < 0.001)
    }
}

@Suite struct KVPressureTests {
    @Test func decodeAvoidsWorkersAboveTheWatermark() throws {
        let state = makeState(
            [makeWorker("full", role: .decode, kvUsed: 950), makeWorker("roomy", role: .decode, kvUsed: 100)],
            commands: [policy(.kvPressure)]
        )
        var router = Router()
        for index in 0..<50 {
            let decision = try router.route(makeRequest("r\(index)", roles: [.decode]), state: state, now: 10)
            #expect(decision.targets[0].workerID == "roomy")
            #expect(decision.targets[0].reason == .kvHeadroom)
            try router.release(token: decision.releaseToken)
        }
    }

    @Test func aPressuredWorkerReturnsOnlyBelowTheLowWatermark() throws {
        var state = makeState(
            [makeWorker("a", role: .decode, kvUsed: 950), makeWorker("b", role: .decode, kvUsed: 100)],
            commands: [policy(.kvPressure)]
        )
        var router = Router(seed: 5)
        _ = try router.route(makeRequest("1", roles: [.decode]), state: state, now: 10)
        func reportA(_ used: Int) {
            state.apply(CommandEnvelope(issuedAt: 20, command: .reportLoads([
                "a": EngineLoad(kvBlocksUsed: used, kvBlocksTotal: 1000, reportedAt: 20),
            ])))
        }
        func picksOfA() throws -> Int {
            var count = 0
            for index in 0..<200 {
                let decision = try router.route(makeRequest("x\(index)", roles: [.decode]), state: state, now: 30)
                if decision.targets[0].workerID == "a" { count += 1 }
                try router.release(token: decision.releaseToken)
            }
            return count
        }
        reportA(880)  // between the watermarks: still pressured
        #expect(try picksOfA() == 0)
        reportA(800)  // below the low watermark: back in play
        #expect(try picksOfA() > 0)
    }

    @Test func whenEveryWorkerIsFullTheLeastFullIsTaken() throws {
        let state = makeState(
            [makeWorker("a", role: .decode, kvUsed: 990), makeWorker("b", role: .decode, kvUsed: 960)],
            commands: [policy(.kvPressure)]
        )
        var router = Router()
        let decision = try router.route(makeRequest(roles: [.decode]), state: state, now: 10)
        #expect(decision.targets[0].workerID == "b")
        #expect(decision.targets[0].reason == .kvPressureFallback)
    }
}

@Suite struct ConsistentHashTests {
    @Test func aSessionAlwaysLandsOnTheSameWorker() throws {
        let state = makeState((0..<8).map { makeWorker("w\($0)") }, commands: [policy(.consistentHash)])
        var router = Router()
        for session in 0..<20 {
            var seen = Set<String>()
            for index in 0..<5 {
                let decision = try router.route(makeRequest("s\(session)-\(index)", session: "s\(session)"), state: state, now: 10)
                seen.insert(decision.targets[0].workerID)
                try router.release(token: decision.releaseToken)
            }
            #expect(seen.count == 1)
        }
    }

    @Test func removingAWorkerMovesOnlyItsOwnKeys() throws {
        let workers = (0..<8).map { makeWorker("w\($0)") }
        var state = makeState(workers, commands: [policy(.consistentHash)])
        var router = Router()
        func placements() throws -> [String] {
            try (0..<400).map { index in
                let decision = try router.route(makeRequest("k\(index)", session: "k\(index)"), state: state, now: 10)
                try router.release(token: decision.releaseToken)
                return decision.targets[0].workerID
            }
        }
        let before = try placements()
        state.apply(CommandEnvelope(issuedAt: 11, command: .deregisterWorker(id: "w3")))
        let after = try placements()
        for (old, new) in zip(before, after) where old != "w3" {
            #expect(old == new)
        }
        #expect(before.filter { $0 == "w3" }.count > 20)
    }

    @Test func anOverloadedOwnerSpillsToTheNextWorkerOnTheRing() throws {
        let state = makeState((0..<4).map { makeWorker("w\($0)") }, commands: [policy(.consistentHash)])
        var router = Router()
        var owners: [String: Int] = [:]
        var spills = 0
        for index in 0..<40 {
            let decision = try router.route(makeRequest("r\(index)", session: "one-hot-session"), state: state, now: 10)
            owners[decision.targets[0].workerID, default: 0] += 1
            if decision.targets[0].reason == .boundedLoadSpill { spills += 1 }
        }
        // The bound ceil(1.25 · (total + 1) / 4) keeps any worker within about 1.25× the mean.
        #expect(owners.values.max()! <= 13, "\(owners)")
        #expect(spills > 0)
    }
}

@Suite struct ResourceAwareTests {
    static let tier = ResourceTier(vCPUs: 4, memoryBytes: 8 << 30, gpus: 1, gpuMemoryBytes: 20 << 30)

    static func host(
        cores: Int, busy: Int = 0, memoryGiB: UInt64 = 64, gpus: Int = 1, busyGPUs: Int = 0, gpuFreeGiB: UInt64 = 80
    ) -> WorkerResources {
        WorkerResources(
            coreLoads: (0..<cores).map { $0 < busy ? 0.95 : 0.1 },
            memoryTotalBytes: memoryGiB << 30, memoryUsedBytes: 0,
            diskTotalBytes: 1 << 40, diskUsedBytes: 0,
            gpus: (0..<gpus).map { index in
                GPUStatus(
                    utilization: index < busyGPUs ? 0.99 : 0.1, memoryTotalBytes: 80 << 30,
                    memoryUsedBytes: (80 - gpuFreeGiB) << 30
                )
            }
        )
    }

    func state(_ workers: [Worker]) -> BalancerState {
        makeState(workers, commands: [policy(.resourceAware), .setTier(name: "large", tier: Self.tier)])
    }

    @Test func onlyHostsWithTheTiersResourcesFreeQualify() throws {
        let state = state([
            makeWorker("no-gpu", resources: Self.host(cores: 32, gpus: 0)),
            makeWorker("busy-cores", resources: Self.host(cores: 8, busy: 6)),
            makeWorker("small-gpu", resources: Self.host(cores: 32, gpuFreeGiB: 10)),
            makeWorker("fits", resources: Self.host(cores: 16)),
        ])
        var router = Router()
        let decision = try router.route(makeRequest(tier: "large"), state: state, now: 10)
        #expect(decision.targets[0].workerID == "fits")
        #expect(decision.targets[0].reason == .resourceFit)
    }

    @Test func reservationsHoldResourcesUntilReleased() throws {
        let state = state([
            makeWorker("big", resources: Self.host(cores: 16, gpus: 2)),
            makeWorker("small", resources: Self.host(cores: 8, gpus: 1)),
        ])
        var router = Router()
        let picks = try (0..<3).map { try pick(&router, makeRequest("r\($0)", tier: "large"), state) }
        #expect(picks.sorted() == ["big", "big", "small"])
        expectError(.noResourceFit) { _ = try router.route(makeRequest("r4", tier: "large"), state: state, now: 10) }
    }

    @Test func freeGPUsWeighMoreThanFreeCores() throws {
        let state = state([
            // Every core idle but 3 of 4 GPUs busy, against 12 of 16 cores busy and every GPU free.
            makeWorker("many-cores", resources: Self.host(cores: 64, gpus: 4, busyGPUs: 3)),
            makeWorker("many-gpus", resources: Self.host(cores: 16, busy: 12, gpus: 4)),
        ])
        var router = Router()
        #expect(try pick(&router, makeRequest(tier: "large"), state) == "many-gpus")
    }

    @Test func theNearerHostWinsWhenOtherwiseEqual() throws {
        let paris = GeoLocation(latitude: 48.86, longitude: 2.35)
        let tokyo = GeoLocation(latitude: 35.68, longitude: 139.69)
        let state = state([
            makeWorker("tokyo", resources: Self.host(cores: 16), location: tokyo),
            makeWorker("paris", resources: Self.host(cores: 16), location: paris),
        ])
        var router = Router()
        #expect(try pick(&router, makeRequest(tier: "large", location: GeoLocation(latitude: 51.5, longitude: -0.12)), state) == "paris")
        #expect(abs(paris.distanceKilometres(to: tokyo) - 9_712) < 30)
    }
}

@Suite struct StickyTests {
    func state(_ workers: [Worker]) -> BalancerState {
        makeState(workers, commands: [policy(.sticky, fallback: .leastLoad), .setTier(name: "gpu", tier: ResourceTier())])
    }

    @Test func aSessionStaysOnItsWorkerAcrossFlushes() throws {
        var state = state((0..<4).map { makeWorker("w\($0)") })
        var router = Router()
        let first = try router.route(makeRequest("1", session: "alice"), state: state, now: 10)
        #expect(first.targets[0].reason == .stickyFallback)
        flush(&router, into: &state)
        #expect(state.stickyBinding(StickyKey(session: "alice", model: "m"))?.workerID == first.targets[0].workerID)
        for index in 2..<10 {
            let next = try router.route(makeRequest("\(index)", session: "alice"), state: state, now: 10)
            #expect(next.targets[0].workerID == first.targets[0].workerID)
            #expect(next.targets[0].reason == .sticky)
        }
    }

    @Test func anUnhealthyBoundWorkerIsReplacedAndTheSessionRebound() throws {
        var state = state([makeWorker("a"), makeWorker("b")])
        var router = Router()
        let first = try pick(&router, makeRequest("1", session: "s"), state)
        flush(&router, into: &state)
        state.apply(CommandEnvelope(issuedAt: 11, command: .setHealth(id: first, verdict: .unhealthy)))
        let moved = try router.route(makeRequest("2", session: "s"), state: state, now: 12)
        #expect(moved.targets[0].workerID != first)
        #expect(moved.targets[0].reason == .stickyFallback)
        flush(&router, into: &state, at: 12)
        #expect(state.stickyBinding(StickyKey(session: "s", model: "m"))?.workerID == moved.targets[0].workerID)
    }

    @Test func anOverloadedBoundWorkerSheddsTheSession() throws {
        var state = state([makeWorker("a"), makeWorker("b")])
        var router = Router()
        let first = try pick(&router, makeRequest("1", session: "s"), state)
        flush(&router, into: &state)
        state.apply(CommandEnvelope(issuedAt: 11, command: .reportLoads([first: EngineLoad(runningRequests: 50, reportedAt: 11)])))
        #expect(try pick(&router, makeRequest("2", session: "s"), state, now: 12) != first)
    }

    @Test func aSessionKeepsItsWorkerOnAnotherTier() throws {
        var state = state((0..<4).map { makeWorker("w\($0)") })
        var router = Router()
        let first = try pick(&router, makeRequest("1", session: "s"), state)
        flush(&router, into: &state)
        let other = try router.route(makeRequest("2", session: "s", tier: "gpu"), state: state, now: 11)
        #expect(other.targets[0].workerID == first)
        #expect(other.targets[0].reason == .stickyAffinity)
    }

    @Test func bindingsExpireWithTheLogsClock() throws {
        var state = state([makeWorker("a"), makeWorker("b")])
        var router = Router()
        _ = try pick(&router, makeRequest("1", session: "s"), state)
        flush(&router, into: &state)
        let key = StickyKey(session: "s", model: "m")
        #expect(state.stickyBinding(key) != nil)
        state.apply(CommandEnvelope(issuedAt: 10 + state.config.settings.stickyTTLMilliseconds, command: .batch([])))
        #expect(state.stickyBinding(key) == nil)
    }

    @Test func withoutASessionTheFallbackDecides() throws {
        let state = state([makeWorker("a", running: 4), makeWorker("b")])
        var router = Router()
        let decision = try router.route(makeRequest(), state: state, now: 10)
        #expect(decision.targets[0].workerID == "b")
        #expect(router.takePendingCommand() == nil)
    }
}
