/// Everything the runtime must do after driving the core, in this order:
/// 1. persist `snapshot`, `entries` and `hardState` (fsync when `mustSync`);
/// 2. send `messages`;
/// 3. restore the state machine from `snapshot`, then apply `committedEntries` in order;
/// 4. call ``RaftNode/advance(_:)`` with this value.
public struct Ready: Sendable {
    /// Leader or role changed since the last batch.
    public var softState: SoftState?
    /// Term, vote or commit changed since the last batch.
    public var hardState: HardState?
    /// Entries to append to stable storage (they may overwrite a conflicting suffix).
    public var entries: [Entry]
    /// A snapshot received from the leader, to persist and restore.
    public var snapshot: Snapshot?
    /// Committed entries for the state machine, in log order.
    public var committedEntries: [Entry]
    /// Messages to send, only after the persistence above is durable.
    public var messages: [Message]
    /// Linearizable read points that became known.
    public var readStates: [ReadState]
    /// Whether step 1 needs an fsync: new entries or a new term/vote must be durable before any
    /// message leaves; a new commit index alone need not.
    public var mustSync: Bool
    /// The batch is a leader's with no new term, vote or snapshot: its messages may be sent
    /// *before* its entries are persisted (thesis §10.2.1), overlapping the leader's fsync with
    /// the followers'. The leader counts its own entries towards a commit only once
    /// ``RaftNode/advance(_:)`` reports them durable. Otherwise persist first, then send.
    public var mayGoBeforePersist: Bool

    public var isEmpty: Bool {
        softState == nil && hardState == nil && entries.isEmpty && snapshot == nil
            && committedEntries.isEmpty && messages.isEmpty && readStates.isEmpty
    }
}

extension RaftNode {
    /// Whether ``ready()`` would return anything.
    public var hasReady: Bool {
        if awaitingAdvance { return false }
        return needsBroadcast || !outbox.isEmpty || !readStates.isEmpty || softState != previousSoftState
            || hardState != previousHardState || log.stableIndex < log.lastIndex || log.pendingSnapshot != nil
            || log.hasNextCommittedEntries
    }

    /// Collects the work accumulated since the last batch. Call ``advance(_:)`` before the next.
    public mutating func ready() -> Ready {
        precondition(!awaitingAdvance, "node \(id): ready() called twice without advance()")
        if needsBroadcast {
            needsBroadcast = false
            if role == .leader { broadcastAppend() }
        }
        let soft = softState
        let hard = hardState
        let ready = Ready(
            softState: soft != previousSoftState ? soft : nil,
            hardState: hard != previousHardState ? hard : nil,
            entries: log.unstableEntries,
            snapshot: log.pendingSnapshot,
            committedEntries: log.nextCommittedEntries(maxBytes: settings.maxCommittedBytesPerReady),
            messages: outbox,
            readStates: readStates,
            mustSync: hard.term != previousHardState.term || hard.vote != previousHardState.vote
                || log.stableIndex < log.lastIndex || log.pendingSnapshot != nil,
            mayGoBeforePersist: role == .leader && soft.role == previousSoftState.role
                && hard.term == previousHardState.term && hard.vote == previousHardState.vote
                && log.pendingSnapshot == nil
        )
        previousSoftState = soft
        previousHardState = hard
        outbox = []
        readStates = []
        awaitingAdvance = true
        return ready
    }

    /// Acknowledges that `ready` was carried out: its entries and snapshot are durable and its
    /// committed entries are applied.
    public mutating func advance(_ ready: Ready) {
        precondition(awaitingAdvance, "node \(id): advance() without a pending ready()")
        awaitingAdvance = false
        if let snapshot = ready.snapshot, log.pendingSnapshot?.metadata == snapshot.metadata {
            log.pendingSnapshot = nil
            log.applied = max(log.applied, snapshot.metadata.index)
        }
        if let last = ready.entries.last, log.term(at: last.index) == last.term {
            log.stableIndex = max(log.stableIndex, min(last.index, log.lastIndex))
        }
        // A leader's own entries count once durable; a commit moved this way reaches followers
        // with the next appends.
        if role == .leader, progress[id]?.acknowledge(log.stableIndex) == true, maybeCommit() {
            needsBroadcast = true
        }
        for entry in ready.committedEntries {
            log.applied = entry.index
            if entry.kind == .confChange { applyConfChange(entry) }
        }
        if campaignAfterApply && role == .follower && !hasUnappliedConfChange() {
            campaignAfterApply = false
            startElection(transfer: true)
        }
        // Leave a joint configuration as soon as entering it is applied (auto-leave).
        if role == .leader && confState.isJoint && confState.autoLeave && pendingConfIndex <= log.applied {
            pendingConfIndex = appendAsLeader([(.confChange, ConfChange.leaveJoint.encoded())])
        }
    }

    /// Compacts the log up to the applied index, which `data` must be the state machine's image
    /// of. Returns the snapshot for the runtime to persist before it deletes the covered entries.
    @discardableResult
    public mutating func takeSnapshot(data: [UInt8]) throws(RaftError) -> Snapshot {
        precondition(!awaitingAdvance, "node \(id): takeSnapshot() between ready() and advance()")
        let index = log.applied
        guard index > log.snapshotIndex else {
            throw .snapshotOutOfDate(index: index, current: log.snapshotIndex)
        }
        let snapshot = Snapshot(
            metadata: SnapshotMetadata(index: index, term: log.term(at: index)!, confState: confState),
            data: data
        )
        log.compact(to: index)
        latestSnapshot = snapshot
        return snapshot
    }
}
