import Raft
import RaftTestKit
import Testing

/// The deterministic cluster simulator over many seeds. Each seed picks a cluster size (3, 5 or
/// 7) and a fault profile; see `Docs/raft.md` for the fault model and the properties checked.
/// A failing seed replays with `Scripts/raft-replay.sh SEED`.
@Suite struct SimulationTests {
    static let chunks = 20
    static let seedsPerChunk: UInt64 = 100

    @Test("2,000 mixed seeds keep every safety and liveness property", arguments: 0..<chunks)
    func mixedSeeds(chunk: Int) {
        let first = UInt64(chunk) * Self.seedsPerChunk + 1
        let summary = SeedRunner.run(first..<(first + Self.seedsPerChunk))
        for failure in summary.failures {
            Issue.record("seed \(failure.options.seed) failed: \(failure.violation!) — replay: Scripts/raft-replay.sh \(failure.options.seed)")
        }
        #expect(summary.seeds == Int(Self.seedsPerChunk))
        #expect(summary.writesAcknowledged > 0)
    }

    @Test("the simulation really injects every kind of fault")
    func faultsAreExercised() {
        var reports: [SimulationReport] = []
        for seed in UInt64(1)...120 { reports.append(ClusterSimulation(options: .mixed(seed: seed)).run()) }
        func total(_ field: (SimulationReport) -> Int) -> Int { reports.reduce(0) { $0 + field($1) } }
        let totals = (
            crashes: total(\.crashes), crashPoints: total(\.crashPoints), partitions: total(\.partitions),
            membershipChanges: total(\.membershipChanges), transfers: total(\.transfers),
            snapshotsSent: total(\.snapshotsSent), compactions: total(\.compactions),
            messagesDropped: total(\.messagesDropped), readsCompleted: total(\.readsCompleted),
            writesUnknown: total(\.writesUnknown)
        )
        #expect(totals.crashes > 20)
        #expect(totals.crashPoints > 5)
        #expect(totals.partitions > 20)
        #expect(totals.membershipChanges > 20)
        #expect(totals.transfers > 10)
        #expect(totals.snapshotsSent > 20)
        #expect(totals.compactions > 100)
        #expect(totals.messagesDropped > 1000)
        #expect(totals.readsCompleted > 1000)
        #expect(totals.writesUnknown > 0, "some operations end with an unknown outcome, as they must under faults")
    }

    @Test("the same seed gives the same run, event for event")
    func runsAreDeterministic() {
        for seed: UInt64 in [3, 77, 1234] {
            let first = ClusterSimulation(options: .mixed(seed: seed), tracing: true).run()
            let second = ClusterSimulation(options: .mixed(seed: seed), tracing: true).run()
            #expect(first.trace == second.trace)
            #expect(first.description == second.description)
            #expect(!first.trace.isEmpty)
        }
    }

    @Test("every fault profile passes on every cluster size", arguments: FaultProfile.all.map(\.name), [3, 5, 7])
    func profileAndSize(profile: String, size: Int) {
        let faults = FaultProfile.all.first { $0.name == profile }!
        for seed in UInt64(1)...5 {
            var options = SimulationOptions(seed: seed &* 7919, nodeCount: size, faults: faults)
            options.faultTicks = 300
            let report = ClusterSimulation(options: options).run()
            #expect(report.passed, "\(report)")
        }
    }
}

@Suite struct LinearizabilityCheckerTests {
    func write(_ value: UInt64, _ start: UInt64, _ end: UInt64?, key: UInt8 = 0) -> RegisterOperation {
        RegisterOperation(key: key, kind: .write(value), invokedAt: start, completedAt: end)
    }

    func read(_ value: UInt64, _ start: UInt64, _ end: UInt64, key: UInt8 = 0) -> RegisterOperation {
        RegisterOperation(key: key, kind: .read(value), invokedAt: start, completedAt: end)
    }

    func isLinearizable(_ history: [RegisterOperation]) -> Bool {
        if case .linearizable = LinearizabilityChecker.check(history) { return true }
        return false
    }

    @Test func sequentialHistoryIsLinearizable() {
        #expect(isLinearizable([write(1, 1, 2), read(1, 3, 4), write(2, 5, 6), read(2, 7, 8)]))
    }

    @Test func staleReadAfterCompletedWriteIsNot() {
        #expect(!isLinearizable([write(1, 1, 2), write(2, 3, 4), read(1, 5, 6)]))
    }

    @Test func overlappingOperationsMayTakeEitherOrder() {
        #expect(isLinearizable([write(1, 1, 10), read(0, 2, 3), read(1, 4, 5)]))
        #expect(isLinearizable([write(1, 1, 10), write(2, 2, 9), read(2, 11, 12)]))
        #expect(isLinearizable([write(1, 1, 10), write(2, 2, 9), read(1, 11, 12)]))
    }

    @Test func readsCannotGoBackInTime() {
        // Once a read saw the new value, a later read cannot see the old one.
        #expect(!isLinearizable([write(1, 1, 10), read(1, 2, 3), read(0, 4, 5)]))
    }

    @Test func unknownWriteMayOrMayNotTakeEffect() {
        #expect(isLinearizable([write(1, 1, nil), read(0, 2, 3)]))
        #expect(isLinearizable([write(1, 1, nil), read(1, 2, 3)]))
        #expect(isLinearizable([write(1, 1, nil), read(1, 2, 3), read(0, 4, 5)]) == false)
    }

    @Test func readOfAValueNeverWrittenIsNot() {
        #expect(!isLinearizable([write(1, 1, 2), read(5, 3, 4)]))
    }

    @Test func keysAreCheckedIndependently() {
        let history = [write(1, 1, 2, key: 0), write(7, 1, 2, key: 1), read(7, 3, 4, key: 1), read(1, 3, 4, key: 0)]
        #expect(isLinearizable(history))
        let broken = history + [read(0, 5, 6, key: 1)]
        guard case .violation(let violation) = LinearizabilityChecker.check(broken) else {
            Issue.record("expected a violation")
            return
        }
        #expect(violation.key == 1)
    }

    @Test func unobservedUnknownWritesChangeNoVerdict() {
        // Dropped or not, the verdict is the same: fine, and a stale read still caught.
        #expect(isLinearizable([write(1, 1, 2), write(9, 3, nil), read(1, 4, 5), write(2, 6, 7), read(2, 8, 9)]))
        #expect(!isLinearizable([write(1, 1, 2), write(9, 3, nil), write(2, 4, 5), read(1, 6, 7)]))
        // An unknown write that a read saw still counts: its value cannot come back later.
        #expect(!isLinearizable([write(1, 1, 2), write(9, 3, nil), read(9, 4, 5), read(1, 6, 7)]))
        #expect(LinearizabilityChecker.withoutUnobservedUnknownWrites([write(1, 1, nil), write(2, 1, nil), read(2, 3, 4)]).count == 2)
    }

    @Test func thousandsOfUnknownWritesStayWithinBudget() {
        // Every third write times out and is never read, as in a long nemesis run.
        var history: [RegisterOperation] = []
        for value in UInt64(1)...3_000 {
            history.append(write(value, value * 10, value % 3 == 0 ? nil : value * 10 + 15))
            if value % 3 != 0 { history.append(read(value, value * 10 + 16, value * 10 + 17)) }
        }
        #expect(isLinearizable(history))
    }

    @Test func largeConcurrentHistoryStaysFast() {
        // 200 overlapping writes and reads of distinct values, all consistent with write order.
        var history: [RegisterOperation] = []
        for value in UInt64(1)...200 {
            history.append(write(value, value * 10, value * 10 + 15))
            history.append(read(value, value * 10 + 16, value * 10 + 17))
        }
        #expect(isLinearizable(history))
    }
}

/// Issue 16: hostile peers. 2,000 seeds of the hostile-peer profile: messages at the integer
/// limit, lying or non-contiguous appends, acknowledgements past the log, impossible snapshots
/// and a non-member's vote requests, all screened as the runtime screens them (none reaching a
/// precondition of the core), with every safety and liveness property still checked.
@Suite struct HostilePeerSimulationTests {
    static let chunks = 20
    static let seedsPerChunk: UInt64 = 100

    @Test("2,000 hostile-peer seeds: no trap, no safety violation", arguments: 0..<chunks)
    func hostileSeeds(chunk: Int) {
        let first = 1_000_000 + UInt64(chunk) * Self.seedsPerChunk
        var hostile = 0
        var screened = 0
        var summary = SeedRunSummary()
        for seed in first..<(first + Self.seedsPerChunk) {
            var options = SimulationOptions.mixed(seed: seed)
            options.faults = .hostilePeers
            let report = ClusterSimulation(options: options).run()
            hostile += report.hostileMessages
            screened += report.messagesScreened
            summary.add(report)
        }
        for failure in summary.failures {
            Issue.record("seed \(failure.options.seed) failed: \(failure.violation!)")
        }
        #expect(hostile > 1_000, "hostile messages were injected: \(hostile)")
        #expect(screened > hostile / 2, "the screen dropped most of them: \(screened) of \(hostile)")
    }
}
