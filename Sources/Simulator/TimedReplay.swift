public import Balancer

/// A trace through the balancer's router and simulated engines in virtual time: the timing
/// model of ``EngineModel`` for every engine, the router deciding at each arrival, and the
/// router seeing engine load the way a Fulcrum leader does (polled every
/// `statusIntervalMilliseconds`, reaching the replicated state at the next flush, every
/// `flushIntervalMilliseconds`, together with the prefixes decided since the last one).
///
/// Nothing runs against the wall clock, so a whole trace takes seconds and the same inputs give
/// the same figures: the instrument for comparing strategies and tuning them, free of the noise
/// of a loaded machine. What it leaves out against a live replay: HTTP, the router's text
/// blocks (it routes on the trace's block ids), and the commit latency of a flush.
public struct TimedReplay: Sendable {
    public var workers: Int
    public var profile: EngineProfile
    /// Time scale: 2 sends twice as fast as recorded.
    public var speed: Double
    public var statusIntervalMilliseconds: Double
    public var flushIntervalMilliseconds: Double
    /// Routing settings (thresholds, the prefix index's cap); the cap defaults to the engines'
    /// KV capacity in blocks.
    public var settings: RoutingSettings
    /// Stop sending after this many seconds of replay (nil: the whole trace).
    public var duration: Double?
    /// Engines report the blocks they evict with their status, and the router forgets them.
    public var reportsEvictions = false
    /// Admission control on the master (nil: every request is dispatched at once). Queued
    /// requests are placed after every event that can free capacity (a finished request, a
    /// flush of engine status) and shed at their class's deadline.
    public var admission: AdmissionPolicy?
    /// The prefill speed workers are registered with (what the router's TTFT estimates divide
    /// by); nil: the profile's linear speed, which long contexts and running decodes never reach.
    public var advertisedPrefillTokensPerSecond: Double?

    public init(
        workers: Int = 8, profile: EngineProfile, speed: Double = 1, statusIntervalMilliseconds: Double = 50,
        flushIntervalMilliseconds: Double = 100, settings: RoutingSettings? = nil, duration: Double? = nil
    ) {
        self.workers = workers
        self.profile = profile
        self.speed = speed
        self.statusIntervalMilliseconds = statusIntervalMilliseconds
        self.flushIntervalMilliseconds = flushIntervalMilliseconds
        self.settings = settings ?? {
            var defaults = RoutingSettings()
            defaults.prefixBlocksPerWorker = profile.kvCapacityBlocks
            return defaults
        }()
        self.duration = duration
    }

    /// What the next step of the simulation is; at equal times the lower kind goes first, so a
    /// finished request frees its reservation before the next arrival is routed, and an arrival
    /// is queued before the engine's iteration that starts at the same instant.
    private enum Step: Int, Comparable {
        case deliver, arrival, poll, flush, iterate
        static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    private struct InFlight {
        var record: Int
        var token: UInt64?
        var blocks: [UInt64]
    }

    public func run(_ trace: [TraceRequest], strategy: StrategyKind, name: String? = nil) -> OfflineReplay.Result {
        run(trace, policy: ModelPolicy(strategies: [.pdfusion: strategy]), name: name ?? strategy.name)
    }

    /// Placement with perfect information, for the oracle a router is read against: at each
    /// arrival it reads every engine's real KV cache and queue (what no router sees), with no
    /// poll or flush delay; a prefix counts as held from the moment a request carrying it was
    /// sent to the engine (it is cached by the time the engine serves what is sent now).
    public enum Oracle: String, Sendable, CaseIterable {
        /// The engine with the lowest TTFT predicted from its real queue of prefill tokens and
        /// the request's tokens it really holds; ties to the longer real prefix.
        case shortestTTFT = "oracle_ttft"
        /// The engine really holding the longest prefix, unless its queue is more than a
        /// batch (8,192 tokens) longer than the shortest one; then the shortest TTFT.
        case longestPrefix = "oracle_prefix"
    }

    public func run(_ trace: [TraceRequest], oracle: Oracle) -> OfflineReplay.Result {
        run(trace, policy: ModelPolicy(strategies: [.pdfusion: .roundRobin]), name: oracle.rawValue, oracle: oracle)
    }

    public func run(_ trace: [TraceRequest], policy: ModelPolicy, name: String, oracle: Oracle? = nil) -> OfflineReplay.Result {
        let ids = (0..<workers).map { "engine-\($0 + 1)" }
        var state = BalancerState()
        var router = Router(seed: 42)
        func apply(_ command: BalancerCommand, at now: Milliseconds) {
            _ = state.apply(CommandEnvelope(issuedAt: now, command: command))
        }
        apply(.setSettings(settings), at: 0)
        apply(.setDefaultPolicy(policy), at: 0)
        for id in ids {
            apply(.registerWorker(Worker(
                id: id, model: "m", role: .pdfusion, address: "\(id):1",
                capacity: WorkerCapacity(
                    kvBlocks: profile.kvCapacityBlocks, blockSize: profile.blockSize,
                    prefillTokensPerSecond: advertisedPrefillTokensPerSecond ?? profile.linearTokensPerSecond
                )
            )), at: 0)
        }

        let arrivals = trace.map { $0.timestampMilliseconds / 1_000 / speed }
        let sent = duration.map { limit in arrivals.prefix { $0 < limit }.count } ?? trace.count
        var engine0 = EngineModel(profile: profile)
        engine0.recordsKVEvents = reportsEvictions
        var engines = [EngineModel](repeating: engine0, count: workers)
        var evicted: [PrefixRecord] = []
        var delivered = [[EngineModel.Event]](repeating: [], count: workers)
        var inFlight = [[UInt64: InFlight]](repeating: [:], count: workers)
        /// Oracles only: the blocks of every request sent to an engine and not yet finished,
        /// which its cache holds by the time a request sent now is served.
        var queuedBlocks = [[UInt64: Int]](repeating: [:], count: workers)
        func forget(_ flight: InFlight, on engine: Int) {
            for block in flight.blocks {
                let count = queuedBlocks[engine][block, default: 1] - 1
                queuedBlocks[engine][block] = count > 0 ? count : nil
            }
        }
        var records = (0..<sent).map { RequestRecord(index: $0, sentAt: arrivals[$0], inputTokens: trace[$0].inputTokens) }
        var polled: [String: EngineLoad] = [:]
        var next = 0
        var nextPoll = 0.0
        var nextFlush = 0.0
        var requestID: UInt64 = 0
        /// Virtual seconds as the router's milliseconds (never 0: 0 means "never" in its state).
        func milliseconds(_ seconds: Double) -> Milliseconds { Milliseconds(seconds * 1_000) + 1 }

        func routingRequest(_ index: Int) -> RoutingRequest {
            let request = trace[index]
            return RoutingRequest(
                model: "m", requestID: "r\(index)", prompt: .blocks(request.blockIDs), promptTokens: request.inputTokens,
                tokensPerBlock: profile.blockSize, expectedOutputTokens: request.outputTokens, roles: [.pdfusion],
                priority: request.priority
            )
        }
        /// Sends trace request `index` to the engine its router (or oracle) picks.
        func dispatch(_ index: Int, at time: Double, now: Milliseconds, ceiling: AdmissionCeiling? = nil) {
            let request = trace[index]
            do {
                let engineIndex: Int
                let token: UInt64?
                if let oracle {
                    engineIndex = Self.place(request, on: engines, queued: queuedBlocks, oracle: oracle, profile: profile)
                    token = nil
                } else {
                    var routing = routingRequest(index)
                    routing.admissionCeiling = ceiling
                    let decision = try router.route(routing, state: state, now: now)
                    engineIndex = Int(decision.targets[0].workerID.dropFirst("engine-".count))! - 1
                    token = decision.releaseToken
                }
                requestID += 1
                engines[engineIndex].submit(EngineModel.Request(
                    id: requestID, blocks: request.blockIDs, inputTokens: request.inputTokens,
                    outputTokens: request.outputTokens, arrival: time
                ))
                inFlight[engineIndex][requestID] = InFlight(record: index, token: token, blocks: oracle == nil ? [] : request.blockIDs)
                if oracle != nil { for block in request.blockIDs { queuedBlocks[engineIndex][block, default: 0] += 1 } }
                records[index].worker = ids[engineIndex]
            } catch {
                records[index].error = error.description
            }
        }
        func shed(_ index: Int, _ reason: ShedReason, at time: Double) {
            records[index].error = "shed: \(reason.rawValue)"
            records[index].shedReason = reason.rawValue
            records[index].shedAfter = time - records[index].sentAt
        }
        var queue: AdmissionQueue<Int>?
        /// Places what the queue can place now (after anything that may have freed capacity).
        func admit(at time: Double, now: Milliseconds) {
            guard var pending = queue, pending.count > 0 else { return }
            let policy = pending.policy
            pending.drain(
                model: "m", now: now,
                predict: { entry in try? router.predictTTFT(routingRequest(entry.item), state: state, now: now, policy: policy) },
                dispatch: { entry, ceiling in dispatch(entry.item, at: time, now: now, ceiling: ceiling) },
                shed: { entry, reason in shed(entry.item, reason, at: time) }
            )
            queue = pending
        }

        while true {
            var time = Double.infinity
            var step = Step.iterate
            var engine = 0
            func consider(_ candidate: Double, _ kind: Step, _ index: Int = 0) {
                if candidate < time || (candidate == time && kind < step) {
                    time = candidate
                    step = kind
                    engine = index
                }
            }
            if next < sent { consider(arrivals[next], .arrival) }
            for index in 0..<workers {
                if !delivered[index].isEmpty {
                    consider(engines[index].now, .deliver, index)
                } else if let start = engines[index].nextStart {
                    consider(start, .iterate, index)
                }
            }
            guard time.isFinite || (queue?.count ?? 0) > 0 else { break }
            consider(nextPoll, .poll)
            consider(nextFlush, .flush)
            let now = milliseconds(time)

            switch step {
            case .arrival:
                let index = next
                next += 1
                records[index].priority = trace[index].priority
                guard let admission else {
                    dispatch(index, at: time, now: now)
                    continue
                }
                if queue == nil { queue = AdmissionQueue(policy: admission) }
                let predicted = try? router.predictTTFT(routingRequest(index), state: state, now: now, policy: admission)
                let (verdict, displaced) = queue!.arrive(
                    model: "m", priority: trace[index].priority, promptTokens: trace[index].inputTokens, now: now,
                    predicted: predicted, drainTokensPerMillisecond: router.prefillTokensPerMillisecond(model: "m", state: state),
                    item: index
                )
                for entry in displaced { shed(entry.item, .queueFull, at: time) }
                switch verdict {
                case .dispatch(let ceiling): dispatch(index, at: time, now: now, ceiling: ceiling)
                case .queued: break
                case .shed(let reason, _): shed(index, reason, at: time)
                }
            case .iterate:
                delivered[engine] = engines[engine].step()
                // The model always either runs an iteration or waits for a later arrival.
                precondition(!delivered[engine].isEmpty || engines[engine].nextStart != time, "engine \(engine + 1) stalled at \(time) s")
            case .deliver:
                for event in delivered[engine] {
                    switch event {
                    case .firstToken(let id, let at, let cached):
                        guard let flight = inFlight[engine][id] else { continue }
                        records[flight.record].ttft = at - records[flight.record].sentAt
                        records[flight.record].cachedTokens = cached
                    case .finished(let id, let at):
                        guard let flight = inFlight[engine].removeValue(forKey: id) else { continue }
                        records[flight.record].endToEnd = at - records[flight.record].sentAt
                        if let token = flight.token { _ = try? router.release(token: token) }
                        forget(flight, on: engine)
                    case .rejected(let id, let reason):
                        guard let flight = inFlight[engine].removeValue(forKey: id) else { continue }
                        records[flight.record].error = reason
                        if let token = flight.token { _ = try? router.release(token: token) }
                        forget(flight, on: engine)
                    case .token:
                        continue
                    }
                }
                delivered[engine] = []
                admit(at: time, now: now)
            case .poll:
                if reportsEvictions {
                    for index in 0..<workers {
                        let removed = engines[index].takeKVEvents().compactMap { event -> UInt64? in
                            if case .removed(let block) = event { return block } else { return nil }
                        }
                        if !removed.isEmpty { evicted.append(PrefixRecord(workerID: ids[index], blocks: removed)) }
                    }
                }
                for (index, model) in engines.enumerated() {
                    polled[ids[index]] = EngineLoad(
                        runningRequests: model.runningRequests, waitingRequests: model.waitingRequests,
                        queuedPrefillTokens: model.queuedPrefillTokens, kvBlocksUsed: model.kvBlocksUsed,
                        kvBlocksTotal: model.kvBlocksTotal, stepLatencyMilliseconds: model.lastIterationSeconds * 1_000,
                        reportedAt: now
                    )
                }
                nextPoll += statusIntervalMilliseconds / 1_000
            case .flush:
                var commands: [BalancerCommand] = []
                if !polled.isEmpty { commands.append(.reportLoads(polled)) }
                if !evicted.isEmpty { commands.append(.evictPrefixes(evicted)) }
                polled = [:]
                evicted = []
                let pending = router.takePendingCommand()
                if let pending { commands.append(pending.command) }
                if !commands.isEmpty { apply(.batch(commands), at: now) }
                if let pending { router.commandApplied(generation: pending.generation) }
                nextFlush += flushIntervalMilliseconds / 1_000
                admit(at: time, now: now)
            }
        }
        return OfflineReplay.Result(summary: ReplaySummary(name: name, records: records, workers: ids), records: records)
    }

    /// The engine an oracle picks for `request`.
    static func place(_ request: TraceRequest, on engines: [EngineModel], queued: [[UInt64: Int]], oracle: Oracle, profile: EngineProfile) -> Int {
        let candidates = engines.indices.map { index in
            var matched = engines[index].cachedPrefix(request.blockIDs)
            while matched < request.blockIDs.count, queued[index][request.blockIDs[matched]] != nil { matched += 1 }
            let uncached = max(1, request.inputTokens - matched * profile.blockSize)
            let queued = engines[index].queuedPrefillTokens
            return (index: index, matched: matched, queued: queued, seconds: Double(queued + uncached) / profile.linearTokensPerSecond)
        }
        let fastest = candidates.min { ($0.seconds, -$0.matched) < ($1.seconds, -$1.matched) }!
        switch oracle {
        case .shortestTTFT:
            return fastest.index
        case .longestPrefix:
            let least = candidates.map(\.queued).min()!
            let affine = candidates.filter { $0.queued <= least + profile.maxBatchedTokens }
                .max { ($0.matched, -$0.queued) < ($1.matched, -$1.queued) }!
            return affine.matched > 0 ? affine.index : fastest.index
        }
    }
}
