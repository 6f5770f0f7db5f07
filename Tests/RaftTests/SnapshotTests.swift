import Raft
import RaftTestKit
import Testing

/// Log compaction and InstallSnapshot (Raft paper §7).
@Suite struct SnapshotTests {
    /// Lets the leader and the others talk until the leader sends a snapshot; returns it
    /// undelivered.
    func exchangeUntilSnapshot(_ net: RaftTestNetwork, leader: NodeID = 1) -> Message? {
        net.tick(leader)
        for _ in 0..<20 {
            for message in net.takeMessages(leader) {
                if message.kind == .snapshot { return message }
                net.deliver(message)
            }
            for id in net.ids where id != leader {
                for message in net.takeMessages(id) { net.deliver(message) }
            }
        }
        return nil
    }

    @Test("slow_follower_after_compaction: a follower behind the leader's compacted log gets a snapshot and resumes")
    func snapshotToFollowerFarBehind() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(3)
        for value in 1...20 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(1)
        #expect(net[1].firstIndex > net[3].lastIndex + 1)
        net.recover()
        net.tick(1)
        net.stabilize()
        #expect(net[3].commitIndex == net[1].commitIndex)
        #expect(net.member(3).store == net.member(1).store, "state restored from the snapshot")
        #expect(net[1].progress[3]?.state == .replicate)
        try net.propose(1, value: 21)
        net.stabilize()
        #expect(appliedValues(net, 3) == [21], "entries after the snapshot are applied normally")
        #expect(net.member(3).store.value(of: 0) == 21)
    }

    @Test("snapshot_succeed_via_app_resp: the follower's append answer ends the snapshot state")
    func snapshotSucceedsViaAppendResponse() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(3)
        for value in 1...5 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(1)
        net.recover()
        let snapshot = try #require(exchangeUntilSnapshot(net))
        #expect(net[1].progress[3]?.state == .snapshot)
        net.deliver(snapshot)
        let answer = try #require(net.takeMessages(3).of(.appendResponse).first)
        #expect(answer.index == snapshot.snapshot?.metadata.index)
        net.deliver(answer)
        #expect(net[1].progress[3]?.state == .replicate)
    }

    @Test("snapshot_succeed_via_app_resp_behind: an older answer that the log can serve also ends it")
    func snapshotSucceedsViaOlderAppendResponse() throws {
        let net = network(voters: 3)
        net.elect(1)
        for value in 1...3 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        let followerIndex = net[3].lastIndex
        net.isolate(3)
        for value in 4...8 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(1)
        net.recover()
        _ = try #require(exchangeUntilSnapshot(net))
        #expect(net[1].progress[3]?.state == .snapshot)
        // A late answer from before arrives: the follower holds `followerIndex`, behind the snapshot.
        // The log cannot serve from there (it is compacted), so the snapshot state stays.
        net.deliver(Message(kind: .appendResponse, from: 3, to: 1, term: net[1].term, index: followerIndex))
        #expect(net[1].progress[3]?.state == .snapshot)
        // An answer at or past the compaction point, even below the snapshot, ends it.
        net.deliver(Message(kind: .appendResponse, from: 3, to: 1, term: net[1].term, index: net[1].firstIndex - 1))
        #expect(net[1].progress[3]?.state == .replicate)
    }

    @Test("a failed snapshot send returns the follower to probing, which retries")
    func snapshotFailureReturnsToProbe() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(3)
        for value in 1...5 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(1)
        net.recover()
        _ = try #require(exchangeUntilSnapshot(net))
        net[1].reportSnapshot(to: 3, succeeded: false)
        #expect(net[1].progress[3]?.state == .probe)
        net.tick(1)
        net.stabilize()
        #expect(net[3].commitIndex == net[1].commitIndex)
    }

    @Test("an unanswered snapshot times out back to probing")
    func snapshotTimesOut() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(3)
        for value in 1...5 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(1)
        net.recover()
        // The snapshot is lost on the way.
        _ = try #require(exchangeUntilSnapshot(net))
        #expect(net[1].progress[3]?.state == .snapshot)
        for _ in 0..<(net.settings.snapshotTimeoutTicks - 2) {
            net.tick(1)
            net.stabilize()
        }
        #expect(net[3].commitIndex < net[1].commitIndex, "no retry before the timeout")
        for _ in 0..<4 {
            net.tick(1)
            net.stabilize()
        }
        #expect(net[3].commitIndex == net[1].commitIndex, "the retry after the timeout got through")
    }

    @Test("a node restarts from its snapshot plus the log after it")
    func restartFromSnapshot() throws {
        let net = network(voters: 3)
        net.elect(1)
        for value in 1...6 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(2)
        try net.propose(1, value: 7)
        net.stabilize()
        let store = net.member(2).store
        net.restart(2)
        #expect(net[2].firstIndex > 1)
        net.stabilize()
        #expect(net.member(2).store == store)
    }

    @Test("a stale snapshot is ignored; one matching the log fast-forwards the commit index")
    func staleOrMatchingSnapshot() throws {
        let net = network(voters: 3)
        net.elect(1)
        for value in 1...3 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(1)
        let snapshot = try #require(net[1].latestSnapshot)
        let commit = net[2].commitIndex
        net.deliver(Message(kind: .snapshot, from: 1, to: 2, term: net[1].term, snapshot: snapshot))
        #expect(net.takeMessages(2).of(.appendResponse).first?.index == commit, "nothing new: answered with the commit index")
        #expect(net[2].firstIndex == 1, "the follower's own log is untouched")
    }

    @Test("a node that joins after the leader's last snapshot installs it and learns its membership from the log")
    func joinerInstallsOlderSnapshot() throws {
        let net = network(voters: 3)
        net.elect(1)
        for value in 1...5 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.compact(1)
        net.add(id: 4, state: .joining)
        try net.changeConfiguration(1, .addLearner(4))
        net.tick(1)
        net.stabilize()
        #expect(net[4].confState.learners == [4])
        #expect(net.member(4).store == net.member(1).store)
    }

    @Test("taking a snapshot with nothing new applied is refused")
    func snapshotWithNothingNew() throws {
        var raft = node(1, voters: [1])
        raft.campaign()
        _ = raft.drain()
        _ = try raft.takeSnapshot(data: [1])
        #expect(throws: RaftError.self) { try raft.takeSnapshot(data: [2]) }
    }
}
