public import Raft
public import RaftTransport

/// Membership changes and leadership transfer, all through the log.
extension ClusterNode {
    /// Adds a node as a learner: it receives the log (or a snapshot) but does not vote.
    public func addLearner(_ member: NodeID, address: PeerAddress) async throws {
        guard member != .none else { throw ClusterError(.rejected, "node id 0 is reserved") }
        guard !raft.confState.allMembers.contains(member) else {
            throw ClusterError(.rejected, "node \(member) is already a member")
        }
        _ = try await proposeTagged(.memberAddress, ClusterLog.memberAddress(member, address))
        try await changeMembership(.addLearner(member))
    }

    /// Adds a learner given its peer address as text (`host:port`).
    public func addLearner(_ member: UInt64, peerAddress text: String) async throws {
        guard let address = PeerAddress(text) else { throw ClusterError(.rejected, "bad peer address '\(text)': expected host:port") }
        try await addLearner(member, address: address)
    }

    /// Changes a member's peer address (it moved, or was re-addressed): the new address goes
    /// through the log, so every node — and a node that joins later — dials it.
    public func updateAddress(_ member: UInt64, peerAddress text: String) async throws {
        guard let address = PeerAddress(text) else { throw ClusterError(.rejected, "bad peer address '\(text)': expected host:port") }
        let member = NodeID(member)
        guard raft.confState.allMembers.contains(member) else { throw ClusterError(.rejected, "node \(member) is not a member") }
        guard raft.role == .leader else { throw notLeader() }
        _ = try await proposeTagged(.memberAddress, ClusterLog.memberAddress(member, address))
    }

    /// Makes a caught-up learner a voter.
    public func promote(_ member: NodeID, maxLag: LogIndex = 1_000) async throws {
        guard raft.confState.isLearner(member) else { throw ClusterError(.rejected, "node \(member) is not a learner") }
        guard raft.role == .leader else { throw notLeader() }
        let match = raft.progress[member]?.match ?? 0
        guard match + maxLag >= raft.commitIndex else {
            throw ClusterError(.rejected, "node \(member) is not caught up (match \(match), commit \(raft.commitIndex))")
        }
        try await changeMembership(.addVoter(member))
    }

    public func remove(_ member: NodeID) async throws {
        guard raft.confState.allMembers.contains(member) else { throw ClusterError(.rejected, "node \(member) is not a member") }
        try await changeMembership(.removeNode(member))
    }

    private func changeMembership(_ change: ConfChange) async throws {
        if let failure = waiters.failure { throw failure }
        guard raft.role == .leader else { throw notLeader() }
        let index: LogIndex
        do {
            index = try raft.proposeConfChange(change)
        } catch {
            throw ClusterError(.rejected, error.message)
        }
        _ = try await waitForApply(index: index, term: raft.term)
    }

    /// Hands leadership to `target`, or to the most caught-up other voter; returns the new leader.
    @discardableResult
    public func transferLeadership(to target: NodeID? = nil, timeout: Duration = .seconds(3)) async throws -> NodeID {
        guard raft.role == .leader else { throw notLeader() }
        let voters = raft.confState.voters.filter { $0 != id }
        guard let chosen = target ?? voters.max(by: { (raft.progress[$0]?.match ?? 0) < (raft.progress[$1]?.match ?? 0) }) else {
            throw ClusterError(.rejected, "no other voter to hand leadership to")
        }
        guard raft.confState.voters.contains(chosen), chosen != id else {
            throw ClusterError(.rejected, "node \(chosen) is not another voter")
        }
        try drive { raft in
            do { try raft.transferLeadership(to: chosen) } catch let error as RaftError { throw ClusterError(.rejected, error.message) }
        }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            if raft.leader == chosen { return chosen }
            try await Task.sleep(for: settings.tick)
        }
        throw ClusterError(.timeout, "node \(chosen) did not take over within \(timeout)")
    }

    /// Hands leadership away if this node leads, so a planned stop costs no election.
    public func prepareToStop() async {
        guard raft.role == .leader, raft.confState.voters.count > 1 else { return }
        do {
            let successor = try await transferLeadership(timeout: .seconds(2))
            logger.info("handed leadership over before stopping", metadata: ["to": "\(successor)"])
        } catch {
            logger.warning("could not hand leadership over", metadata: ["error": "\(error)"])
        }
    }
}
