import Balancer
import Simulator
import Testing

/// Issue 20: admission control driven by the virtual-time replay. Deterministic (seeded
/// workload and priorities); the figures the benchmark reads come from the same code.
@Suite struct AdmissionReplayTests {
    static func run(load: Double, admission: AdmissionPolicy?) throws -> [RequestRecord] {
        let trace = TraceRequest.withPriorities(
            try Workload(family: .sharedPrefix, seed: 1, load: load, durationSeconds: 60).generate(), highFraction: 0.2, seed: 7
        )
        var replay = TimedReplay(workers: 4, profile: .h100_8b, duration: 60)
        replay.admission = admission
        return replay.run(trace, strategy: .cacheAware).records
    }

    static func p99(_ records: [RequestRecord], priority: Int) -> Double {
        ReplaySummary.percentile(records.filter { $0.priority == priority && $0.error == nil }.compactMap(\.ttft).sorted(), 0.99)
    }

    @Test func underOverloadAdmissionAnswersEveryRequestAndShieldsTheHighClass() throws {
        let open = try Self.run(load: 4, admission: nil)
        let admitted = try Self.run(load: 4, admission: AdmissionPolicy())
        // Every request is answered: completed, or shed with a reason, never dropped.
        for record in admitted {
            #expect((record.ttft != nil && record.error == nil) || record.shedReason != nil, "request \(record.index) neither served nor shed")
            if let reason = record.shedReason { #expect(ShedReason(rawValue: reason) != nil) }
        }
        // The high class is shielded from the low class's backlog.
        let before = Self.p99(open, priority: 90)
        let after = Self.p99(admitted, priority: 90)
        #expect(after < before, "high-priority TTFT p99 \(after) s with admission, \(before) s without")
        // Queued requests are placed or shed by their class's deadline.
        for record in admitted where record.shedReason == ShedReason.deadline.rawValue {
            let deadline = record.priority == 90 ? 10.0 : 60.0
            #expect(record.shedAfter! <= deadline + 0.2)
        }
    }

    @Test func belowCapacityAdmissionChangesNothing() throws {
        let open = try Self.run(load: 0.5, admission: nil)
        let admitted = try Self.run(load: 0.5, admission: AdmissionPolicy())
        #expect(admitted.allSatisfy { $0.shedReason == nil && $0.error == nil })
        // Nothing waits, so nothing gets worse (placements may differ: a saturated worker is
        // passed over even then).
        let before = ReplaySummary(name: "open", records: open)
        let after = ReplaySummary(name: "admitted", records: admitted)
        #expect(after.hitRatio >= before.hitRatio - 0.01, "hit ratio \(after.hitRatio) with admission, \(before.hitRatio) without")
        #expect(after.ttftP99 <= before.ttftP99 * 1.1 + 0.05, "TTFT p99 \(after.ttftP99) s with admission, \(before.ttftP99) s without")
    }
}
