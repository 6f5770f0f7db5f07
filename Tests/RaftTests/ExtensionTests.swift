import Raft
import RaftTestKit
import Testing

/// The extensions of Ongaro's thesis that Fulcrum implements: PreVote (§9.6), CheckQuorum
/// (§6.2), leadership transfer (§3.10), ReadIndex (§6.4), and replication flow control. Names
/// follow etcd-io/raft's scenarios where one exists.
@Suite struct ExtensionTests {
    // MARK: PreVote (thesis §9.6)

    @Test("prevote: a pre-candidate asks for votes at term + 1 without changing its term")
    func preVoteDoesNotIncrementTerm() {
        var raft = node(1, voters: [1, 2, 3], settings: testSettings(preVote: true))
        let term = raft.term
        raft.campaign()
        #expect(raft.role == .preCandidate)
        #expect(raft.term == term)
        #expect(raft.vote == .none)
        let requests = raft.drainMessages().of(.preVote)
        #expect(requests.count == 2)
        #expect(requests.allSatisfy { $0.term == term + 1 })
    }

    @Test("prevote: winning the pre-vote starts the real election")
    func preVoteThenElection() {
        let net = network(voters: 3, preVote: true)
        let term = net[1].term
        net.elect(1)
        #expect(net[1].role == .leader)
        #expect(net[1].term == term + 1, "only the real election raises the term")
    }

    @Test("prevote: a partitioned node neither raises its term nor disrupts the leader when it returns")
    func preVoteDoesNotDisruptStableLeader() throws {
        let net = network(voters: 3, preVote: true)
        net.elect(1)
        let term = net[1].term
        net.isolate(3)
        for _ in 0..<5 {
            net.tick(3, times: 20)
            net.stabilize()
        }
        #expect(net[3].term == term, "pre-votes fail without a quorum, so the term stays")
        net.recover()
        net.tick(1)
        net.stabilize()
        #expect(net.leaders == [1])
        #expect(net[1].term == term)
    }

    @Test("prevote: a pre-vote is refused when the candidate's log is behind")
    func preVoteRejectsStaleLog() throws {
        let net = network(voters: 3, preVote: true)
        net.elect(1)
        net.isolate(3)
        try net.propose(1, value: 1)
        net.stabilize()
        net.recover()
        net[1].forgetLeader()
        net[2].forgetLeader()
        net.campaign(3)
        let requests = net.takeMessages(3)
        for message in requests { net.deliver(message) }
        let answers = net.takeMessages(1) + net.takeMessages(2)
        #expect(answers.of(.preVoteResponse).allSatisfy { $0.reject })
    }

    @Test("prevote_checkquorum: a node that heard from the leader recently ignores pre-votes")
    func preVoteIgnoredWithinLeaderLease() {
        let net = network(voters: 3, preVote: true, checkQuorum: true)
        net.elect(1)
        let term = net[2].term
        net[2].step(Message(kind: .preVote, from: 3, to: 2, term: term + 1, logTerm: 99, index: 99))
        #expect(net.takeMessages(2).of(.preVoteResponse).isEmpty, "within the lease the request is dropped")
        // After an election timeout without the leader, the same request is granted.
        net[2].tick(times: 10)
        net[2].step(Message(kind: .preVote, from: 3, to: 2, term: term + 1, logTerm: 99, index: 99))
        #expect(net.takeMessages(2).of(.preVoteResponse).first?.reject == false)
    }

    @Test("forget_leader: a follower that forgets its leader grants pre-votes at once")
    func forgetLeaderAllowsPreVote() {
        let net = network(voters: 3, preVote: true, checkQuorum: true)
        net.elect(1)
        let term = net[2].term
        net[2].forgetLeader()
        #expect(net[2].leader == .none)
        net[2].step(Message(kind: .preVote, from: 3, to: 2, term: term + 1, logTerm: 99, index: 99))
        #expect(net.takeMessages(2).of(.preVoteResponse).first?.reject == false)
        #expect(net[2].term == term, "granting a pre-vote changes nothing")
    }

    @Test("prevote: a pre-vote for a lower term is answered with the current term")
    func stalePreVoteLearnsTerm() {
        var raft = node(1, voters: [1, 2, 3], settings: testSettings(preVote: true))
        raft.step(Message(kind: .heartbeat, from: 2, to: 1, term: 7))
        _ = raft.drain()
        raft.step(Message(kind: .preVote, from: 3, to: 1, term: 5, logTerm: 1, index: 1))
        let answer = raft.drainMessages().of(.preVoteResponse).first
        #expect(answer?.reject == true)
        #expect(answer?.term == 7)
    }

    // MARK: CheckQuorum (thesis §6.2)

    @Test("checkquorum: a leader that cannot reach a quorum for an election timeout steps down")
    func leaderStepsDownWithoutQuorum() {
        let net = network(voters: 3, checkQuorum: true)
        net.elect(1)
        net.isolate(1)
        for _ in 0..<2 {
            net.tick(1, times: 10)
            net.stabilize()
        }
        #expect(net[1].role == .follower)
    }

    @Test("checkquorum: a leader that hears from a quorum keeps leading")
    func leaderWithQuorumStays() {
        let net = network(voters: 3, checkQuorum: true)
        net.elect(1)
        net.isolate(3)
        for _ in 0..<30 {
            net.tick(1)
            net.stabilize()
        }
        #expect(net[1].role == .leader)
    }

    @Test("checkquorum: a stale leader steps down when the partition heals")
    func staleLeaderStepsDownAfterPartitionHeals() throws {
        let net = network(voters: 5, preVote: true, checkQuorum: true)
        net.elect(1)
        let oldTerm = net[1].term
        net.isolate(1)
        // The others wait out the leader lease, then elect one of themselves.
        var newLeader: NodeID?
        for _ in 0..<50 where newLeader == nil {
            for id: NodeID in 2...5 { net.tick(id) }
            net.stabilize()
            newLeader = net.leaders.first { $0 != 1 }
        }
        let successor = try #require(newLeader)
        // Without CheckQuorum firing yet, node 1 still believes it leads.
        #expect(net[1].role == .leader)
        #expect(throws: Never.self) { try net.propose(1, value: 1) }
        net.recover()
        net.tick(successor)
        net.stabilize()
        #expect(net[1].role == .follower)
        #expect(net[1].term > oldTerm)
        #expect(net.leaders == [successor])
        #expect(appliedValues(net, 1).isEmpty, "the stale leader's proposal never committed")
    }

    // MARK: Leadership transfer (thesis §3.10)

    @Test("transfer: an up-to-date target gets TimeoutNow and wins at once")
    func transferToUpToDateFollower() throws {
        let net = network(voters: 3, preVote: true, checkQuorum: true)
        net.elect(1)
        let term = net[1].term
        try net[1].transferLeadership(to: 3)
        net.stabilize()
        #expect(net[3].role == .leader)
        #expect(net[3].term == term + 1)
        #expect(net[1].role == .follower)
    }

    @Test("transfer: a lagging target is caught up first, then takes over")
    func transferToLaggingFollower() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(3)
        for value in 1...10 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.recover()
        try net[1].transferLeadership(to: 3)
        #expect(net[1].transferee == 3)
        #expect(throws: RaftError.self) { try net.propose(1, value: 99) }
        net.stabilize()
        #expect(net[3].role == .leader)
        #expect(appliedValues(net, 3) == Array(1...10))
    }

    @Test("transfer: an unfinished transfer is abandoned after an election timeout")
    func transferTimesOut() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(3)
        try net[1].transferLeadership(to: 3)
        #expect(net[1].transferee == 3)
        for _ in 0..<10 {
            net.tick(1)
            net.stabilize()
        }
        #expect(net[1].transferee == .none)
        #expect(net[1].role == .leader)
        #expect(throws: Never.self) { try net.propose(1, value: 1) }
    }

    @Test("transfer: requests to a learner, to the leader itself or to an unknown node are ignored")
    func transferToInvalidTargetIgnored() throws {
        let net = network(voters: 3, learners: 1)
        net.elect(1)
        try net[1].transferLeadership(to: 4)
        #expect(net[1].transferee == .none)
        try net[1].transferLeadership(to: 1)
        #expect(net[1].transferee == .none)
        try net[1].transferLeadership(to: 42)
        #expect(net[1].transferee == .none)
    }

    @Test("transfer: a follower forwards the request to the leader")
    func transferRequestForwardedByFollower() throws {
        let net = network(voters: 3)
        net.elect(1)
        try net[2].transferLeadership(to: 2)
        net.stabilize()
        #expect(net[2].role == .leader)
    }

    @Test("transfer: the target's election bypasses the other voters' leader lease")
    func transferBypassesLease() throws {
        let net = network(voters: 3, preVote: true, checkQuorum: true)
        net.elect(1)
        try net[1].transferLeadership(to: 2)
        net.stabilize()
        #expect(net[2].role == .leader, "node 3 still had a lease from node 1, yet voted")
    }

    // MARK: ReadIndex (thesis §6.4)

    @Test("read index: the leader answers once a quorum confirms its leadership")
    func readIndexOnLeader() throws {
        let net = network(voters: 3)
        net.elect(1)
        try net.propose(1, value: 7)
        net.stabilize()
        try net[1].readIndex(context: [1])
        let heartbeats = net.takeMessages(1).of(.heartbeat)
        #expect(heartbeats.count == 2)
        #expect(heartbeats.allSatisfy { $0.context == [1] })
        #expect(net.member(1).readStates.isEmpty, "not before a quorum answers")
        net.deliver(heartbeats[0])
        for message in net.takeMessages(heartbeats[0].to) { net.deliver(message) }
        net.process(1)
        #expect(net.member(1).readStates == [ReadState(index: net[1].commitIndex, context: [1])])
    }

    @Test("read index: a follower's request is forwarded and answered with the leader's commit index")
    func readIndexFromFollower() throws {
        let net = network(voters: 3)
        net.elect(1)
        try net.propose(1, value: 7)
        net.stabilize()
        try net[3].readIndex(context: [9, 9])
        net.stabilize()
        #expect(net.member(3).readStates == [ReadState(index: net[1].commitIndex, context: [9, 9])])
    }

    @Test("read index: a new leader answers only after committing an entry of its term")
    func readIndexWaitsForCommitInTerm() throws {
        var raft = node(1, voters: [1, 2, 3])
        raft.campaign()
        raft.step(Message(kind: .voteResponse, from: 2, to: 1, term: raft.term))
        #expect(raft.role == .leader)
        _ = raft.drain()
        try raft.readIndex(context: [5])
        #expect(raft.drainMessages().of(.heartbeat).isEmpty, "held until the no-op commits")
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: raft.term, index: raft.lastIndex))
        let messages = raft.drainMessages()
        #expect(messages.of(.heartbeat).allSatisfy { $0.context == [5] })
        raft.step(Message(kind: .heartbeatResponse, from: 2, to: 1, term: raft.term, context: [5]))
        #expect(raft.drain().readStates == [ReadState(index: raft.commitIndex, context: [5])])
    }

    @Test("read index: a leader cut off from the quorum never answers")
    func readIndexNotServedWithoutQuorum() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(1)
        try net[1].readIndex(context: [3])
        for _ in 0..<5 {
            net.tick(1)
            net.stabilize()
        }
        #expect(net.member(1).readStates.isEmpty)
    }

    @Test("read index: a single voter answers at once; an empty context is refused")
    func readIndexSingleVoter() throws {
        var raft = node(1, voters: [1])
        raft.campaign()
        _ = raft.drain()
        try raft.readIndex(context: [1])
        #expect(raft.drain().readStates.map(\.context) == [[1]])
        #expect(throws: RaftError.self) { try raft.readIndex(context: []) }
    }

    // MARK: Replication flow control

    @Test("probe_and_replicate: a follower is probed until its match is known, then pipelined")
    func probeThenReplicate() throws {
        let net = network(voters: 3)
        net.elect(1)
        #expect(net[1].progress[2]?.state == .replicate)
        net.isolate(2)
        try net.propose(1, value: 1)
        net.stabilize()
        net[1].reportUnreachable(2)
        #expect(net[1].progress[2]?.state == .probe)
        net.recover()
        net.tick(1)
        net.stabilize()
        #expect(net[1].progress[2]?.state == .replicate)
        #expect(net[1].progress[2]?.match == net[1].lastIndex)
    }

    @Test("replicate_pause: a full window of unacknowledged appends pauses the leader")
    func replicatePausesWhenInflightsFull() throws {
        let net = network(voters: 3, maxInflight: 3)
        net.elect(1)
        var appendsTo2 = 0
        for value in 1...6 {
            try net.propose(1, value: UInt64(value))
            appendsTo2 += net.takeMessages(1).of(.append).to(2).count
        }
        #expect(appendsTo2 == 3, "three appends fill the window, the rest wait")
    }

    @Test("heartbeat_resp_recovers_from_probing: a heartbeat answer lets a paused probe resume")
    func heartbeatResponseResumesProbe() throws {
        let net = network(voters: 3)
        net.elect(1)
        net[1].reportUnreachable(2)
        try net.propose(1, value: 1)
        // The probe to 2 is lost.
        for message in net.takeMessages(1) where message.to != 2 { net.deliver(message) }
        #expect(net[1].progress[2]?.state == .probe)
        try net.propose(1, value: 2)
        #expect(net.takeMessages(1).of(.append).to(2).isEmpty, "paused while a probe is unanswered")
        net.tick(1)
        net.stabilize()
        #expect(net[1].progress[2]?.match == net[1].lastIndex)
        #expect(appliedValues(net, 2) == [1, 2])
    }

    @Test("batching: proposals made between two batches share one append per follower")
    func proposalsAreBatched() throws {
        let net = network(voters: 3)
        net.elect(1)
        for value in 1...10 { _ = try net[1].propose(KeyValueCommand(id: UInt64(value), key: 0, value: UInt64(value)).encoded()) }
        let appends = net.takeMessages(1).of(.append)
        #expect(appends.count == 2)
        #expect(appends.allSatisfy { $0.entries.count == 10 })
    }

    @Test("flow control: one append carries at most maxMessageBytes of entries")
    func appendsRespectMessageSize() throws {
        var settings = testSettings()
        settings.maxMessageBytes = 1000
        let net = RaftTestNetwork(voters: 3, settings: settings)
        net.elect(1)
        for _ in 1...10 { _ = try net[1].propose([UInt8](repeating: 1, count: 300)) }
        let appends = net.takeMessages(1).of(.append).to(2)
        #expect(appends.count > 1)
        #expect(appends.allSatisfy { $0.entries.reduce(0) { $0 + $1.byteSize } <= 1000 || $0.entries.count == 1 })
        #expect(appends.reduce(0) { $0 + $1.entries.count } == 10)
    }

    @Test("pipelining: a follower in replicate state gets new appends before acknowledging old ones")
    func pipelinedAppends() throws {
        let net = network(voters: 3)
        net.elect(1)
        try net.propose(1, value: 1)
        let first = net.takeMessages(1).of(.append).to(2)
        try net.propose(1, value: 2)
        let second = net.takeMessages(1).of(.append).to(2)
        #expect(first.count == 1 && second.count == 1)
        #expect(second[0].index == first[0].entries.last!.index, "sent optimistically after the first")
    }

    // MARK: Robustness

    @Test("messages addressed to another node, from non-members or of impossible kinds change nothing")
    func strayMessagesAreHarmless() {
        var raft = node(1, voters: [1, 2, 3])
        let before = raft.hardState
        raft.step(Message(kind: .append, from: 2, to: 7, term: 9))
        raft.step(Message(kind: .appendResponse, from: 42, to: 1, term: before.term))
        raft.step(Message(kind: .readIndexResponse, from: 2, to: 1, term: before.term, index: 3, context: [1]))
        raft.step(Message(kind: .snapshot, from: 2, to: 1, term: before.term))
        #expect(raft.hardState.term == before.term)
        #expect(raft.hardState.commit == before.commit)
    }

    @Test("a learner never campaigns, however long it waits")
    func learnerNeverCampaigns() {
        var raft = node(4, voters: [1, 2, 3], learners: [4])
        raft.tick(times: 100)
        #expect(raft.role == .follower)
        #expect(raft.drainMessages().of(.vote).isEmpty)
    }

    @Test("proposals on a follower fail with the known leader named")
    func proposalOnFollowerNamesLeader() throws {
        let net = network(voters: 3)
        net.elect(1)
        #expect(throws: RaftError.notLeader(leader: 1)) { try net.propose(2, value: 1) }
    }
}
