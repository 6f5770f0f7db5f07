/// A node's identity in the cluster. `0` is reserved for "none".
public typealias NodeID = UInt64
/// A Raft term (§5.1). Terms only grow.
public typealias Term = UInt64
/// A position in the replicated log; the first entry has index 1.
public typealias LogIndex = UInt64

extension NodeID {
    /// No node: used for "no leader known" and "voted for nobody".
    public static let none: NodeID = 0
}

/// The role a node plays in its current term (§5.1, plus the PreVote phase of §9.6 of the thesis).
public enum RaftRole: String, Sendable, Hashable, CustomStringConvertible {
    case follower
    case preCandidate
    case candidate
    case leader

    public var description: String { rawValue }
}

/// What a log entry carries.
public enum EntryKind: UInt8, Sendable, Hashable {
    /// Application data, handed to the state machine when committed.
    case normal = 0
    /// A membership change; `data` holds an encoded ``ConfChange``.
    case confChange = 1
}

/// One entry of the replicated log.
public struct Entry: Sendable, Hashable {
    public var term: Term
    public var index: LogIndex
    public var kind: EntryKind
    public var data: [UInt8]

    public init(term: Term, index: LogIndex, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }

    /// Approximate wire size, used for flow control and message size limits.
    public var byteSize: Int { data.count + 24 }
}

/// What must survive a crash before a node acts on it (§5.1, Figure 2 "persistent state").
public struct HardState: Sendable, Hashable {
    public var term: Term
    public var vote: NodeID
    public var commit: LogIndex

    public init(term: Term = 0, vote: NodeID = .none, commit: LogIndex = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// Membership at a point of the log. Outside a joint configuration `votersOutgoing` is empty.
///
/// Every list is kept sorted, so iterating a configuration is deterministic.
public struct ConfState: Sendable, Hashable {
    /// Voters of the incoming (or only) configuration.
    public var voters: [NodeID]
    /// Voters of the outgoing configuration while joint; empty otherwise.
    public var votersOutgoing: [NodeID]
    /// Non-voting members that receive the log.
    public var learners: [NodeID]
    /// Voters of the outgoing configuration that become learners when the joint state is left.
    public var learnersNext: [NodeID]
    /// Whether the leader leaves the joint configuration by itself once it is applied.
    public var autoLeave: Bool

    public init(
        voters: [NodeID] = [], votersOutgoing: [NodeID] = [], learners: [NodeID] = [],
        learnersNext: [NodeID] = [], autoLeave: Bool = false
    ) {
        self.voters = voters.sorted()
        self.votersOutgoing = votersOutgoing.sorted()
        self.learners = learners.sorted()
        self.learnersNext = learnersNext.sorted()
        self.autoLeave = autoLeave
    }

    public var isJoint: Bool { !votersOutgoing.isEmpty }

    /// Every node that receives the log, voters and learners, sorted and without repeats.
    public var allMembers: [NodeID] {
        Array(Set(voters + votersOutgoing + learners + learnersNext)).sorted()
    }

    /// True when `id` votes in either half of the configuration.
    public func isVoter(_ id: NodeID) -> Bool {
        voters.contains(id) || votersOutgoing.contains(id)
    }

    public func isLearner(_ id: NodeID) -> Bool {
        learners.contains(id) || learnersNext.contains(id)
    }

    var quorum: JointConfig { JointConfig(incoming: voters, outgoing: votersOutgoing) }
}

/// Where a snapshot sits in the log and the membership it carries.
public struct SnapshotMetadata: Sendable, Hashable {
    public var index: LogIndex
    public var term: Term
    public var confState: ConfState

    public init(index: LogIndex, term: Term, confState: ConfState) {
        self.index = index
        self.term = term
        self.confState = confState
    }
}

/// A compacted prefix of the log: the state machine's image at `metadata.index`.
public struct Snapshot: Sendable, Hashable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata, data: [UInt8]) {
        self.metadata = metadata
        self.data = data
    }
}

/// A linearizable read point: once the state machine has applied `index`, a read tagged with
/// `context` may be served locally (§6.4).
public struct ReadState: Sendable, Hashable {
    public var index: LogIndex
    public var context: [UInt8]

    public init(index: LogIndex, context: [UInt8]) {
        self.index = index
        self.context = context
    }
}

/// Volatile facts that the runtime wants to observe (leader tracking, metrics).
public struct SoftState: Sendable, Hashable {
    public var leader: NodeID
    public var role: RaftRole

    public init(leader: NodeID, role: RaftRole) {
        self.leader = leader
        self.role = role
    }
}
