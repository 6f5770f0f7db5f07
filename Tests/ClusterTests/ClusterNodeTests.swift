import Cluster
import Raft
import RaftTransport
import Testing

/// Three to four real nodes on loopback in one process: elections, replication, failover,
/// restart, membership and leadership transfer through the runtime.
@Suite(.serialized) struct ClusterNodeTests {
    @Test(.timeLimit(.minutes(2)))
    func writesApplyEverywhereInOrderAndSurviveTheLeadersLoss() async throws {
        let cluster = try LocalCluster(size: 3)
        do {
            var leader = try await cluster.leader()
            for index in 0..<50 { _ = try await cluster.write("k\(index % 5)", "v\(index)", following: &leader) }
            #expect(try await cluster.write("k0", "again", following: &leader) == "v45")
            leader = try await cluster.leader()

            // A follower refuses and names the leader.
            let follower = cluster.nodes.keys.first { $0 != leader }!
            do {
                _ = try await cluster.write("x", "y", via: follower)
                Issue.record("a follower accepted a proposal")
            } catch let error as ClusterError {
                #expect(error.code == .notLeader)
                #expect(error.leader == leader)
                #expect(error.leaderAddress == cluster.addresses[leader])
            }

            // Every node applies the same commands in the same order.
            let commit = await cluster.nodes[leader]!.status().commitIndex
            var states: [[String: String]] = []
            var orders: [[LogIndex]] = []
            for node in cluster.nodes.values {
                try await node.waitUntilApplied(commit)
                states.append(await node.withMachine { machine, _ in machine.values })
                orders.append(await node.withMachine { machine, _ in machine.applied })
            }
            #expect(Set(states).count == 1)
            #expect(Set(orders).count == 1)
            #expect(states[0]["k0"] == "again")

            // Lose the leader: another is elected and takes writes.
            await cluster.stop(leader)
            let successor = try await cluster.leader(excluding: [leader])
            #expect(successor != leader)
            _ = try await cluster.write("after", "failover", via: successor)
            try await cluster.nodes[successor]!.readBarrier()
            #expect(await cluster.nodes[successor]!.withMachine { machine, _ in machine.values }["after"] == "failover")

            // The old leader restarts from its disk and catches up.
            try cluster.start(leader, bootstrap: cluster.addresses)
            let latest = await cluster.nodes[successor]!.status().commitIndex
            try await cluster.nodes[leader]!.waitUntilApplied(latest)
            #expect(await cluster.nodes[leader]!.withMachine { machine, _ in machine.values } == cluster.nodes[successor]!.withMachine { machine, _ in machine.values })
        } catch {
            await cluster.stopAll()
            throw error
        }
        await cluster.stopAll()
    }

    @Test(.timeLimit(.minutes(2)))
    func aLearnerJoinsFromASnapshotIsPromotedAndTakesLeadership() async throws {
        let cluster = try LocalCluster(size: 3, snapshotEntries: 20)
        do {
            let leader = try await cluster.leader()
            for index in 0..<100 { _ = try await cluster.write("k\(index)", "v\(index)", via: leader) }
            let status = await cluster.nodes[leader]!.status()
            #expect(status.firstIndex > 1, "the log was compacted")

            // A fourth node joins as a learner; the leader's log no longer reaches back far
            // enough, so it catches up from a snapshot.
            let address = try cluster.startJoiner(4)
            try await cluster.nodes[leader]!.addLearner(4, address: address)
            let commit = await cluster.nodes[leader]!.status().commitIndex
            try await cluster.nodes[4]!.waitUntilApplied(commit)
            #expect(await cluster.nodes[4]!.withMachine { machine, _ in machine.values } == cluster.nodes[leader]!.withMachine { machine, _ in machine.values })
            var members = await cluster.nodes[leader]!.status().members
            #expect(members.first { $0.id == 4 }?.voter == false)

            try await cluster.nodes[leader]!.promote(4)
            members = await cluster.nodes[leader]!.status().members
            #expect(members.first { $0.id == 4 }?.voter == true)

            // Remove a follower other than the leader and the newcomer.
            let removed = cluster.nodes.keys.first { $0 != leader && $0 != 4 }!
            try await cluster.nodes[leader]!.remove(removed)
            members = await cluster.nodes[leader]!.status().members
            #expect(!members.contains { $0.id == removed })
            await cluster.stop(removed)

            // Hand leadership to the newcomer.
            let newLeader = try await cluster.nodes[leader]!.transferLeadership(to: 4)
            #expect(newLeader == 4)
            _ = try await cluster.write("led-by", "4", via: 4)
            #expect(try await cluster.leader() == 4)
        } catch {
            await cluster.stopAll()
            throw error
        }
        await cluster.stopAll()
    }
}
