public import Balancer
import Foundation

/// Routing strategies over many workloads in virtual time, each hit ratio read against what
/// was reachable (`fulcrum-sim evaluate`, Docs/benchmarks.md "Routing evaluation").
///
/// The workloads come in two sets kept apart, so that defaults are not fitted to what they are
/// judged on: **tuning** (the Mooncake trace, and seeds 1, 2, 11 and 12 of the generated
/// families) is what defaults may be chosen on; **held-out** (seeds 21 and 22 of those
/// families, and of `azure_code`, a family never used for tuning) is what they are reported on
/// once frozen. Seeds 11 and 12 were the first held-out set; they were looked at once, before
/// any change, and so moved to tuning (Docs/benchmarks.md).
public struct RoutingEvaluation: Sendable {
    public enum Split: String, Sendable, CaseIterable {
        case tuning
        case heldOut = "held_out"
    }

    /// The generated families used for tuning.
    static let generated: [WorkloadFamily] = [.multiTurn, .sharedPrefix, .toolAgent, .azure, .mix]

    public static func workloads(_ split: Split, loads: [Double], durationSeconds: Double, tracesDirectory: String) -> [Workload] {
        let families: [(WorkloadFamily, [UInt64])]
        switch split {
        case .tuning:
            families = [(.mooncake, [0])] + generated.map { ($0, [1, 2, 11, 12]) }
        case .heldOut:
            families = (generated + [.azureCode]).map { ($0, [21, 22]) }
        }
        return families.flatMap { family, seeds in
            seeds.flatMap { seed in
                loads.map { Workload(family: family, seed: seed, load: $0, durationSeconds: durationSeconds, tracesDirectory: tracesDirectory) }
            }
        }
    }

    /// Strategies that run with perfect knowledge of evictions as candidates for the oracle.
    public static let oracleStrategies: [StrategyKind] = [.cacheAware, .shortestTTFT]

    public var profile: EngineProfile
    public var engines: Int
    public var strategies: [StrategyKind]
    /// Changes to the routing settings of the strategies under test (not the oracle's), for
    /// tuning: applied to the defaults, whose prefix-index cap is the engines' capacity.
    public var adjustSettings: @Sendable (inout RoutingSettings) -> Void = { _ in }

    public init(profile: EngineProfile = .h100_8b, engines: Int = 8, strategies: [StrategyKind]) {
        self.profile = profile
        self.engines = engines
        self.strategies = strategies
    }

    /// One workload's figures.
    public struct Row: Sendable {
        public var workload: String
        public var requests: Int
        /// One unlimited shared cache.
        public var infiniteCache: Double
        /// The fleet's capacity as one cache under Belady's replacement (an upper bound).
        public var pooledOptimal: Double
        /// The best of the perfect-information placements (``TimedReplay/Oracle``) and of
        /// ``RoutingEvaluation/oracleStrategies`` told every eviction at once.
        public var oracle: ReplaySummary
        public var strategies: [ReplaySummary]

        public func fractionOfOracle(_ summary: ReplaySummary) -> Double {
            oracle.hitRatio > 0 ? summary.hitRatio / oracle.hitRatio : 1
        }
    }

    public func evaluate(_ workload: Workload) throws -> Row {
        let trace = try workload.generate()
        var timing = profile
        timing.blockSize = workload.tokensPerBlock
        let replay = TimedReplay(workers: engines, profile: timing)
        var tuned = replay
        adjustSettings(&tuned.settings)
        // The oracle: the best of the perfect-information placements, and of the strategies
        // (with the settings under test) given the engines' evictions as they happen, with
        // status and flushes every 10 ms.
        var precise = TimedReplay(workers: engines, profile: timing, statusIntervalMilliseconds: 10, flushIntervalMilliseconds: 10)
        precise.reportsEvictions = true
        adjustSettings(&precise.settings)
        let oracles = TimedReplay.Oracle.allCases.map { replay.run(trace, oracle: $0).summary }
            + Self.oracleStrategies.map { precise.run(trace, strategy: $0, name: "precise \($0.name)").summary }
        return Row(
            workload: workload.description, requests: trace.count,
            infiniteCache: CacheBounds.infiniteCache(trace, tokensPerBlock: timing.blockSize),
            pooledOptimal: CacheBounds.pooledOptimal(trace, tokensPerBlock: timing.blockSize, capacityBlocks: timing.kvCapacityBlocks * engines),
            oracle: oracles.max { $0.hitRatio < $1.hitRatio }!,
            strategies: strategies.map { tuned.run(trace, strategy: $0).summary }
        )
    }

    /// Every workload, `parallelism` at a time, rows in the workloads' order.
    public func evaluate(_ workloads: [Workload], parallelism: Int, progress: @Sendable (Row) -> Void = { _ in }) async throws -> [Row] {
        try await withThrowingTaskGroup(of: (Int, Row).self) { group in
            var rows = [Row?](repeating: nil, count: workloads.count)
            var next = 0
            func start() {
                let index = next
                let workload = workloads[index]
                group.addTask { (index, try self.evaluate(workload)) }
                next += 1
            }
            while next < min(max(1, parallelism), workloads.count) { start() }
            while let (index, row) = try await group.next() {
                rows[index] = row
                progress(row)
                if next < workloads.count { start() }
            }
            return rows.map { $0! }
        }
    }

    // MARK: Tables

    public var tableHeader: String {
        let names = strategies.map(\.name)
        return "| workload | requests | infinite | pooled optimal | oracle (hit / p99) | "
            + names.map { "\($0) (hit / of oracle / p99)" }.joined(separator: " | ") + " |\n"
            + "|---|---:|---:|---:|---:|" + names.map { _ in "---:|" }.joined()
    }

    public func tableRow(_ row: Row) -> String {
        func percent(_ value: Double) -> String { String(format: "%.1f %%", value * 100) }
        func seconds(_ value: Double) -> String { String(format: value < 10 ? "%.2f s" : "%.1f s", value) }
        return "| \(row.workload) | \(row.requests) | \(percent(row.infiniteCache)) | \(percent(row.pooledOptimal)) | "
            + "\(percent(row.oracle.hitRatio)) / \(seconds(row.oracle.ttftP99)) (\(row.oracle.name)) | "
            + row.strategies.map { "\(percent($0.hitRatio)) / \(String(format: "%.0f %%", row.fractionOfOracle($0) * 100)) / \(seconds($0.ttftP99))" }
            .joined(separator: " | ") + " |"
    }

    /// Per strategy: the lowest fraction of the oracle over the rows, and where.
    public func worstCases(_ rows: [Row]) -> String {
        strategies.enumerated().map { index, strategy in
            let worst = rows.min { $0.fractionOfOracle($0.strategies[index]) < $1.fractionOfOracle($1.strategies[index]) }
            guard let worst else { return "" }
            let mean = rows.map { $0.fractionOfOracle($0.strategies[index]) }.reduce(0, +) / Double(rows.count)
            let below = rows.filter { $0.fractionOfOracle($0.strategies[index]) < 0.9 }.count
            return String(
                format: "%@: mean %.0f %% of the oracle, lowest %.0f %% (%@), %d of %d rows below 90 %%",
                strategy.name, mean * 100, worst.fractionOfOracle(worst.strategies[index]) * 100, worst.workload, below, rows.count
            )
        }.joined(separator: "\n")
    }
}
