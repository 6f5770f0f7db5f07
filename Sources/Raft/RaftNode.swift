/// What a node recovered from stable storage at start-up.
public struct PersistentState: Sendable, Hashable {
    public var hardState: HardState
    /// The latest snapshot; at index 0 it only carries the bootstrap configuration.
    public var snapshot: Snapshot
    /// Entries after the snapshot, in order.
    public var entries: [Entry]

    public init(hardState: HardState, snapshot: Snapshot, entries: [Entry]) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
    }

    /// A founding member of a new cluster. The initial membership is written into the log as
    /// committed configuration entries at term 1 (one change per member, all founders alike), so
    /// that a node joining later and replaying the log from index 1 derives the same membership.
    public static func bootstrap(_ confState: ConfState) -> PersistentState {
        let changes = confState.voters.map(ConfChange.addVoter) + confState.learners.map(ConfChange.addLearner)
        guard !changes.isEmpty else { return joining }
        let entries = changes.enumerated().map { position, change in
            Entry(term: 1, index: LogIndex(position + 1), kind: .confChange, data: change.encoded())
        }
        return PersistentState(
            hardState: HardState(term: 1, vote: .none, commit: LogIndex(entries.count)),
            snapshot: Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, confState: ConfState()), data: []),
            entries: entries
        )
    }

    /// A node that will join an existing cluster: empty, not a member of anything until the
    /// leader's log or snapshot says so.
    public static let joining = PersistentState(
        hardState: HardState(),
        snapshot: Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, confState: ConfState()), data: []),
        entries: []
    )
}

/// The Raft consensus state machine of one node.
///
/// A value with no I/O, clock, threads or hidden randomness. The runtime drives it with
/// ``tick()``, ``step(_:)`` and the proposal methods, then collects a ``Ready`` batch with
/// ``ready()``, carries it out in order (persist entries, hard state and snapshot; send the
/// messages; apply the committed entries) and acknowledges it with ``advance(_:)``.
///
/// The log since the last snapshot is kept in memory; ``takeSnapshot(data:)`` bounds it.
public struct RaftNode: Sendable {
    public let id: NodeID
    public let settings: RaftSettings
    var random: SplitMix64

    public internal(set) var term: Term = 0
    public internal(set) var vote: NodeID = .none
    public internal(set) var leader: NodeID = .none
    public internal(set) var role: RaftRole = .follower
    public internal(set) var confState: ConfState

    var log: RaftLog
    /// The latest snapshot, sent to followers that are too far behind.
    public internal(set) var latestSnapshot: Snapshot?
    /// The leader's view of every member (kept on every node so a new leader starts from it).
    public internal(set) var progress: [NodeID: Progress] = [:]
    /// Votes received in the current (pre-)election.
    var votes: [NodeID: Bool] = [:]

    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    /// The node a leadership transfer is handing over to, if any.
    public internal(set) var transferee: NodeID = .none
    /// No configuration change may be proposed until the entry at this index is applied.
    public internal(set) var pendingConfIndex: LogIndex = 0
    var readOnly = ReadOnlyQueue()
    /// A TimeoutNow arrived while a committed configuration change was unapplied: campaign as
    /// soon as it is applied.
    var campaignAfterApply = false

    var outbox: [Message] = []
    var readStates: [ReadState] = []
    /// Entries were appended since the last broadcast: appends go out once per `Ready` (batching).
    var needsBroadcast = false
    var previousSoftState: SoftState
    var previousHardState: HardState
    var awaitingAdvance = false

    /// Marks vote requests that come from a leadership transfer: they bypass the leader lease.
    static let transferContext: [UInt8] = [1]

    /// Creates a node from what it persisted, as a follower with no known leader.
    public init(id: NodeID, settings: RaftSettings = RaftSettings(), state: PersistentState, seed: UInt64 = 0) throws(RaftError) {
        guard id != .none else { throw .invalidRequest("node id 0 is reserved") }
        try settings.validate()
        let snapshot = state.snapshot.metadata
        var expected = snapshot.index + 1
        for entry in state.entries {
            guard entry.index == expected else {
                throw .invalidRequest("persisted entries are not contiguous: expected \(expected), found \(entry.index)")
            }
            expected += 1
        }
        let lastIndex = snapshot.index + LogIndex(state.entries.count)
        guard state.hardState.commit <= lastIndex else {
            throw .invalidRequest("persisted commit \(state.hardState.commit) is beyond the last entry \(lastIndex)")
        }
        self.id = id
        self.settings = settings
        self.random = SplitMix64(seed: seed ^ (id &* 0x9E37_79B9_7F4A_7C15))
        self.log = RaftLog(
            snapshotIndex: snapshot.index, snapshotTerm: snapshot.term, entries: state.entries,
            committed: max(state.hardState.commit, snapshot.index)
        )
        self.confState = snapshot.confState
        self.latestSnapshot = snapshot.index > 0 ? state.snapshot : nil
        self.previousSoftState = SoftState(leader: .none, role: .follower)
        self.previousHardState = state.hardState
        becomeFollower(term: state.hardState.term, leader: .none)
        vote = state.hardState.vote
        previousHardState = hardState
    }

    // MARK: Observing

    public var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    public var softState: SoftState { SoftState(leader: leader, role: role) }
    public var commitIndex: LogIndex { log.committed }
    public var appliedIndex: LogIndex { log.applied }
    public var firstIndex: LogIndex { log.firstIndex }
    public var lastIndex: LogIndex { log.lastIndex }
    public var lastTerm: Term { log.lastTerm }
    public var isLearner: Bool { confState.isLearner(id) }
    /// A node campaigns only when it is a voter of its configuration.
    public var isPromotable: Bool { confState.isVoter(id) }

    /// The term of the entry at `index`, or nil when compacted or beyond the end.
    public func term(at index: LogIndex) -> Term? { log.term(at: index) }

    /// Entries in `from...through` still in memory (after the latest snapshot).
    public func entries(from: LogIndex, through: LogIndex) throws(RaftError) -> [Entry] {
        guard from >= log.firstIndex else { throw .compacted(index: from, firstIndex: log.firstIndex) }
        let end = min(through, log.lastIndex)
        guard from <= end else { return [] }
        return log.slice(from: from, to: end + 1, maxBytes: .max)
    }

    // MARK: Driving

    /// Advances logical time by one tick.
    public mutating func tick() {
        switch role {
        case .follower, .preCandidate, .candidate: tickElection()
        case .leader: tickHeartbeat()
        }
    }

    /// Starts an election now (subject to PreVote), as an election timeout would.
    public mutating func campaign() {
        startElection(transfer: false)
    }

    /// Proposes application data. Returns where the entry landed; it is committed when an entry
    /// with this index *and* term reaches the state machine.
    @discardableResult
    public mutating func propose(_ data: [UInt8]) throws(RaftError) -> (index: LogIndex, term: Term) {
        try checkCanPropose()
        let index = appendAsLeader([(EntryKind.normal, data)])
        return (index, term)
    }

    /// Proposes several entries at once; they land at consecutive indexes.
    @discardableResult
    public mutating func propose(batch: [[UInt8]]) throws(RaftError) -> (firstIndex: LogIndex, term: Term) {
        try checkCanPropose()
        guard !batch.isEmpty else { throw .invalidRequest("empty proposal batch") }
        let last = appendAsLeader(batch.map { (EntryKind.normal, $0) })
        return (last - LogIndex(batch.count) + 1, term)
    }

    /// Asks the leader to hand leadership to `target`. On a follower the request is forwarded.
    public mutating func transferLeadership(to target: NodeID) throws(RaftError) {
        let request = Message(kind: .transferLeader, from: target, to: id)
        switch role {
        case .leader:
            handleTransferLeader(request)
        case .follower where leader != .none:
            send(Message(kind: .transferLeader, from: target, to: leader))
        default:
            throw .notLeader(leader: leader)
        }
    }

    /// Forgets the current leader, so this follower grants PreVotes at once (e.g. when the
    /// runtime learns the leader is gone). Ignored unless a follower.
    public mutating func forgetLeader() {
        guard role == .follower else { return }
        leader = .none
    }

    // MARK: Role transitions

    mutating func becomeFollower(term: Term, leader: NodeID) {
        reset(term: term)
        self.leader = leader
        role = .follower
    }

    mutating func becomePreCandidate() {
        precondition(role != .leader, "node \(id): leader cannot become pre-candidate in term \(term)")
        // PreVote changes neither term nor vote.
        votes = [:]
        leader = .none
        role = .preCandidate
    }

    mutating func becomeCandidate() {
        precondition(role != .leader, "node \(id): leader cannot become candidate in term \(term)")
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    mutating func becomeLeader() {
        precondition(role == .candidate, "node \(id): only a candidate becomes leader, was \(role) in term \(term)")
        reset(term: term)
        leader = id
        role = .leader
        progress[id]?.becomeReplicate()
        // The no-op entry commits the leader's term (§5.4.2, §8); no configuration change may be
        // proposed before it is applied (the one-server-change fix of the thesis' errata).
        let noop = appendAsLeader([(EntryKind.normal, [])])
        pendingConfIndex = noop
    }

    private mutating func reset(term newTerm: Term) {
        if term != newTerm {
            term = newTerm
            vote = .none
        }
        leader = .none
        electionElapsed = 0
        heartbeatElapsed = 0
        randomizedElectionTimeout = settings.electionTicks + Int(random.next() % UInt64(settings.electionTicks))
        transferee = .none
        campaignAfterApply = false
        votes = [:]
        pendingConfIndex = 0
        readOnly = ReadOnlyQueue()
        resetProgress()
    }

    mutating func resetProgress() {
        var fresh: [NodeID: Progress] = [:]
        for member in confState.allMembers {
            var entry = Progress(
                next: log.lastIndex + 1, isLearner: !confState.isVoter(member),
                maxInflight: settings.maxInflightMessages, maxInflightBytes: settings.maxInflightBytes
            )
            if member == id {
                // Only what is durable counts towards a commit.
                entry.match = min(log.lastIndex, log.stableIndex)
                entry.recentActive = true
            }
            fresh[member] = entry
        }
        progress = fresh
    }

    // MARK: Ticks

    private mutating func tickElection() {
        electionElapsed += 1
        if isPromotable && electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            startElection(transfer: false)
        }
    }

    private mutating func tickHeartbeat() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if electionElapsed >= settings.electionTicks {
            electionElapsed = 0
            if settings.checkQuorum && !isQuorumActive() {
                // Thesis §6.2: a leader that cannot reach a quorum stops serving.
                becomeFollower(term: term, leader: .none)
                return
            }
            // A transfer that has not finished within an election timeout is abandoned.
            transferee = .none
        }
        for member in confState.allMembers where member != id {
            guard var peer = progress[member], peer.state == .snapshot else { continue }
            peer.snapshotTicks += 1
            if peer.snapshotTicks >= settings.snapshotTimeoutTicks {
                peer.pendingSnapshot = 0
                peer.becomeProbe()
            }
            progress[member] = peer
        }
        if heartbeatElapsed >= settings.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat(context: readOnly.lastContext ?? [])
        }
    }

    /// Whether a quorum answered since the last check; clears the marks for the next round.
    private mutating func isQuorumActive() -> Bool {
        let result = confState.quorum.voteResult { member in
            member == id ? true : (progress[member]?.recentActive ?? false)
        }
        for member in confState.allMembers where member != id {
            progress[member]?.recentActive = false
        }
        return result == .won
    }

    // MARK: Elections

    /// Starts a (pre-)election if this node may. `transfer` skips PreVote and the leases of others.
    mutating func startElection(transfer: Bool) {
        guard role != .leader, isPromotable else { return }
        // A configuration change that is committed but not applied could change who votes.
        if hasUnappliedConfChange() {
            if transfer { campaignAfterApply = true }
            return
        }
        if settings.preVote && !transfer {
            becomePreCandidate()
            requestVotes(kind: .preVote, term: term + 1, transfer: false)
        } else {
            becomeCandidate()
            requestVotes(kind: .vote, term: term, transfer: transfer)
        }
    }

    private mutating func requestVotes(kind: MessageKind, term electionTerm: Term, transfer: Bool) {
        if recordVote(from: id, granted: true) == .won {
            // A single voter wins alone.
            electionWon()
            return
        }
        for voter in confState.quorum.voters where voter != id {
            send(Message(
                kind: kind, to: voter, term: electionTerm, logTerm: log.lastTerm, index: log.lastIndex,
                context: transfer ? Self.transferContext : []
            ))
        }
    }

    mutating func recordVote(from voter: NodeID, granted: Bool) -> VoteResult {
        if votes[voter] == nil { votes[voter] = granted }
        return confState.quorum.voteResult { votes[$0] }
    }

    mutating func electionWon() {
        if role == .preCandidate {
            becomeCandidate()
            requestVotes(kind: .vote, term: term, transfer: false)
        } else {
            becomeLeader()
        }
    }

    func hasUnappliedConfChange() -> Bool {
        guard log.applied < log.committed else { return false }
        let from = max(log.applied + 1, log.firstIndex)
        guard from <= log.committed else { return false }
        return log.slice(from: from, to: log.committed + 1, maxBytes: .max).contains { $0.kind == .confChange }
    }

    // MARK: Sending

    mutating func send(_ message: Message) {
        var message = message
        precondition(message.to != id, "node \(id) sending \(message.kind) to itself")
        message.from = message.kind == .transferLeader ? message.from : id
        if message.carriesTerm && message.term == 0 && !message.kind.isVoteResponse {
            message.term = term
        } else if !message.carriesTerm {
            message.term = 0
        }
        outbox.append(message)
    }

    private func checkCanPropose() throws(RaftError) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard transferee == .none else { throw .transferInProgress(to: transferee) }
    }
}
