/// The outcome of counting votes.
public enum VoteResult: Sendable, Hashable {
    /// Not decided yet: enough voters have not answered.
    case pending
    /// Decided against: a quorum can no longer be reached.
    case lost
    /// A quorum granted.
    case won
}

/// A set of voters decided by simple majority.
public struct MajorityConfig: Sendable, Hashable {
    /// Sorted, without repeats.
    public let voters: [NodeID]

    public init(_ voters: [NodeID]) {
        self.voters = Array(Set(voters)).sorted()
    }

    public var isEmpty: Bool { voters.isEmpty }
    public var quorum: Int { voters.count / 2 + 1 }

    /// The largest index that a majority has acknowledged. `acked(id)` returns the index a voter is
    /// known to hold, or nil when unknown (counted as 0).
    ///
    /// An empty configuration returns `LogIndex.max`, so it never holds back a joint configuration.
    public func committedIndex(_ acked: (NodeID) -> LogIndex?) -> LogIndex {
        if voters.isEmpty { return .max }
        // A majority holds at least the quorum-th largest value.
        var values = [LogIndex]()
        values.reserveCapacity(voters.count)
        for id in voters { values.append(acked(id) ?? 0) }
        values.sort(by: >)
        return values[quorum - 1]
    }

    /// The result of an election in which `vote(id)` is true (granted), false (rejected) or nil
    /// (no answer yet). An empty configuration wins, for joint-configuration convenience.
    public func voteResult(_ vote: (NodeID) -> Bool?) -> VoteResult {
        if voters.isEmpty { return .won }
        var granted = 0
        var missing = 0
        for id in voters {
            switch vote(id) {
            case true?: granted += 1
            case false?: break
            case nil: missing += 1
            }
        }
        if granted >= quorum { return .won }
        if granted + missing >= quorum { return .pending }
        return .lost
    }
}

/// Two majority configurations that must both agree: the joint consensus of §6.
public struct JointConfig: Sendable, Hashable {
    public let incoming: MajorityConfig
    public let outgoing: MajorityConfig

    public init(incoming: [NodeID], outgoing: [NodeID] = []) {
        self.incoming = MajorityConfig(incoming)
        self.outgoing = MajorityConfig(outgoing)
    }

    /// Every voter of either half, sorted and without repeats.
    public var voters: [NodeID] { Array(Set(incoming.voters + outgoing.voters)).sorted() }

    /// An index is committed only when a majority of each half holds it.
    public func committedIndex(_ acked: (NodeID) -> LogIndex?) -> LogIndex {
        min(incoming.committedIndex(acked), outgoing.committedIndex(acked))
    }

    /// Both halves must win; either losing loses.
    public func voteResult(_ vote: (NodeID) -> Bool?) -> VoteResult {
        let first = incoming.voteResult(vote)
        let second = outgoing.voteResult(vote)
        if first == second { return first }
        if first == .lost || second == .lost { return .lost }
        return .pending
    }
}
