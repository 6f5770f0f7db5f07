import ArgumentParser
import Balancer

/// Measures one routing decision per strategy: a pool of N workers with live load and a warm
/// prefix index, 4,096-token prompts (256 blocks of 16 tokens) of which the first quarter comes
/// from one of a few shared system prompts. Side effects are flushed into the state every 100
/// decisions, as the node does every flush interval; flushing is not timed.
@main
struct BalancerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum-balancer-bench",
        abstract: "Time routing decisions per strategy and pool size (median and p99)."
    )

    @Option(help: "Pool sizes, comma-separated.") var workers: String = "16,256,1024"
    @Option(help: "Timed decisions per strategy and pool size.") var decisions: Int = 20_000
    @Option(help: "Prompt length in blocks of 16 tokens.") var blocks: Int = 256
    @Option(help: "Strategies, comma-separated (default: all but sticky, resource_aware timed separately).")
    var strategies: String?

    func validate() throws {
        guard decisions >= 100 else { throw ValidationError("--decisions must be at least 100") }
        guard blocks > 0 else { throw ValidationError("--blocks must be positive") }
        for size in sizes() where size < 2 { throw ValidationError("pool sizes must be at least 2") }
        for name in strategyNames() where StrategyKind(name: name) == nil {
            throw ValidationError("unknown strategy '\(name)'")
        }
    }

    func sizes() -> [Int] { workers.split(separator: ",").compactMap { Int($0) } }

    func strategyNames() -> [String] {
        strategies.map { $0.split(separator: ",").map(String.init) } ?? StrategyKind.allCases.map(\.name)
    }

    func run() throws {
        print("decision time: \(blocks)-block prompts (\(blocks * 16) tokens), \(decisions) decisions each, release build")
        print("strategy          workers   median µs   p99 µs   decisions/s")
        for size in sizes() {
            for name in strategyNames() {
                let strategy = StrategyKind(name: name)!
                let micros = measure(strategy: strategy, poolSize: size)
                let median = micros[micros.count / 2]
                let p99 = micros[micros.count * 99 / 100]
                let mean = micros.reduce(0, +) / Double(micros.count)
                print(
                    pad(name, 16) + pad(String(size), 9, left: true) + pad(format(median), 12, left: true)
                        + pad(format(p99), 9, left: true) + pad(String(Int(1e6 / mean)), 14, left: true)
                )
            }
        }
    }

    func measure(strategy: StrategyKind, poolSize: Int) -> [Double] {
        var random = SeededGenerator(seed: UInt64(poolSize) &* 31 &+ UInt64(strategy.rawValue))
        var state = BalancerState()
        let tier = ResourceTier(vCPUs: 2, memoryBytes: 4 << 30, gpus: 1, gpuMemoryBytes: 10 << 30)
        var setup: [BalancerCommand] = [
            .setTier(name: "standard", tier: tier),
            .setPolicy(model: "m", policy: ModelPolicy(strategies: [.pdfusion: strategy], stickyFallback: .cacheAware)),
        ]
        for index in 0..<poolSize {
            setup.append(.registerWorker(Worker(
                id: "worker-\(index)", model: "m", role: .pdfusion, address: "127.0.0.1:\(10_000 + index)",
                capacity: WorkerCapacity(kvBlocks: 20_000, blockSize: 16, maxBatch: 256),
                resources: WorkerResources(
                    coreLoads: (0..<32).map { _ in random.unit() }, memoryTotalBytes: 512 << 30,
                    memoryUsedBytes: UInt64(random.below(256)) << 30, diskTotalBytes: 1 << 40,
                    gpus: (0..<8).map { _ in GPUStatus(utilization: random.unit(), memoryTotalBytes: 80 << 30, memoryUsedBytes: 20 << 30) }
                ),
                health: .healthy,
                load: EngineLoad(
                    runningRequests: random.below(32), waitingRequests: random.below(4),
                    queuedPrefillTokens: random.below(8000), kvBlocksUsed: random.below(18_000),
                    kvBlocksTotal: 20_000, stepLatencyMilliseconds: 20, reportedAt: 0
                )
            )))
        }
        state.apply(CommandEnvelope(issuedAt: 1, command: .batch(setup)))
        let hasher = BlockHasher()
        let systemPrompts = 16
        func prompt(_ index: Int) -> [BlockHash] {
            let system = (0..<(blocks / 4)).map { UInt64(index % systemPrompts) &* 1_000_000 &+ UInt64($0) }
            let user = (0..<(blocks - blocks / 4)).map { UInt64(index) &* 1_000_003 &+ UInt64($0) &+ 1 << 40 }
            return hasher.chain(blockIDs: system + user, model: "m")
        }
        var router = Router(seed: 42)
        var inFlight: [UInt64] = []
        var micros: [Double] = []
        micros.reserveCapacity(decisions)
        let warmup = 2_000
        let clock = ContinuousClock()
        for index in 0..<(warmup + decisions) {
            let request = RoutingRequest(
                model: "m", requestID: "request-\(index)", sessionKey: "session-\(index % 500)",
                prompt: .blocks(prompt(index)), promptTokens: blocks * 16, expectedOutputTokens: 256,
                roles: [.pdfusion], tier: "standard"
            )
            let started = clock.now
            let decision = try? router.route(request, state: state, now: 1_000 + UInt64(index))
            let elapsed = clock.now - started
            if index >= warmup {
                micros.append(Double(elapsed.components.attoseconds) / 1e12 + Double(elapsed.components.seconds) * 1e6)
            }
            if let decision { inFlight.append(decision.releaseToken) }
            if inFlight.count > poolSize * 4 { _ = try? router.release(token: inFlight.removeFirst()) }
            if index % 100 == 99, let (generation, command) = router.takePendingCommand() {
                state.apply(CommandEnvelope(issuedAt: 1_000 + UInt64(index), command: command))
                router.commandApplied(generation: generation)
            }
        }
        return micros.sorted()
    }
}

func format(_ value: Double) -> String {
    let rounded = (value * 100).rounded() / 100
    var text = String(rounded)
    if let dot = text.firstIndex(of: ".") {
        let decimals = text.distance(from: dot, to: text.endIndex) - 1
        if decimals < 2 { text += String(repeating: "0", count: 2 - decimals) }
    }
    return text
}

func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
    let padding = String(repeating: " ", count: max(0, width - text.count))
    return left ? padding + text : text + padding
}
