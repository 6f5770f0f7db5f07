public import Raft

/// This node's view of the leadership, for the serving layer's per-request checks and for
/// subscribers of ``ClusterNode/leadershipChanges()``.
public struct Leadership: Sendable, Hashable {
    public var isLeader: Bool
    public var leader: NodeID?
    public var term: Term
    public var appliedIndex: LogIndex
    public var commitIndex: LogIndex

    public init(isLeader: Bool, leader: NodeID?, term: Term, appliedIndex: LogIndex, commitIndex: LogIndex) {
        self.isLeader = isLeader
        self.leader = leader
        self.term = term
        self.appliedIndex = appliedIndex
        self.commitIndex = commitIndex
    }

    /// Same role, leader and term: what subscribers care about (indexes move all the time).
    public func sameRole(as other: Leadership) -> Bool {
        isLeader == other.isLeader && leader == other.leader && term == other.term
    }
}

/// A node's view of the cluster, for the admin API and `fulcrumctl status`.
public struct NodeStatus: Sendable, Hashable, Codable {
    public struct Member: Sendable, Hashable, Codable {
        public var id: UInt64
        public var address: String
        public var voter: Bool
        /// The leader's knowledge of the member's log; nil on followers.
        public var match: UInt64?
    }

    public var id: UInt64
    public var clusterID: String
    public var role: String
    public var term: UInt64
    public var leader: UInt64?
    public var leaderAddress: String?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastIndex: UInt64
    public var firstIndex: UInt64
    public var members: [Member]
}
