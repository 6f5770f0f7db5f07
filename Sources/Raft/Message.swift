/// The kinds of message Raft peers exchange.
///
/// Raw values are part of the wire format (see `RaftTransport`); never renumber them.
public enum MessageKind: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// AppendEntries (§5.3): `index`/`logTerm` name the entry before `entries`.
    case append = 1
    /// Reply to `append`: `index` is the follower's match on success, the rejected index otherwise.
    case appendResponse = 2
    /// RequestVote (§5.2): `index`/`logTerm` describe the candidate's last entry.
    case vote = 3
    case voteResponse = 4
    /// PreVote (thesis §9.6): asks whether a vote would be granted at `term`, changing nothing.
    case preVote = 5
    case preVoteResponse = 6
    /// Leader heartbeat; carries `commit` (clamped to the follower's match) and a read context.
    case heartbeat = 7
    case heartbeatResponse = 8
    /// InstallSnapshot (§7): `snapshot` is the whole compacted image.
    case snapshot = 9
    /// Tells the receiver to campaign at once, skipping PreVote (leadership transfer, thesis §3.10).
    case timeoutNow = 10
    /// A follower asks the leader for a read index; `context` identifies the read. Carries no term.
    case readIndex = 11
    case readIndexResponse = 12
    /// Asks the leader to hand leadership to the node named in `from` (the transferee), as etcd
    /// does; a follower forwards an operator's request in this shape. Carries no term.
    case transferLeader = 13

    public var description: String {
        switch self {
        case .append: "App"
        case .appendResponse: "AppResp"
        case .vote: "Vote"
        case .voteResponse: "VoteResp"
        case .preVote: "PreVote"
        case .preVoteResponse: "PreVoteResp"
        case .heartbeat: "Heartbeat"
        case .heartbeatResponse: "HeartbeatResp"
        case .snapshot: "Snap"
        case .timeoutNow: "TimeoutNow"
        case .readIndex: "ReadIndex"
        case .readIndexResponse: "ReadIndexResp"
        case .transferLeader: "TransferLeader"
        }
    }

    /// Whether a reply of this kind answers a request made at the reply's term (vote replies).
    var isVoteResponse: Bool { self == .voteResponse || self == .preVoteResponse }
}

/// One message between two peers. A flat value, so it encodes simply and compares cheaply.
public struct Message: Sendable, Hashable, CustomStringConvertible {
    public var kind: MessageKind
    public var from: NodeID
    public var to: NodeID
    public var term: Term
    /// Log term of the entry at `index` (append, vote) or the hint term of a rejection.
    public var logTerm: Term
    public var index: LogIndex
    public var entries: [Entry]
    public var commit: LogIndex
    public var reject: Bool
    /// On a rejected append: the index the follower suggests probing from.
    public var rejectHint: LogIndex
    public var snapshot: Snapshot?
    /// Opaque read-index context carried by heartbeats and read-index messages.
    public var context: [UInt8]

    public init(
        kind: MessageKind, from: NodeID = .none, to: NodeID = .none, term: Term = 0,
        logTerm: Term = 0, index: LogIndex = 0, entries: [Entry] = [], commit: LogIndex = 0,
        reject: Bool = false, rejectHint: LogIndex = 0, snapshot: Snapshot? = nil, context: [UInt8] = []
    ) {
        self.kind = kind
        self.from = from
        self.to = to
        self.term = term
        self.logTerm = logTerm
        self.index = index
        self.entries = entries
        self.commit = commit
        self.reject = reject
        self.rejectHint = rejectHint
        self.snapshot = snapshot
        self.context = context
    }

    public var description: String {
        var text = "\(from)->\(to) \(kind) term=\(term)"
        switch kind {
        case .append:
            text += " prev=\(index)/\(logTerm) commit=\(commit) entries=\(entries.map { "\($0.index)/\($0.term)" })"
        case .appendResponse:
            text += reject ? " reject=\(index) hint=\(rejectHint)/\(logTerm)" : " index=\(index)"
        case .vote, .preVote:
            text += " last=\(index)/\(logTerm)"
        case .voteResponse, .preVoteResponse:
            text += reject ? " rejected" : " granted"
        case .heartbeat:
            text += " commit=\(commit)"
        case .snapshot:
            if let snapshot { text += " snap=\(snapshot.metadata.index)/\(snapshot.metadata.term)" }
        case .readIndexResponse:
            text += " index=\(index)"
        case .heartbeatResponse, .timeoutNow, .readIndex, .transferLeader:
            break
        }
        return text
    }

    /// Requests forwarded to the leader carry no term: they claim no authority.
    var carriesTerm: Bool { kind != .readIndex && kind != .transferLeader }
}
