import Raft
import RaftTestKit
import Testing

/// Membership changes (thesis §4 and Raft paper §6): learners, one-at-a-time changes, joint
/// consensus, and the rules that keep at most one change in flight.
@Suite struct MembershipTests {
    /// Adds an empty node that will join, and connects it to the network.
    func join(_ net: RaftTestNetwork, _ id: NodeID) {
        net.add(id: id, state: .joining)
    }

    /// Issue 16, item 10: applying a configuration change set the leader's own match to its
    /// last index, so entries it had not yet persisted counted towards a commit.
    @Test("a leader's own match counts only its durable entries when a configuration changes")
    func aConfigurationChangeCountsOnlyTheLeadersDurableEntries() throws {
        var raft = node(1, voters: [1, 2, 3])
        raft.campaign()
        raft.step(Message(kind: .voteResponse, from: 2, to: 1, term: raft.term))
        #expect(raft.role == .leader)
        _ = raft.drain()
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: raft.term, index: raft.lastIndex))
        _ = raft.drain()
        let change = try raft.proposeConfChange(.addLearner(4))
        _ = raft.drain()
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: raft.term, index: change))
        #expect(raft.commitIndex == change)
        // The change is handed out for applying; meanwhile three entries are proposed, and
        // node 2 stores them, but the leader has not persisted them yet.
        let applying = raft.ready()
        #expect(applying.committedEntries.contains { $0.index == change })
        let proposed = try raft.propose(batch: [[1], [2], [3]])
        let last = proposed.firstIndex + 2
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: raft.term, index: last))
        #expect(raft.commitIndex == change, "one durable copy is not a majority of three")
        raft.advance(applying)
        #expect(raft.commitIndex == change, "applying the change counted the leader's unpersisted entries")
        // Once persisted, they commit.
        _ = raft.drain()
        #expect(raft.commitIndex == last)
    }

    @Test("confchange_v1_add_single: adding one voter applies without a joint configuration")
    func addSingleVoter() throws {
        let net = network(voters: 3)
        net.elect(1)
        join(net, 4)
        try net.changeConfiguration(1, .addVoter(4))
        for id in net.ids {
            #expect(net[id].confState.voters == [1, 2, 3, 4])
            #expect(!net[id].confState.isJoint)
        }
        // The new voter counts: with two of the old voters gone, 1 and 4 are not a majority of 4.
        net.isolate(2)
        net.isolate(3)
        let placed = try net.propose(1, value: 1)
        net.stabilize()
        #expect(net[1].commitIndex < placed.index)
    }

    @Test("learner: a learner receives the log but its acknowledgement never makes a quorum")
    func learnerDoesNotCountForCommit() throws {
        let net = network(voters: 2, learners: 1)
        net.elect(1)
        try net.propose(1, value: 1)
        net.stabilize()
        #expect(appliedValues(net, 3) == [1], "the learner replicates")
        net.isolate(2)
        let placed = try net.propose(1, value: 2)
        net.stabilize()
        #expect(net[1].commitIndex < placed.index, "1 voter of 2 plus a learner is no quorum")
    }

    @Test("learner: a learner is promoted to voter and then counts")
    func learnerPromotion() throws {
        let net = network(voters: 2, learners: 1)
        net.elect(1)
        try net.changeConfiguration(1, .addVoter(3))
        #expect(net[3].confState.voters == [1, 2, 3])
        #expect(!net[3].isLearner)
        net.isolate(2)
        let placed = try net.propose(1, value: 2)
        net.stabilize()
        #expect(net[1].commitIndex == placed.index, "1 and 3 are a majority of 3")
    }

    @Test("learner: a learner never votes in the election it is not part of, but a node promoted elsewhere must vote (campaign_learner_must_vote)")
    func learnerVotesWhenCandidateCountsIt() throws {
        let net = network(voters: 2, learners: 1)
        net.elect(1)
        // Node 2 applies the promotion of 3; node 3 does not learn of it yet.
        try net[1].proposeConfChange(.addVoter(3))
        for message in net.takeMessages(1) where message.to == 2 { net.deliver(message) }
        for message in net.takeMessages(2) { net.deliver(message) }
        for message in net.takeMessages(1) where message.to == 2 { net.deliver(message) }
        net.process(2)
        #expect(net[2].confState.voters == [1, 2, 3])
        #expect(net[3].isLearner)
        // Node 1 goes away; node 2 needs node 3's vote, and node 3 gives it though it thinks itself a learner.
        net.isolate(1)
        net.stabilize()
        net.elect(2)
        #expect(net[2].role == .leader)
    }

    @Test("confchange_v2_add_double_auto: two voters at once go through a joint configuration left automatically")
    func addTwoVotersThroughJointConsensus() throws {
        let net = network(voters: 3)
        net.elect(1)
        join(net, 4)
        join(net, 5)
        try net[1].proposeConfChange(ConfChange([.init(.addVoter, 4), .init(.addVoter, 5)]))
        // Right after entering, the configuration is joint on the leader.
        net.stabilize()
        for id in net.ids {
            #expect(net[id].confState.voters == [1, 2, 3, 4, 5])
            #expect(!net[id].confState.isJoint, "the leader left the joint state on its own")
        }
    }

    @Test("joint consensus: an explicit joint configuration stays until the application leaves it")
    func explicitJointNeedsExplicitLeave() throws {
        let net = network(voters: 3)
        net.elect(1)
        join(net, 4)
        try net.changeConfiguration(1, ConfChange([.init(.addVoter, 4)], transition: .jointExplicit))
        #expect(net[1].confState.isJoint)
        #expect(net[1].confState.votersOutgoing == [1, 2, 3])
        try net.changeConfiguration(1, .leaveJoint)
        #expect(!net[1].confState.isJoint)
        #expect(net[4].confState.voters == [1, 2, 3, 4])
    }

    @Test("joint consensus: while joint, an entry commits only with a majority of both configurations")
    func jointConsensusNeedsBothQuorums() throws {
        let net = network(voters: 3)
        net.elect(1)
        join(net, 4)
        join(net, 5)
        try net.changeConfiguration(1, ConfChange([.init(.addVoter, 4), .init(.addVoter, 5), .init(.removeNode, 2), .init(.removeNode, 3)], transition: .jointExplicit))
        #expect(net[1].confState.voters == [1, 4, 5])
        #expect(net[1].confState.votersOutgoing == [1, 2, 3])
        // The new configuration alone {1, 4, 5} has a majority, the old one {1} does not.
        net.isolate(2)
        net.isolate(3)
        let placed = try net.propose(1, value: 1)
        net.stabilize()
        #expect(net[1].commitIndex < placed.index)
        net.recover()
        net.tick(1)
        net.stabilize()
        #expect(net[1].commitIndex >= placed.index)
    }

    @Test("confchange_v1_remove_leader: a removed leader steps down and hands over")
    func removedLeaderStepsDown() throws {
        let net = network(voters: 3)
        net.elect(1)
        try net.changeConfiguration(1, .removeNode(1))
        #expect(net[1].role == .follower)
        let leaders = net.leaders
        #expect(leaders.count == 1 && leaders.first != 1, "TimeoutNow let a remaining voter take over at once")
        #expect(net[leaders.first!].confState.voters == [2, 3])
        try net.propose(leaders.first!, value: 5)
        net.stabilize()
        #expect(appliedValues(net, 2) == [5])
    }

    @Test("confchange_v2_replace_leader: replacing the leader through joint consensus")
    func replaceLeaderThroughJointConsensus() throws {
        let net = network(voters: 3)
        net.elect(1)
        join(net, 4)
        try net.changeConfiguration(1, ConfChange([.init(.addVoter, 4), .init(.removeNode, 1)]))
        #expect(net[2].confState.voters == [2, 3, 4])
        #expect(!net[2].confState.isJoint)
        #expect(net[1].role == .follower)
        let leaders = net.leaders
        #expect(leaders.count == 1 && leaders.first != 1)
    }

    @Test("joint consensus: demoting a voter keeps it voting until the joint state is left")
    func demotionThroughLearnersNext() throws {
        let net = network(voters: 4)
        net.elect(1)
        try net[1].proposeConfChange(ConfChange([.init(.addLearner, 4)], transition: .jointExplicit))
        net.stabilize()
        #expect(net[1].confState.learnersNext == [4])
        #expect(net[1].confState.isVoter(4), "still a voter of the outgoing configuration")
        try net.changeConfiguration(1, .leaveJoint)
        #expect(net[1].confState.learners == [4])
        #expect(!net[1].confState.isVoter(4))
    }

    @Test("only one configuration change may be pending")
    func onlyOneChangePending() throws {
        let net = network(voters: 3)
        net.elect(1)
        join(net, 4)
        try net[1].proposeConfChange(.addLearner(4))
        #expect(throws: RaftError.configurationChangePending(index: 0)) { try net[1].proposeConfChange(.addVoter(4)) }
        net.stabilize()
        try net.changeConfiguration(1, .addVoter(4))
        #expect(net[4].confState.voters == [1, 2, 3, 4])
    }

    @Test("no configuration change before the new leader's no-op is applied")
    func noChangeBeforeLeaderNoopApplied() throws {
        var raft = node(1, voters: [1, 2, 3])
        raft.campaign()
        raft.step(Message(kind: .voteResponse, from: 2, to: 1, term: raft.term))
        #expect(raft.role == .leader)
        #expect(throws: RaftError.configurationChangePending(index: 0)) { try raft.proposeConfChange(.addLearner(9)) }
        _ = raft.drain()
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: raft.term, index: raft.lastIndex))
        _ = raft.drain()
        #expect(throws: Never.self) { try raft.proposeConfChange(.addLearner(9)) }
    }

    @Test("a removed node that keeps running cannot disrupt the cluster (PreVote + CheckQuorum)")
    func removedNodeCannotDisrupt() throws {
        let net = network(voters: 3, preVote: true, checkQuorum: true)
        net.elect(1)
        try net.changeConfiguration(1, .removeNode(3))
        let term = net[1].term
        // Node 3 never learned of its removal and keeps campaigning.
        net[3].forgetLeader()
        for _ in 0..<10 {
            net.tick(3, times: 20)
            net.tick(1)
            net.stabilize()
        }
        #expect(net[1].role == .leader)
        #expect(net[1].term == term)
    }

    @Test("invalid changes are refused with the rule they break")
    func invalidChangesRefused() throws {
        let conf = ConfState(voters: [1, 2, 3])
        #expect(throws: RaftError.self) { try conf.applying(.leaveJoint) }
        #expect(throws: RaftError.self) { try conf.applying(ConfChange([.init(.removeNode, 1), .init(.removeNode, 2), .init(.removeNode, 3)])) }
        #expect(throws: RaftError.self) { try conf.applying(.addVoter(0)) }
        let joint = try conf.applying(ConfChange([.init(.addVoter, 4)], transition: .jointExplicit))
        #expect(throws: RaftError.self) { try joint.applying(.addVoter(5)) }
        #expect(throws: RaftError.self) { try ConfState().applying(ConfChange([.init(.addVoter, 1), .init(.addVoter, 2)], transition: .jointImplicit)) }
    }

    @Test("a configuration change survives encoding, and malformed bytes are refused")
    func confChangeEncoding() throws {
        let change = ConfChange([.init(.addVoter, 7), .init(.addLearner, 1 << 40), .init(.removeNode, 3)], transition: .jointExplicit)
        #expect(try ConfChange(decoding: change.encoded()) == change)
        #expect(try ConfChange(decoding: ConfChange.leaveJoint.encoded()) == .leaveJoint)
        var wrongVersion = change.encoded()
        wrongVersion[0] = 9
        #expect(throws: RaftError.self) { try ConfChange(decoding: wrongVersion) }
        #expect(throws: RaftError.self) { try ConfChange(decoding: Array(change.encoded().dropLast())) }
        #expect(throws: RaftError.self) { try ConfChange(decoding: [1]) }
        var badOperation = change.encoded()
        badOperation[6] = 77
        #expect(throws: RaftError.self) { try ConfChange(decoding: badOperation) }
    }
}
