import Raft

/// Runs many seeds and summarizes them; shared by the test suite and the command-line tool.
public struct SeedRunSummary: Sendable {
    public var seeds = 0
    public var failures: [SimulationReport] = []
    public var ticks = 0
    public var writesAcknowledged = 0
    public var readsCompleted = 0
    public var faults = 0
    public var recoveryTicks: [Int] = []

    public init() {}

    public mutating func add(_ report: SimulationReport) {
        seeds += 1
        ticks += report.ticks
        writesAcknowledged += report.writesAcknowledged
        readsCompleted += report.readsCompleted
        faults += report.crashes + report.crashPoints + report.partitions + report.membershipChanges + report.transfers
        if let recovery = report.recoveryTicks { recoveryTicks.append(recovery) }
        if !report.passed { failures.append(report) }
    }

    public mutating func merge(_ other: SeedRunSummary) {
        seeds += other.seeds
        failures += other.failures
        ticks += other.ticks
        writesAcknowledged += other.writesAcknowledged
        readsCompleted += other.readsCompleted
        faults += other.faults
        recoveryTicks += other.recoveryTicks
    }

    /// Median and worst ticks from healing to a committed write on every member.
    public var recoveryMedianAndMax: (median: Int, max: Int)? {
        guard !recoveryTicks.isEmpty else { return nil }
        let sorted = recoveryTicks.sorted()
        return (sorted[sorted.count / 2], sorted.last!)
    }
}

public enum SeedRunner {
    /// Runs `seeds` with the mixed options of ``SimulationOptions/mixed(seed:)``.
    public static func run<Seeds: Sequence<UInt64>>(_ seeds: Seeds, configure: (inout SimulationOptions) -> Void = { _ in }) -> SeedRunSummary {
        var summary = SeedRunSummary()
        for seed in seeds {
            var options = SimulationOptions.mixed(seed: seed)
            configure(&options)
            summary.add(ClusterSimulation(options: options).run())
        }
        return summary
    }
}
