/// How the leader is currently replicating to one peer.
public enum ReplicationState: String, Sendable, Hashable {
    /// One append at a time until the follower's position is found.
    case probe
    /// Optimistic pipelining: appends are sent ahead of acknowledgements, bounded by inflights.
    case replicate
    /// A snapshot is on its way; appends wait until it is acknowledged.
    case snapshot
}

/// The leader's view of one peer (§5.3 nextIndex/matchIndex, plus flow control).
public struct Progress: Sendable, Hashable {
    /// Highest index known to be replicated on the peer.
    public internal(set) var match: LogIndex
    /// Next index to send.
    public internal(set) var next: LogIndex
    public internal(set) var state: ReplicationState = .probe
    /// In probe state: an append was sent and no answer came yet.
    var probeSent = false
    /// In snapshot state: the index of the snapshot being sent.
    public internal(set) var pendingSnapshot: LogIndex = 0
    /// Ticks spent in snapshot state without an answer; resets to probe past a limit.
    var snapshotTicks = 0
    /// Whether the peer answered during the last election timeout (CheckQuorum).
    var recentActive = false
    public internal(set) var isLearner: Bool
    var inflights: Inflights

    init(next: LogIndex, isLearner: Bool, maxInflight: Int, maxInflightBytes: Int) {
        self.match = 0
        self.next = next
        self.isLearner = isLearner
        self.inflights = Inflights(capacity: maxInflight, byteCapacity: maxInflightBytes)
    }

    /// Whether the leader must hold appends to this peer for now.
    var isPaused: Bool {
        switch state {
        case .probe: probeSent
        case .replicate: inflights.isFull
        case .snapshot: true
        }
    }

    mutating func becomeProbe() {
        // After a snapshot, probe from just past it: the follower holds at least that much.
        if state == .snapshot {
            next = max(match + 1, pendingSnapshot + 1)
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        pendingSnapshot = 0
        snapshotTicks = 0
        inflights.reset()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        probeSent = false
        pendingSnapshot = 0
        snapshotTicks = 0
        inflights.reset()
    }

    mutating func becomeSnapshot(index: LogIndex) {
        state = .snapshot
        probeSent = false
        pendingSnapshot = index
        snapshotTicks = 0
        inflights.reset()
    }

    /// Records an acknowledgement of `index`. Returns false when it tells nothing new.
    mutating func acknowledge(_ index: LogIndex) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }

    /// Records a rejected append at `rejected`; `hint` is where the follower suggests to retry.
    /// Returns false when the rejection is stale (answers an older message).
    mutating func rejected(_ rejected: LogIndex, hint: LogIndex) -> Bool {
        if state == .replicate {
            // Everything up to match is known good; a rejection at or below it is stale.
            if rejected <= match { return false }
            next = match + 1
            return true
        }
        // Probing: only the answer to the last probe counts.
        if next == 0 || next - 1 != rejected { return false }
        next = max(min(rejected, hint + 1), match + 1)
        probeSent = false
        return true
    }

    /// Records that appends up to `lastIndex` (of `bytes`) were just sent.
    mutating func sentEntries(lastIndex: LogIndex, bytes: Int, count: Int) {
        switch state {
        case .replicate:
            if count > 0 {
                next = lastIndex + 1
                inflights.add(lastIndex: lastIndex, bytes: bytes)
            }
        case .probe:
            probeSent = true
        case .snapshot:
            preconditionFailure("appends are never sent while a snapshot is pending (next=\(next))")
        }
    }
}
