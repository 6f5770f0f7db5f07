import Balancer
import Testing
import WireCoding

/// Issue 16: hostile values. Commands carrying extreme numbers (0, 1, -1, Int.max, Int.min,
/// huge and non-finite doubles) go through the log's encoding, are applied, and then every
/// strategy routes every role combination: nothing may trap. An absurd load from one worker
/// used to stop the leader at its next least_load decision, and then every leader after it.
@Suite struct ExtremeValueTests {
    static let ints = [0, 1, -1, Int.max, Int.min, 1 << 20, 1 << 40, Int.max / 2]
    static let doubles = [0, 1, -1, Double.nan, .infinity, -.infinity, 1e300, -1e300, .greatestFiniteMagnitude, 1e-300]
    static let bytes: [UInt64] = [0, 1, .max, 1 << 63, 1 << 60]

    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func pick<T>(_ values: [T]) -> T { values[Int(next() % UInt64(values.count))] }
    }

    /// A load with every field set past the constructor's clamps (as bytes from the log may be).
    static func load(_ random: inout Random) -> EngineLoad {
        var load = EngineLoad()
        load.runningRequests = random.pick(ints)
        load.waitingRequests = random.pick(ints)
        load.queuedPrefillTokens = random.pick(ints)
        load.kvBlocksUsed = random.pick(ints)
        load.kvBlocksTotal = random.pick(ints)
        load.stepLatencyMilliseconds = random.pick(doubles)
        load.reportedAt = random.pick(bytes)
        return load
    }

    static func worker(_ id: String, role: WorkerRole, _ random: inout Random) -> Worker {
        var capacity = WorkerCapacity()
        capacity.kvBlocks = random.pick(ints)
        capacity.blockSize = random.pick(ints)
        capacity.maxBatch = random.pick(ints)
        capacity.maxRequests = random.pick(ints)
        capacity.prefillTokensPerSecond = random.pick(doubles)
        var location = GeoLocation(latitude: 0, longitude: 0)
        location.latitude = random.pick(doubles)
        location.longitude = random.pick(doubles)
        return Worker(
            id: id, model: "m", role: role, address: "127.0.0.1:9", group: "g", capacity: capacity,
            resources: resources(&random), location: location, health: .healthy, load: load(&random)
        )
    }

    static func resources(_ random: inout Random) -> WorkerResources {
        var resources = WorkerResources()
        resources.coreLoads = (0..<3).map { _ in random.pick(doubles) }
        resources.memoryTotalBytes = random.pick(bytes)
        resources.memoryUsedBytes = random.pick(bytes)
        resources.diskTotalBytes = random.pick(bytes)
        resources.diskUsedBytes = random.pick(bytes)
        var gpu = GPUStatus(utilization: 0, memoryTotalBytes: 0, memoryUsedBytes: 0)
        gpu.utilization = random.pick(doubles)
        gpu.memoryTotalBytes = random.pick(bytes)
        gpu.memoryUsedBytes = random.pick(bytes)
        resources.gpus = [gpu]
        return resources
    }

    static func settings(_ random: inout Random) -> RoutingSettings {
        var settings = RoutingSettings()
        settings.balanceAbsoluteThreshold = random.pick(ints)
        settings.balanceRelativeThreshold = random.pick(doubles)
        settings.boundedLoadFactor = random.pick(doubles)
        settings.nearBestFraction = random.pick(doubles)
        settings.nearBestMilliseconds = random.pick(doubles)
        settings.decodeMillisecondsPerRunningRequest = random.pick(doubles)
        settings.stickyOverloadFactor = random.pick(doubles)
        settings.stickyOverloadSlack = random.pick(ints)
        settings.stickyTTLMilliseconds = random.pick(bytes)
        settings.reservationTTLMilliseconds = random.pick(bytes)
        settings.prefixBlocksPerWorker = random.pick(ints)
        settings.cpuWeight = random.pick(doubles)
        settings.distanceWeightPer1000Kilometres = random.pick(doubles)
        return settings
    }

    /// As every replica sees a command: encoded into the log, decoded, applied.
    static func apply(_ command: BalancerCommand, to state: inout BalancerState, at time: UInt64) {
        let bytes = CommandEnvelope(issuedAt: time, command: command).encoded()
        guard let envelope = try? CommandEnvelope(decoding: bytes) else { return }
        state.apply(envelope)
    }

    static let roleSets: [[WorkerRole]] = [[], [.pdfusion], [.prefill, .decode], [.decode], [.vit, .pdfusion], [.vit, .prefill, .decode]]

    @Test func extremeValuesFromTheLogNeverTrapAnyStrategy() {
        for seed in UInt64(1)...60 {
            var random = Random(state: seed)
            var state = BalancerState()
            let time: UInt64 = random.pick([1, 1 << 40, UInt64.max / 2])
            for (index, role) in WorkerRole.allCases.enumerated() {
                for copy in 0..<2 {
                    Self.apply(.registerWorker(Self.worker("w\(index)-\(copy)", role: role, &random)), to: &state, at: time)
                }
            }
            let ids = state.workers.map(\.id)
            Self.apply(.reportLoads(Dictionary(uniqueKeysWithValues: ids.map { ($0, Self.load(&random)) })), to: &state, at: time)
            for id in ids {
                var location = GeoLocation(latitude: 0, longitude: 0)
                location.latitude = random.pick(Self.doubles)
                Self.apply(.reportResources(id: id, resources: Self.resources(&random), location: location), to: &state, at: time)
            }
            Self.apply(.setSettings(Self.settings(&random)), to: &state, at: time)
            var tier = ResourceTier()
            tier.vCPUs = random.pick(Self.ints)
            tier.gpus = random.pick(Self.ints)
            tier.memoryBytes = random.pick(Self.bytes)
            Self.apply(.setTier(name: "t", tier: tier), to: &state, at: time)
            for strategy in StrategyKind.allCases {
                Self.apply(policy(strategy, fallback: strategy == .sticky ? .leastLoad : strategy), to: &state, at: time)
                var router = Router(seed: seed)
                for (index, roles) in Self.roleSets.enumerated() {
                    var request = RoutingRequest(
                        model: "m", requestID: "r\(seed)-\(index)", sessionKey: "s\(index % 2)",
                        prompt: .tokens((0..<64).map { UInt32($0) }), promptTokens: random.pick([0, RoutingRequest.maxTokens]),
                        tokensPerBlock: random.pick([1, RoutingRequest.maxTokensPerBlock]),
                        expectedOutputTokens: random.pick([0, RoutingRequest.maxTokens]), roles: roles,
                        tier: random.pick([nil, "t"]), location: GeoLocation(latitude: 89, longitude: -179)
                    )
                    request.priority = random.pick(Self.ints)
                    _ = try? router.route(request, state: state, now: random.pick([0, time, UInt64.max / 2] as [UInt64]))
                }
                if let (generation, command) = router.takePendingCommand() {
                    Self.apply(command, to: &state, at: time)
                    router.commandApplied(generation: generation)
                }
            }
            // Every value the state kept is within the documented bounds.
            for worker in state.workers {
                #expect((0...Bounds.requests).contains(worker.load.runningRequests) && (0...Bounds.requests).contains(worker.load.waitingRequests))
                #expect(worker.load.stepLatencyMilliseconds.isFinite && worker.capacity.prefillTokensPerSecond.isFinite)
                #expect(worker.resources.coreLoads.allSatisfy { (0...1).contains($0) })
            }
            #expect(state.config.settings.stickyTTLMilliseconds <= 365 * 86_400_000)
        }
    }
}

extension ExtremeValueTests {
    /// Issue 16, item 7: unique 100 KiB session keys grew the replicated state without bound.
    @Test func stickyBindingsAreBoundedInKeyLengthAndCount() {
        var state = makeState([makeWorker("w")])
        let long = StickyBinding(key: StickyKey(session: String(repeating: "k", count: 100 * 1024), model: "m"), workerID: "w", expiresAt: 1_000_000)
        state.apply(CommandEnvelope(issuedAt: 2, command: .bindSticky([long])))
        #expect(state.stickyBindings.isEmpty, "a 100 KiB key is not kept")
        let total = BalancerState.maxStickyBindings + 30_000
        var next = 0
        while next < total {
            let batch = (next..<min(total, next + 10_000)).map { index in
                StickyBinding(key: StickyKey(session: "s\(index)", model: "m"), workerID: "w", expiresAt: 1_000_000 + UInt64(index))
            }
            next += batch.count
            state.apply(CommandEnvelope(issuedAt: 2, command: .bindSticky(batch)))
            #expect(state.stickyBindings.count <= BalancerState.maxStickyBindings)
        }
        // The newest sessions are the ones kept.
        #expect(state.stickyBinding(StickyKey(session: "s\(total - 1)", model: "m")) != nil)
        #expect(state.stickyBinding(StickyKey(session: "s0", model: "m")) == nil)
    }
}
