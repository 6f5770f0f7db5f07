import Raft
import RaftTestKit
import Testing

/// One test per rule of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
/// Consensus Algorithm", §5), named after the behaviour. Extensions of the thesis live in
/// `ExtensionTests`, membership in `MembershipTests`, snapshots in `SnapshotTests`.
@Suite struct PaperConformanceTests {
    // MARK: §5.1 Terms

    @Test("§5.1 a follower adopts a higher term from any message")
    func followerUpdatesTermFromHigherTermMessage() {
        var raft = node(1, voters: [1, 2, 3])
        let term = raft.term
        raft.step(Message(kind: .heartbeat, from: 2, to: 1, term: term + 3))
        #expect(raft.term == term + 3)
        #expect(raft.role == .follower)
        #expect(raft.leader == 2)
        #expect(raft.vote == .none)
    }

    @Test("§5.1 a candidate that sees a higher term becomes follower")
    func candidateStepsDownOnHigherTerm() {
        var raft = node(1, voters: [1, 2, 3])
        raft.campaign()
        #expect(raft.role == .candidate)
        let term = raft.term
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: term + 1))
        #expect(raft.role == .follower)
        #expect(raft.term == term + 1)
    }

    @Test("§5.1 a leader that sees a higher term becomes follower")
    func leaderStepsDownOnHigherTerm() {
        let net = network(voters: 3)
        net.elect(1)
        #expect(net[1].role == .leader)
        let term = net[1].term
        net[1].step(Message(kind: .voteResponse, from: 2, to: 1, term: term + 1, reject: true))
        #expect(net[1].role == .follower)
        #expect(net[1].term == term + 1)
    }

    @Test("§5.1 a request with a stale term is rejected, and the sender learns the current term")
    func staleTermRequestIsRejected() {
        let net = network(voters: 3)
        net.elect(1)
        let term = net[2].term
        net[2].step(Message(kind: .vote, from: 3, to: 2, term: term - 1, logTerm: 99, index: 99))
        let replies = net.takeMessages(2)
        #expect(replies.of(.voteResponse).isEmpty, "a stale vote request gets no vote")
        #expect(net[2].term == term)
        // A stale append is answered with the current term so the old leader steps down.
        net[2].step(Message(kind: .append, from: 3, to: 2, term: term - 1, logTerm: 1, index: 3))
        let answer = net.takeMessages(2).of(.appendResponse)
        #expect(answer.count == 1)
        #expect(answer.first?.term == term)
    }

    // MARK: §5.2 Leader election

    @Test("§5.2 a follower that hears nothing for an election timeout campaigns")
    func followerStartsElectionAfterTimeout() {
        var raft = node(1, voters: [1, 2, 3])
        let term = raft.term
        raft.tick(times: 2 * raft.settings.electionTicks)
        #expect(raft.role == .candidate)
        #expect(raft.term == term + 1)
        #expect(raft.vote == 1)
        let requests = raft.drainMessages().of(.vote)
        #expect(Set(requests.map(\.to)) == [2, 3])
        #expect(requests.allSatisfy { $0.term == term + 1 && $0.index == raft.lastIndex && $0.logTerm == raft.lastTerm })
    }

    @Test("§5.2 a single voter elects itself at once, and commits alone once its entry is durable")
    func singleNodeElectsItself() {
        var raft = node(1, voters: [1])
        raft.campaign()
        #expect(raft.role == .leader)
        _ = raft.drain()
        _ = try? raft.propose([7])
        let persisting = raft.drain()
        #expect(persisting.entries.last?.data == [7])
        #expect(persisting.committedEntries.last?.data != [7], "not committed before it is persisted")
        let ready = raft.drain()
        #expect(ready.committedEntries.last?.data == [7], "a single voter commits alone")
    }

    @Test("§5.2 a candidate wins with votes from a majority and not before")
    func candidateWinsWithMajority() {
        var raft = node(1, voters: [1, 2, 3, 4, 5])
        raft.campaign()
        let term = raft.term
        raft.step(Message(kind: .voteResponse, from: 2, to: 1, term: term))
        #expect(raft.role == .candidate, "2 of 5 is not a majority")
        raft.step(Message(kind: .voteResponse, from: 3, to: 1, term: term))
        #expect(raft.role == .leader)
    }

    @Test("§5.2 a candidate loses when a majority rejects it")
    func candidateLosesWhenMajorityRejects() {
        var raft = node(1, voters: [1, 2, 3])
        raft.campaign()
        let term = raft.term
        raft.step(Message(kind: .voteResponse, from: 2, to: 1, term: term, reject: true))
        raft.step(Message(kind: .voteResponse, from: 3, to: 1, term: term, reject: true))
        #expect(raft.role == .follower)
        #expect(raft.term == term)
    }

    @Test("§5.2 a candidate steps down on AppendEntries from a leader of its term")
    func candidateStepsDownOnAppendFromCurrentLeader() {
        var raft = node(1, voters: [1, 2, 3])
        raft.campaign()
        let term = raft.term
        raft.step(Message(kind: .append, from: 2, to: 1, term: term, logTerm: raft.lastTerm, index: raft.lastIndex))
        #expect(raft.role == .follower)
        #expect(raft.leader == 2)
        #expect(raft.term == term)
    }

    @Test("§5.2 a candidate with a split vote times out and starts a new term")
    func candidateRestartsElectionAfterSplitVote() {
        var raft = node(1, voters: [1, 2, 3, 4])
        raft.campaign()
        let term = raft.term
        raft.step(Message(kind: .voteResponse, from: 2, to: 1, term: term, reject: true))
        #expect(raft.role == .candidate, "1 for, 1 against, 2 unknown: undecided")
        raft.tick(times: 2 * raft.settings.electionTicks)
        #expect(raft.role == .candidate)
        #expect(raft.term == term + 1)
    }

    @Test("§5.2 a node votes for at most one candidate per term")
    func votesAtMostOncePerTerm() {
        var raft = node(1, voters: [1, 2, 3])
        let term = raft.term + 1
        raft.step(Message(kind: .vote, from: 2, to: 1, term: term, logTerm: raft.lastTerm, index: raft.lastIndex))
        raft.step(Message(kind: .vote, from: 3, to: 1, term: term, logTerm: raft.lastTerm, index: raft.lastIndex))
        let votes = raft.drainMessages().of(.voteResponse)
        #expect(votes.count == 2)
        #expect(votes.first { $0.to == 2 }?.reject == false)
        #expect(votes.first { $0.to == 3 }?.reject == true)
        // Asking again gets the same answer.
        raft.step(Message(kind: .vote, from: 2, to: 1, term: term, logTerm: raft.lastTerm, index: raft.lastIndex))
        #expect(raft.drainMessages().of(.voteResponse).first?.reject == false)
    }

    @Test("§5.2 the vote is durable before it is sent (Figure 2: persist before responding)")
    func voteIsPersistedWithItsResponse() {
        var raft = node(1, voters: [1, 2, 3])
        raft.step(Message(kind: .vote, from: 2, to: 1, term: raft.term + 1, logTerm: raft.lastTerm, index: raft.lastIndex))
        let ready = raft.drain()
        #expect(ready.hardState?.vote == 2)
        #expect(ready.mustSync, "a new vote must be fsynced before the response leaves")
        #expect(ready.messages.of(.voteResponse).first?.reject == false)
    }

    @Test("§5.2 election timeouts are randomized within [timeout, 2 × timeout)")
    func electionTimeoutsAreRandomized() {
        var observed = Set<Int>()
        for seed in UInt64(1)...40 {
            var raft = try! RaftNode(id: 1, settings: testSettings(), state: .bootstrap(ConfState(voters: [1, 2, 3])), seed: seed)
            _ = raft.drain()
            var ticks = 0
            while raft.role == .follower {
                raft.tick()
                ticks += 1
            }
            #expect(ticks >= 10 && ticks < 20)
            observed.insert(ticks)
        }
        #expect(observed.count > 3, "timeouts should spread, saw \(observed.sorted())")
    }

    @Test("§5.2 a leader sends heartbeats every heartbeat interval")
    func leaderSendsHeartbeats() {
        let net = network(voters: 3)
        net.elect(1)
        net.tick(1)
        let heartbeats = net.takeMessages(1).of(.heartbeat)
        #expect(Set(heartbeats.map(\.to)) == [2, 3])
    }

    @Test("§5.2 a follower that hears from the leader does not campaign")
    func heartbeatsSuppressElections() {
        let net = network(voters: 3)
        net.elect(1)
        let term = net[1].term
        for _ in 0..<100 {
            net.tickAll()
            net.stabilize()
        }
        #expect(net.leaders == [1])
        #expect(net[2].term == term && net[3].term == term)
    }

    // MARK: §5.3 Log replication

    @Test("§5.3 the leader appends a proposal and replicates it to every follower")
    func leaderReplicatesProposal() throws {
        let net = network(voters: 3)
        net.elect(1)
        let placed = try net.propose(1, value: 42)
        let appends = net.takeMessages(1).of(.append)
        #expect(Set(appends.map(\.to)) == [2, 3])
        #expect(appends.allSatisfy { $0.entries.last?.index == placed.index })
        for message in appends { net.deliver(message) }
        net.stabilize()
        for id in net.ids { #expect(appliedValues(net, id) == [42]) }
    }

    @Test("§5.3 an entry commits once a majority stores it, even with a follower down")
    func leaderCommitsWithMajority() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(3)
        let placed = try net.propose(1, value: 1)
        net.stabilize()
        #expect(net[1].commitIndex == placed.index)
        #expect(appliedValues(net, 2) == [1])
        #expect(appliedValues(net, 3) == [])
    }

    @Test("§5.3 nothing commits without a majority")
    func noCommitWithoutMajority() throws {
        let net = network(voters: 3)
        net.elect(1)
        net.isolate(1)
        let placed = try net.propose(1, value: 1)
        net.stabilize()
        #expect(net[1].commitIndex < placed.index)
        #expect(appliedValues(net, 1) == [])
    }

    @Test("§5.3 a follower rejects AppendEntries whose previous entry it does not hold")
    func followerRejectsMismatchedPrevious() {
        var raft = node(2, voters: [1, 2, 3])
        let term = raft.term + 1
        raft.step(Message(
            kind: .append, from: 1, to: 2, term: term, logTerm: term, index: raft.lastIndex + 5,
            entries: [Entry(term: term, index: raft.lastIndex + 6)]
        ))
        let reply = raft.drainMessages().of(.appendResponse).first
        #expect(reply?.reject == true)
        #expect(reply?.rejectHint == raft.lastIndex, "hint points at our last index")
    }

    @Test("§5.3 a follower deletes a conflicting suffix and appends the leader's entries")
    func followerTruncatesConflictingSuffix() {
        var raft = node(2, voters: [1, 2, 3])
        let base = raft.lastIndex
        let baseTerm = raft.lastTerm
        // Term 2 leader appends three entries.
        raft.step(Message(
            kind: .append, from: 1, to: 2, term: 2, logTerm: baseTerm, index: base,
            entries: (1...3).map { Entry(term: 2, index: base + $0, data: [UInt8($0)]) }
        ))
        _ = raft.drain()
        // A term 3 leader replaces the last two.
        raft.step(Message(
            kind: .append, from: 3, to: 2, term: 3, logTerm: 2, index: base + 1,
            entries: [Entry(term: 3, index: base + 2, data: [9])]
        ))
        let ready = raft.drain()
        #expect(ready.entries.map(\.index) == [base + 2], "the overwritten suffix is persisted again")
        #expect(raft.lastIndex == base + 2)
        #expect(raft.term(at: base + 2) == 3)
        #expect(raft.term(at: base + 1) == 2)
    }

    @Test("§5.3 a diverged follower converges in one round trip thanks to conflict hints")
    func leaderBacksOffWithConflictHints() throws {
        let net = network(voters: 5)
        net.elect(1)
        try net.propose(1, value: 1)
        net.stabilize()
        // Node 3 leads a term alone and collects 30 entries nobody else will have.
        net.elect(3)
        #expect(net[3].role == .leader)
        net.isolate(3)
        for junk in 1...30 { try net.propose(3, value: UInt64(1000 + junk)) }
        net.stabilize()
        // The others elect node 1 and commit 50 entries in a later term.
        net.elect(1)
        #expect(net[1].role == .leader)
        for value in 2...51 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        // A new leader probes node 3 from the end of its long log: 21 entries past node 3's end.
        net.elect(2)
        #expect(net[2].role == .leader)
        net.recover()
        let before = net.delivered.count
        net.tick(2)
        net.stabilize()
        let rejections = net.delivered[before...].filter { $0.kind == .appendResponse && $0.reject && $0.from == 3 }
        #expect(rejections.count == 1, "one hint skips the whole divergent suffix, saw \(rejections.count)")
        #expect(appliedValues(net, 3) == Array(1...51))
        #expect(net[3].lastIndex == net[2].lastIndex)
    }

    @Test("§5.3 a follower learns the commit index and applies entries in log order")
    func followersApplyCommittedEntriesInOrder() throws {
        let net = network(voters: 5)
        net.elect(1)
        for value in 1...20 { try net.propose(1, key: UInt8(value % 3), value: UInt64(value)) }
        net.stabilize()
        for id in net.ids {
            #expect(appliedValues(net, id) == Array(1...20))
            #expect(net.member(id).store == net.member(1).store)
        }
    }

    @Test("§5.3 lagging_commit: a follower that missed the commit index learns it from heartbeats")
    func laggingCommitLearnedFromHeartbeat() throws {
        let net = network(voters: 3)
        net.elect(1)
        let placed = try net.propose(1, value: 5)
        // Replicate, then drop the appends that would carry the new commit index to node 3.
        net.stabilize()
        #expect(net[3].commitIndex == placed.index)
        let next = try net.propose(1, value: 6)
        for message in net.takeMessages(1) { net.deliver(message) }
        for message in net.takeMessages(2) + net.takeMessages(3) { net.deliver(message) }
        // The leader commits; its follow-up appends to node 3 are lost.
        for message in net.takeMessages(1) where message.to != 3 { net.deliver(message) }
        #expect(net[1].commitIndex == next.index)
        #expect(net[3].commitIndex < next.index)
        net.tick(1)
        net.stabilize()
        #expect(net[3].commitIndex == next.index)
        #expect(appliedValues(net, 3) == [5, 6])
    }

    // MARK: §5.4 Safety

    @Test("§5.4.1 a voter rejects a candidate whose log is less up to date")
    func voterRejectsCandidateWithStaleLog() {
        var raft = node(1, voters: [1, 2, 3])
        let last = raft.lastIndex
        raft.step(Message(kind: .append, from: 2, to: 1, term: 2, logTerm: raft.lastTerm, index: last, entries: [Entry(term: 2, index: last + 1)]))
        _ = raft.drain()
        // Same last term, shorter log: rejected.
        raft.step(Message(kind: .vote, from: 3, to: 1, term: 3, logTerm: 2, index: last))
        #expect(raft.drainMessages().of(.voteResponse).first?.reject == true)
        // Older last term, longer log: rejected.
        raft.step(Message(kind: .vote, from: 3, to: 1, term: 4, logTerm: 1, index: last + 10))
        #expect(raft.drainMessages().of(.voteResponse).first?.reject == true)
        // Newer last term, shorter log: granted.
        raft.step(Message(kind: .vote, from: 3, to: 1, term: 5, logTerm: 3, index: 1))
        #expect(raft.drainMessages().of(.voteResponse).first?.reject == false)
    }

    @Test("§5.4.2 a leader does not commit an entry of a previous term by counting replicas")
    func leaderDoesNotCommitPreviousTermEntryByCounting() {
        // Node 1 holds an entry of term 2 nobody else has; as leader of term 4 it must not
        // commit it merely because a majority stores it.
        var raft = node(1, voters: [1, 2, 3])
        let last = raft.lastIndex
        raft.step(Message(kind: .append, from: 2, to: 1, term: 2, logTerm: raft.lastTerm, index: last, entries: [Entry(term: 2, index: last + 1, data: [1])]))
        _ = raft.drain()
        raft.step(Message(kind: .heartbeat, from: 3, to: 1, term: 3))
        _ = raft.drain()
        raft.campaign()
        raft.step(Message(kind: .voteResponse, from: 2, to: 1, term: raft.term))
        #expect(raft.role == .leader)
        _ = raft.drain()
        // Node 2 acknowledges the old entry only (not the new no-op).
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: raft.term, index: last + 1))
        #expect(raft.commitIndex < last + 1, "a majority holds the term-2 entry, but it is not of the current term")
        // Once the current term's no-op reaches a majority, both commit.
        raft.step(Message(kind: .appendResponse, from: 2, to: 1, term: raft.term, index: last + 2))
        #expect(raft.commitIndex == last + 2)
    }

    @Test("§5.4.2 Figure 8: an old-term entry on a majority is committed only with a current-term entry")
    func figure8() throws {
        let net = network(voters: 5)
        // (a) S1 leads and replicates entry X to S2 only.
        net.elect(1)
        for id: NodeID in [3, 4, 5] { net.cut(1, id) }
        try net.propose(1, value: 100)
        net.stabilize()
        let xIndex = net[1].lastIndex
        #expect(net[2].lastIndex == xIndex)
        #expect(net[1].commitIndex < xIndex)
        // (b) S1 crashes; S5 wins with S3 and S4 (S2 refuses: its log is longer) and appends Y
        // at the same index, but crashes before replicating it.
        net.recover()
        net.isolate(1)
        net.campaign(5)
        for message in net.takeMessages(5) { net.deliver(message) }
        for id: NodeID in [2, 3, 4] { for message in net.takeMessages(id) { net.deliver(message) } }
        #expect(net[5].role == .leader)
        net.isolate(5)
        try net.propose(5, value: 200)
        net.stabilize()
        #expect(net[5].term(at: xIndex) == net[5].term, "S5 holds its own entry at X's index")
        // (c) S1 restarts and is elected with S2, S3 and S4; X reaches a majority...
        net.recover()
        net.isolate(5)
        net.restart(1)
        for _ in 0..<3 where net[1].role != .leader { net.elect(1) }
        #expect(net[1].role == .leader)
        // ...and it commits only because S1's own-term no-op reaches a majority with it (e).
        #expect(net[1].commitIndex > xIndex)
        #expect(net[1].term(at: net[1].commitIndex) == net[1].term)
        for id: NodeID in [1, 2, 3, 4] { #expect(appliedValues(net, id) == [100]) }
        // S5 returns: its uncommitted Y is overwritten by X.
        net.recover()
        net.tick(1)
        net.stabilize()
        #expect(appliedValues(net, 5) == [100])
        #expect(net[5].term(at: xIndex) == net[1].term(at: xIndex))
    }

    @Test("§5.4 a new leader holds every committed entry (leader completeness)")
    func newLeaderHoldsCommittedEntries() throws {
        let net = network(voters: 5)
        net.elect(1)
        for value in 1...5 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        net.isolate(1)
        // Any node that can win holds the five committed entries.
        net.elect(4)
        #expect(net[4].role == .leader)
        try net.propose(4, value: 6)
        net.stabilize()
        for id: NodeID in [2, 3, 4, 5] { #expect(appliedValues(net, id) == Array(1...6)) }
    }

    // MARK: Restart (Figure 2, persistent state)

    @Test("Figure 2: a restarted node keeps term, vote and log from storage")
    func restartRecoversPersistentState() throws {
        let net = network(voters: 3)
        net.elect(1)
        for value in 1...3 { try net.propose(1, value: UInt64(value)) }
        net.stabilize()
        let before = net[2]
        net.restart(2)
        #expect(net[2].term == before.term)
        #expect(net[2].vote == before.vote)
        #expect(net[2].lastIndex == before.lastIndex)
        #expect(net[2].commitIndex == before.commitIndex)
        net.stabilize()
        #expect(appliedValues(net, 2) == [1, 2, 3], "replayed from the persisted log")
    }

    @Test("restart rejects a persisted state whose commit index is past its log")
    func restartRejectsInconsistentState() {
        var state = PersistentState.bootstrap(ConfState(voters: [1, 2, 3]))
        state.hardState.commit = 99
        #expect(throws: RaftError.self) { try RaftNode(id: 1, state: state) }
        var gap = PersistentState.bootstrap(ConfState(voters: [1, 2, 3]))
        gap.entries[1].index = 7
        #expect(throws: RaftError.self) { try RaftNode(id: 1, state: gap) }
        #expect(throws: RaftError.self) { try RaftNode(id: 0, state: .joining) }
    }
}
