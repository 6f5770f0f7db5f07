import Foundation
import Testing

/// Three (then four) `fulcrum` processes on loopback. Bounded: each test stops its processes
/// and finishes within its time limit.
@Suite(.serialized) struct MultiProcessTests {
    @Test(.timeLimit(.minutes(2)))
    func writesThroughAnyNodeSurviveKillingTheLeader() async throws {
        let cluster = try ProcessCluster(founders: 3)
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()

        // Commands sent to any node (followers point at the leader) apply everywhere in order.
        var acknowledged: [String] = []
        for index in 0..<30 {
            let via = cluster.founders[index % 3]
            if try await cluster.register("w\(index)", via: via) { acknowledged.append("w\(index)") }
        }
        #expect(acknowledged.count == 30)
        let reference = try await cluster.workers(on: leader, consistent: true)
        #expect(reference == acknowledged.sorted())

        // kill -9 the leader: a new one is elected and accepts writes.
        cluster.kill9(leader)
        let successor = try await cluster.leader()
        #expect(successor != leader)
        for index in 30..<40 where try await cluster.register("w\(index)", via: successor) {
            acknowledged.append("w\(index)")
        }
        #expect(acknowledged.count == 40)

        // The old leader restarts from its disk and catches up; nothing acknowledged is lost.
        try cluster.start(leader)
        let expected = acknowledged.sorted()
        let deadline = Date().addingTimeInterval(20)
        var views: [UInt64: [String]] = [:]
        repeat {
            for id in cluster.founders { views[id] = try? await cluster.workers(on: id, consistent: false) }
            if cluster.founders.allSatisfy({ views[$0] == expected }) { break }
            try await Task.sleep(for: .milliseconds(100))
        } while Date() < deadline
        for id in cluster.founders { #expect(views[id] == expected, "node \(id)") }
    }

    @Test(.timeLimit(.minutes(2)))
    func membershipAndLeadershipThroughFulcrumctl() async throws {
        let cluster = try ProcessCluster(founders: 3, snapshotEntries: 10)
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        for index in 0..<40 { _ = try await cluster.register("w\(index)", via: leader) }
        // A fourth node joins as a learner and catches up (the log was compacted: by snapshot).
        try cluster.reservePorts(4)
        try cluster.start(4)
        var result = try cluster.ctl(["member", "add", "--id", "4", "--address", "127.0.0.1:\(cluster.peerPorts[4]!)"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("learner"))
        let deadline = Date().addingTimeInterval(20)
        // Node 4's HTTP listener may not be up yet: a refused connection is "not caught up yet".
        while ((try? await cluster.workers(on: 4, consistent: false))?.count ?? 0) < 40 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await cluster.workers(on: 4, consistent: false).count == 40)
        result = try cluster.ctl(["member", "promote", "4", "-o", "json"])
        #expect(result.status == 0, "\(result.output)")

        // Hand leadership to the newcomer, then remove a founder.
        result = try cluster.ctl(["leader", "transfer", "--to", "4"])
        #expect(result.status == 0, "\(result.output)")
        #expect(try await cluster.leader() == 4)
        let removed = cluster.founders.first { $0 != leader }!
        result = try cluster.ctl(["member", "remove", String(removed)])
        #expect(result.status == 0, "\(result.output)")
        cluster.terminate(removed)
        result = try cluster.ctl(["member", "list", "-o", "json"])
        #expect(result.status == 0)
        #expect(!result.output.contains("\"id\" : \(removed),"))
        // Bad input: a clear message and a non-zero exit.
        result = try cluster.ctl(["member", "promote", "99"])
        #expect(result.status != 0)
        #expect(result.output.contains("not a learner"))
        result = try cluster.ctl(["snapshot"])
        #expect(result.status == 0, "\(result.output)")
    }
}
