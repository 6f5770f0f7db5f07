import Foundation
import FulcrumAPI
import Testing

/// Storage faults on real processes through the fault VFS (`fault_injection`): power loss that
/// undoes every write not yet fsynced, a full disk, I/O errors. What Raft promises: a write the
/// cluster acknowledged survives them on a majority; a node that cannot write stops instead of
/// acknowledging.
@Suite(.serialized) struct StorageFaultTests {
    static let environment = ["FULCRUM_FAULT_INJECTION": "true", "FULCRUM_LOG_LEVEL": "warning"]

    /// Registers `count` workers through the leader; the ids acknowledged.
    static func register(_ count: Int, prefix: String, on cluster: ProcessCluster) async throws -> [String] {
        var acknowledged: [String] = []
        for index in 0..<count {
            let leader = try await cluster.leader()
            // The leader may be the node whose disk just failed: a refused connection is no ack.
            if (try? await cluster.register("\(prefix)\(index)", via: leader)) == true { acknowledged.append("\(prefix)\(index)") }
        }
        return acknowledged
    }

    static func powerLossOfEveryNode(_ cluster: ProcessCluster) async throws -> Int64 {
        var unsynced: Int64 = 0
        for id in cluster.founders {
            unsynced += try await cluster.fault(id, "{}").decode(FaultState.self)?.unsyncedBytes ?? 0
        }
        for id in cluster.founders { try await cluster.powerLoss(id) }
        for id in cluster.founders { try cluster.start(id) }
        try await cluster.waitUntilReady(timeout: 30)
        return unsynced
    }

    /// 40 acknowledged registrations, a power loss of every node at once, a restart: the
    /// registrations lost, and how many bytes had not been synced when the power went.
    static func powerLossRun(durability: String) async throws -> (lost: Set<String>, unsynced: Int64) {
        let cluster = try ProcessCluster(founders: 3, environment: environment.merging(["FULCRUM_DURABILITY": durability]) { $1 })
        defer { cluster.stopAll() }
        try await cluster.waitUntilReady(timeout: 30)
        let acknowledged = try await register(40, prefix: "w", on: cluster)
        #expect(acknowledged.count == 40)
        let unsynced = try await powerLossOfEveryNode(cluster)
        let leader = try await cluster.leader()
        let present = Set(try await cluster.workers(on: leader, consistent: true))
        return (Set(acknowledged).subtracting(present), unsynced)
    }

    @Test(.timeLimit(.minutes(2)))
    func aPowerLossOfEveryNodeKeepsEveryAcknowledgedWrite() async throws {
        let lost = try await Self.powerLossRun(durability: "full").lost
        #expect(lost.isEmpty, "lost: \(lost.sorted())")
    }

    /// The control: the same power loss without an fsync per commit (`durability: normal`)
    /// loses acknowledged writes, so the fault really undoes what was never synced.
    @Test(.timeLimit(.minutes(2)))
    func withoutAnFsyncPerCommitAPowerLossLosesAcknowledgedWrites() async throws {
        let (lost, unsynced) = try await Self.powerLossRun(durability: "normal")
        #expect(unsynced > 0)
        #expect(!lost.isEmpty, "nothing was lost although \(unsynced) bytes were never synced")
    }

    /// A follower whose disk fills and a leader whose disk fails both stop (exit non-zero)
    /// rather than acknowledge; the majority keeps taking writes; restarted, they catch up.
    @Test(.timeLimit(.minutes(2)))
    func nodesWhoseDiskFailsStopAndTheOthersCarryOn() async throws {
        let cluster = try ProcessCluster(founders: 3, environment: Self.environment)
        defer { cluster.stopAll() }
        try await cluster.waitUntilReady(timeout: 30)
        var acknowledged = try await Self.register(5, prefix: "a", on: cluster)

        for (victimIsLeader, mode) in [(false, "full"), (true, "io_error")] {
            let leader = try await cluster.leader()
            let victim = victimIsLeader ? leader : cluster.founders.first { $0 != leader }!
            try await cluster.fault(victim, #"{"disk":"\#(mode)"}"#)
            acknowledged += try await Self.register(10, prefix: "\(mode)-", on: cluster)
            let status = try await cluster.waitForExit(victim, timeout: 15)
            #expect(status != nil && status != 0, "node \(victim) with disk \(mode) exited with \(String(describing: status))")
            acknowledged += try await Self.register(5, prefix: "\(mode)-after-", on: cluster)
            try cluster.start(victim)
            try await cluster.waitUntilReady(timeout: 30)
        }
        #expect(acknowledged.count >= 30)
        let leader = try await cluster.leader()
        let present = Set(try await cluster.workers(on: leader, consistent: true))
        #expect(Set(acknowledged).subtracting(present).isEmpty, "lost: \(Set(acknowledged).subtracting(present).sorted())")
        // Every replica holds them once caught up.
        for id in cluster.founders {
            var held = Set<String>()
            for _ in 0..<100 {
                held = Set(try await cluster.workers(on: id, consistent: false))
                if held.isSuperset(of: acknowledged) { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(held.isSuperset(of: acknowledged), "node \(id) misses \(Set(acknowledged).subtracting(held).sorted())")
        }
    }
}

/// `GET`/`POST /admin/fault`'s answer (the test build's fault API).
struct FaultState: Decodable {
    var wallClockOffsetMs: Int64
    var unsyncedBytes: Int64
    var syncs: Int64
}
