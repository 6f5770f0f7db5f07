import Balancer
import WireCoding
import PropertyBased
import Testing

/// A seeded generator of plausible command logs, for replay and snapshot tests.
struct CommandLogGenerator {
    var random: SeededGenerator

    init(state seed: UInt64) { random = SeededGenerator(seed: seed) }

    mutating func next() -> UInt64 { random.next() }
    mutating func below(_ bound: Int) -> Int { random.below(bound) }

    mutating func command() -> BalancerCommand {
        let id = "w\(below(12))"
        let roles = WorkerRole.allCases
        switch below(16) {
        case 0, 1:
            return .registerWorker(makeWorker(
                id, role: roles[below(4)], model: ["m", "n"][below(2)], group: ["a", "b"][below(2)],
                running: below(5), resources: WorkerResources(coreLoads: [0.5, 0.25], memoryTotalBytes: 1 << 30)
            ))
        case 2: return .deregisterWorker(id: id)
        case 3: return .setDraining(id: id, draining: below(2) == 0)
        case 4: return .setHealth(id: id, verdict: [.unknown, .healthy, .unhealthy][below(3)])
        case 5: return .setCircuit(id: id, state: [.closed, .open, .halfOpen][below(3)])
        case 6: return .reportLoads([id: EngineLoad(runningRequests: below(9), kvBlocksUsed: below(900), kvBlocksTotal: 1000, reportedAt: next() % 1000)])
        case 7, 8:
            let blocks = (0..<(1 + below(20))).map { _ in UInt64(below(60)) }
            return .recordPrefixes([PrefixRecord(workerID: id, blocks: blocks)])
        case 9: return .evictPrefixes([PrefixRecord(workerID: id, blocks: (0..<5).map { _ in UInt64(below(60)) })])
        case 10:
            return .bindSticky([StickyBinding(key: StickyKey(session: "s\(below(6))", model: "m"), workerID: id, expiresAt: 500 + next() % 5000)])
        case 11:
            var settings = RoutingSettings()
            settings.prefixBlocksPerWorker = 5 + below(30)
            return .setSettings(settings)
        case 12:
            return .setPolicy(model: "m", policy: below(3) == 0 ? nil : ModelPolicy(strategies: [.prefill: .shortestTTFT], sameGroup: true))
        case 13:
            return .setNodeEndpoint(node: UInt64(1 + below(3)), url: below(3) == 0 ? nil : "http://10.0.0.\(below(9)):8100")
        case 14:
            return .setModelAlias(alias: ["engine_service", "gpt-4o"][below(2)], model: below(3) == 0 ? nil : ["m", "n"][below(2)])
        default:
            return .batch([command(), .setTier(name: "t\(below(3))", tier: below(2) == 0 ? nil : ResourceTier(vCPUs: below(4)))])
        }
    }

    mutating func log(count: Int) -> [CommandEnvelope] {
        (0..<count).map { CommandEnvelope(issuedAt: UInt64($0) * 10, command: command()) }
    }
}

@Suite struct StateMachineTests {
    @Test func replayAndRestoreFromSnapshotGiveIdenticalStates() throws {
        for seed: UInt64 in 1...40 {
            var generator = CommandLogGenerator(state: seed)
            let log = generator.log(count: 400)
            var replayed = BalancerState()
            for entry in log { replayed.apply(entry) }

            // Snapshot at an arbitrary point, restore, then apply the rest.
            let cut = 1 + Int(seed * 7) % 399
            var early = BalancerState()
            for entry in log[..<cut] { early.apply(entry) }
            var restored = try BalancerState(snapshot: early.snapshot())
            #expect(restored.snapshot() == early.snapshot(), "a restored state snapshots to the same bytes")
            for entry in log[cut...] { restored.apply(entry) }

            #expect(restored.fingerprint == replayed.fingerprint, "seed \(seed)")
            #expect(restored.snapshot() == replayed.snapshot(), "seed \(seed)")
        }
    }

    @Test func applyIsDeterministicAcrossReplicas() {
        var generator = CommandLogGenerator(state: 99)
        let log = generator.log(count: 1000)
        var first = BalancerState()
        var second = BalancerState()
        for entry in log {
            first.apply(entry)
            second.apply(try! CommandEnvelope(decoding: entry.encoded()))
            #expect(first.fingerprint == second.fingerprint)
        }
    }

    @Test func everyCommandSurvivesItsEncoding() throws {
        var generator = CommandLogGenerator(state: 7)
        for entry in generator.log(count: 2000) {
            #expect(try CommandEnvelope(decoding: entry.encoded()) == entry)
        }
        let worker = makeWorker(
            "full", resources: WorkerResources(
                coreLoads: [0.1, 0.9], memoryTotalBytes: 1 << 36, memoryUsedBytes: 1 << 30, diskTotalBytes: 1 << 40,
                diskUsedBytes: 1 << 39, gpus: [GPUStatus(utilization: 0.5, memoryTotalBytes: 80 << 30, memoryUsedBytes: 1 << 30)]
            ), location: GeoLocation(latitude: -33.9, longitude: 151.2)
        )
        var labelled = worker
        labelled.labels = ["zone": "z1", "gpu": "h100"]
        var settings = RoutingSettings()
        settings.kvHighWatermark = 0.77
        for command: BalancerCommand in [
            .registerWorker(labelled), .reportResources(id: "full", resources: worker.resources, location: nil),
            .unbindSticky(StickyKey(session: "ü", model: "m", tier: "gpu")), .setDefaultPolicy(ModelPolicy(
                strategies: [.decode: .consistentHash, .vit: .random],
                split: [StrategyArm(name: "a", strategy: .sticky, weight: 3)], stickyFallback: .powerOfTwo, sameGroup: true
            )), .setSettings(settings), .batch([.batch([.deregisterWorker(id: "x")])]),
        ] {
            let envelope = CommandEnvelope(issuedAt: 42, command: command)
            #expect(try CommandEnvelope(decoding: envelope.encoded()) == envelope)
        }
    }

    @Test func readsSnapshotsOfEarlierVersions() throws {
        var generator = CommandLogGenerator(state: 5)
        var state = BalancerState()
        for entry in generator.log(count: 300) where !entry.command.isNodeEndpoint && !entry.command.isAlias { state.apply(entry) }
        #expect(state.nodeEndpoints.isEmpty)
        var bytes = state.snapshot()
        // Each version appends: version 3 is version 4 without the trailing (here empty) aliases ...
        #expect(state.config.aliases.isEmpty && bytes.last == 0)
        bytes.removeLast()
        bytes[0] = 3
        #expect(try BalancerState(snapshot: bytes).snapshot() == state.snapshot())
        // ... version 2 is version 3 without the trailing cache affinity ...
        var affinity = ByteWriter()
        affinity.write(state.config.settings.cacheAffinity)
        #expect(Array(bytes.suffix(affinity.bytes.count)) == affinity.bytes)
        bytes.removeLast(affinity.bytes.count)
        bytes[0] = 2
        #expect(try BalancerState(snapshot: bytes).snapshot() == state.snapshot())
        // ... and version 1 is version 2 without the (here empty) endpoint list.
        #expect(bytes.last == 0)
        bytes.removeLast()
        bytes[0] = 1
        #expect(try BalancerState(snapshot: bytes).snapshot() == state.snapshot())
    }

    @Test func aliasesRouteToTheirModelAndBadOnesAreIgnored() throws {
        var state = makeState([makeWorker("a"), makeWorker("b", model: "n")])
        for (alias, model) in [("engine_service", "n"), ("", "m"), ("x", ""), ("same", "same"), (String(repeating: "a", count: 257), "m")] {
            state.apply(CommandEnvelope(issuedAt: 2, command: .setModelAlias(alias: alias, model: model)))
        }
        #expect(state.config.aliases == ["engine_service": "n"])
        var router = Router()
        var request = makeRequest("r")
        request.model = "engine_service"
        let decision = try router.route(request, state: state, now: 10)
        #expect(decision.model == "n" && decision.targets.map(\.workerID) == ["b"])
        // A real model's name is never shadowed by an alias of the same name.
        state.apply(CommandEnvelope(issuedAt: 3, command: .setModelAlias(alias: "m", model: "n")))
        #expect(try pick(&router, makeRequest("r2"), state) == "a")
        state.apply(CommandEnvelope(issuedAt: 4, command: .setModelAlias(alias: "engine_service", model: nil)))
        expectError(.unknownModel) { _ = try router.route(request, state: state, now: 11) }
    }

    @Test func settingsWrittenBeforeTheCacheAffinityKeepItsDefault() throws {
        var settings = RoutingSettings()
        settings.kvHighWatermark = 0.77
        settings.cacheAffinity = 3
        let current = CommandEnvelope(issuedAt: 42, command: .setSettings(settings)).encoded()
        // The earlier layout: the previous tag (14), and no trailing affinity.
        var legacy = current
        var header = ByteWriter()
        header.write(CommandEnvelope.currentVersion)
        header.write(UInt64(42))
        let tagIndex = header.bytes.count
        #expect(legacy[tagIndex] == 18)
        legacy[tagIndex] = 14
        legacy.removeLast(8)
        guard case .setSettings(let decoded) = try CommandEnvelope(decoding: legacy).command else {
            Issue.record("not decoded as settings")
            return
        }
        #expect(decoded.kvHighWatermark == 0.77)
        #expect(decoded.cacheAffinity == RoutingSettings().cacheAffinity)
        settings.cacheAffinity = RoutingSettings().cacheAffinity
        #expect(decoded == settings)
    }

    @Test func truncatedOrCorruptedBytesAreRefusedNeverTrusted() {
        var generator = CommandLogGenerator(state: 3)
        for entry in generator.log(count: 200) {
            let bytes = entry.encoded()
            for length in 0..<bytes.count {
                #expect(throws: DecodingError.self) { try CommandEnvelope(decoding: Array(bytes[..<length])) }
            }
        }
        #expect(throws: DecodingError.self) { try CommandEnvelope(decoding: [9, 0, 1]) }
        #expect(throws: DecodingError.self) { try CommandEnvelope(decoding: [1, 0, 200]) }
        // A huge declared count with no bytes behind it must not allocate.
        #expect(throws: DecodingError.self) { try CommandEnvelope(decoding: [1, 0, 8, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) }
        // Batches nested without end are refused before the stack runs out.
        #expect(throws: DecodingError.self) { try CommandEnvelope(decoding: [1, 0] + Array(repeating: [16, 1], count: 10_000).flatMap { $0 }) }
        #expect(throws: DecodingError.self) { try BalancerState(snapshot: [2]) }
        #expect(throws: DecodingError.self) { try BalancerState(snapshot: []) }
    }

    @Test func randomBytesNeverCrashTheDecoders() {
        var generator = CommandLogGenerator(state: 11)
        for _ in 0..<20_000 {
            let bytes = (0..<generator.below(64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            _ = try? CommandEnvelope(decoding: [1] + bytes)
            _ = try? BalancerState(snapshot: [1] + bytes)
        }
    }

    @Test func reRegisteringAWorkerKeepsItsVerdictsAndCache() {
        var state = makeState([makeWorker("a", health: .unhealthy)], commands: [.recordPrefixes([PrefixRecord(workerID: "a", blocks: [1, 2, 3])])])
        var moved = makeWorker("a")
        moved.address = "10.0.0.9:8000"
        state.apply(CommandEnvelope(issuedAt: 2, command: .registerWorker(moved)))
        #expect(state.worker(id: "a")?.address == "10.0.0.9:8000")
        #expect(state.worker(id: "a")?.health == .unhealthy)
        #expect(state.cachedBlockCount(workerID: "a") == 3)
        // Serving another role is a new worker: its cache and verdicts start afresh.
        state.apply(CommandEnvelope(issuedAt: 3, command: .registerWorker(makeWorker("a", role: .decode, health: .unknown))))
        #expect(state.worker(id: "a")?.health == .unknown)
        #expect(state.cachedBlockCount(workerID: "a") == 0)
        #expect(state.pool(model: "m", role: .pdfusion).isEmpty)
    }

    @Test func deregisteringDropsTheWorkersBindingsAndBlocks() {
        var state = makeState([makeWorker("a"), makeWorker("b")], commands: [
            .recordPrefixes([PrefixRecord(workerID: "a", blocks: [1, 2])]),
            .bindSticky([StickyBinding(key: StickyKey(session: "s", model: "m"), workerID: "a", expiresAt: 10_000)]),
        ])
        state.apply(CommandEnvelope(issuedAt: 5, command: .deregisterWorker(id: "a")))
        #expect(state.worker(id: "a") == nil)
        #expect(state.stickyBinding(StickyKey(session: "s", model: "m")) == nil)
        #expect(state.cachedBlockCount(workerID: "a") == 0)
        #expect(state.apply(CommandEnvelope(issuedAt: 6, command: .setHealth(id: "a", verdict: .healthy))) != .applied)
        #expect(state.models == ["m"])
    }

    @Test func thePrefixIndexEvictsLeastRecentlyUsedBlocksPastItsCap() throws {
        var settings = RoutingSettings()
        settings.prefixBlocksPerWorker = 4
        var state = makeState([makeWorker("a"), makeWorker("b")], commands: [.setSettings(settings)])
        let prompt = blocks(prefix: 1, shared: 4, unique: 0, count: 4)
        state.apply(CommandEnvelope(issuedAt: 2, command: .recordPrefixes([PrefixRecord(workerID: "a", blocks: prompt)])))
        // Touch the prompt's first two blocks again, then add two new ones: blocks 3 and 4 go.
        state.apply(CommandEnvelope(issuedAt: 3, command: .recordPrefixes([
            PrefixRecord(workerID: "a", blocks: Array(prompt.prefix(2)) + [777, 778]),
        ])))
        #expect(state.cachedBlockCount(workerID: "a") == 4)
        var router = Router()
        let decision = try router.route(
            makeRequest(blocks: prompt), state: makeStateCopy(state, policy: .cacheAware), now: 10
        )
        #expect(decision.targets[0].workerID == "a")
        #expect(decision.targets[0].matchedBlocks == 2)
        // Lowering the cap trims every worker at once.
        settings.prefixBlocksPerWorker = 1
        state.apply(CommandEnvelope(issuedAt: 4, command: .setSettings(settings)))
        #expect(state.cachedBlockCount(workerID: "a") == 1)
    }

    func makeStateCopy(_ state: BalancerState, policy strategy: StrategyKind) -> BalancerState {
        var copy = state
        var settings = copy.config.settings
        settings.cacheHitThreshold = 0
        copy.apply(CommandEnvelope(issuedAt: 9, command: .batch([policy(strategy), .setSettings(settings)])))
        return copy
    }

    @Test func invalidConfigurationNamesTheKey() {
        var settings = RoutingSettings()
        settings.kvLowWatermark = 0.99
        #expect(throws: BalancerError.invalidConfig(field: "kv_low_watermark", "must be in (0, kv_high_watermark]")) {
            try settings.validate()
        }
        let policy = ModelPolicy(split: [StrategyArm(name: "a", strategy: .random, weight: 0)])
        #expect(throws: BalancerError.invalidConfig(field: "split.a.weight", "must be in 1...1000000, got 0")) { try policy.validate() }
        #expect(throws: BalancerError.self) { try ModelPolicy(stickyFallback: .sticky).validate() }
        #expect(throws: Never.self) { try RoutingSettings().validate() }
    }
}

@Suite struct RoutingPropertyTests {
    /// A random pool: each worker healthy or not, draining or not, of some role, with some load.
    static func pool(_ seed: UInt64) -> BalancerState {
        var generator = CommandLogGenerator(state: seed)
        var workers: [Worker] = []
        for index in 0..<(2 + generator.below(10)) {
            workers.append(makeWorker(
                "w\(index)", role: WorkerRole.allCases[generator.below(4)], running: generator.below(6),
                kvUsed: generator.below(1000), maxRequests: generator.below(3) == 0 ? 3 : 0,
                health: [.healthy, .unknown, .unhealthy][generator.below(3)], draining: generator.below(4) == 0
            ))
        }
        var state = makeState(workers)
        state.apply(CommandEnvelope(issuedAt: 2, command: .setCircuit(id: "w0", state: [.closed, .open][generator.below(2)])))
        return state
    }

    @Test func aDecisionNeverPicksAnIneligibleOrWrongRoleWorker() async {
        await propertyCheck(
            count: 400, input: Gen.uint64(in: 0...1_000_000), Gen.int(in: 0..<StrategyKind.allCases.count),
            Gen.int(in: 0...4)
        ) { seed, strategyIndex, roleShape in
            var state = Self.pool(seed)
            state.apply(CommandEnvelope(issuedAt: 3, command: policy(StrategyKind.allCases[strategyIndex])))
            let shapes: [[WorkerRole]] = [[], [.pdfusion], [.prefill, .decode], [.vit, .pdfusion], [.decode]]
            var router = Router(seed: seed)
            for index in 0..<5 {
                let request = makeRequest("r\(index)", blocks: blocks(prefix: seed, shared: 2, unique: UInt64(index), count: 4), session: "s", roles: shapes[roleShape])
                guard let decision = try? router.route(request, state: state, now: 10) else { continue }
                for target in decision.targets {
                    let worker = state.worker(id: target.workerID)!
                    #expect(worker.role == target.role)
                    #expect(worker.health != .unhealthy)
                    #expect(!worker.draining)
                    #expect(worker.circuit != .open)
                    #expect(worker.model == "m")
                }
                if !shapes[roleShape].isEmpty { #expect(decision.targets.map(\.role) == shapes[roleShape].sorted()) }
            }
        }
    }

    @Test func aFailedDecisionLeavesReservationsExactlyAsBefore() async {
        await propertyCheck(count: 400, input: Gen.uint64(in: 0...1_000_000), Gen.int(in: 0...3)) { seed, roleShape in
            let state = Self.pool(seed)
            let shapes: [[WorkerRole]] = [[.prefill, .decode], [.vit, .prefill, .decode], [.vit, .pdfusion], [.vit, .decode]]
            var router = Router(seed: seed)
            for index in 0..<8 {
                let before = router.ledger
                do {
                    let decision = try router.route(makeRequest("r\(index)", roles: shapes[roleShape]), state: state, now: 10)
                    #expect(router.ledger.reservations(token: decision.releaseToken).count == shapes[roleShape].count)
                } catch {
                    #expect(router.ledger == before, "\(error)")
                }
            }
        }
    }
}

extension BalancerCommand {
    var isNodeEndpoint: Bool {
        switch self {
        case .setNodeEndpoint: true
        case .batch(let commands): commands.contains { $0.isNodeEndpoint }
        default: false
        }
    }

    var isAlias: Bool {
        switch self {
        case .setModelAlias: true
        case .batch(let commands): commands.contains { $0.isAlias }
        default: false
        }
    }
}
