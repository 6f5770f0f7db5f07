public import Balancer

/// A trace straight through the balancer's router, with no timing: every worker is a plain LRU
/// cache of block ids of fixed capacity, and a request's hit is how long a prefix of its blocks
/// the chosen worker really holds (not what the router believes). Each request keeps its
/// reservation until `window` later requests have been routed, which gives load-aware
/// strategies something to balance.
public struct OfflineReplay: Sendable {
    public var workers: Int
    public var capacityBlocks: Int
    public var window: Int
    public var tokensPerBlock: Int

    public init(workers: Int = 8, capacityBlocks: Int = 800, window: Int = 32, tokensPerBlock: Int = Trace.mooncakeTokensPerBlock) {
        self.workers = workers
        self.capacityBlocks = capacityBlocks
        self.window = window
        self.tokensPerBlock = tokensPerBlock
    }

    public struct Result: Sendable {
        public var summary: ReplaySummary
        public var records: [RequestRecord]
    }

    public func run(_ trace: [TraceRequest], strategy: StrategyKind, name: String? = nil) throws -> Result {
        let ids = (0..<workers).map { "w\($0)" }
        var state = BalancerState()
        var clock: Milliseconds = 1
        func apply(_ command: BalancerCommand) {
            clock += 1
            state.apply(CommandEnvelope(issuedAt: clock, command: command))
        }
        var settings = RoutingSettings()
        settings.prefixBlocksPerWorker = capacityBlocks
        apply(.setSettings(settings))
        apply(.setDefaultPolicy(ModelPolicy(strategies: [.pdfusion: strategy])))
        for id in ids {
            apply(.registerWorker(Worker(
                id: id, model: "m", role: .pdfusion, address: "\(id):1",
                capacity: WorkerCapacity(kvBlocks: capacityBlocks, blockSize: tokensPerBlock)
            )))
        }
        var router = Router(seed: 42)
        var caches = [LRUList](repeating: LRUList(), count: workers)
        var records: [RequestRecord] = []
        var tokens: [UInt64] = []
        for (index, request) in trace.enumerated() {
            let routing = RoutingRequest(
                model: "m", requestID: "r\(index)", prompt: .blocks(request.blockIDs), promptTokens: request.inputTokens,
                tokensPerBlock: tokensPerBlock, expectedOutputTokens: request.outputTokens, roles: [.pdfusion]
            )
            let decision: RoutingDecision
            do {
                decision = try router.route(routing, state: state, now: clock)
            } catch {
                records.append(RequestRecord(index: index, sentAt: request.timestampMilliseconds / 1000, inputTokens: request.inputTokens, error: error.description))
                continue
            }
            tokens.append(decision.releaseToken)
            if tokens.count > window { _ = try? router.release(token: tokens.removeFirst()) }
            let worker = Int(decision.targets[0].workerID.dropFirst())!
            var matched = 0
            for block in request.blockIDs {
                guard caches[worker].contains(block) else { break }
                matched += 1
            }
            for block in request.blockIDs {
                caches[worker].append(block)
                if caches[worker].count > capacityBlocks { _ = caches[worker].popOldest() }
            }
            let cached = min(matched * tokensPerBlock, request.inputTokens)
            records.append(RequestRecord(
                index: index, sentAt: request.timestampMilliseconds / 1000, ttft: 0, endToEnd: 0, inputTokens: request.inputTokens,
                cachedTokens: cached, worker: decision.targets[0].workerID
            ))
            if let pending = router.takePendingCommand() {
                apply(pending.command)
                router.commandApplied(generation: pending.generation)
            }
        }
        return Result(summary: ReplaySummary(name: name ?? strategy.name, records: records, workers: ids), records: records)
    }
}
