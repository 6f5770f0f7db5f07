/// Why a peer's message was dropped before it reached the core.
public enum MessageDropReason: String, Sendable, Hashable, CaseIterable {
    /// From node 0 or from this node itself, or addressed to another node.
    case addressing
    /// A term beyond ``RaftNode/maxAcceptedValue``.
    case term
    /// An index, commit or hint beyond ``RaftNode/maxAcceptedValue``.
    case index
    /// Appended entries that are not contiguous after `index`, whose terms fall or exceed the
    /// message's, or that contradict this node's committed entries.
    case entries
    /// An acknowledgement or rejection naming an index past this node's log.
    case acknowledgement
    /// A snapshot message without a snapshot, or with impossible metadata.
    case snapshot
}

extension RaftNode {
    /// The largest term or index a peer may name: beyond any real cluster's lifetime (a term a
    /// millisecond for 146 million years), and far enough below `UInt64.max` that `term + 1`,
    /// `index + count` and every other sum the core takes cannot overflow.
    public static let maxAcceptedValue: UInt64 = 1 << 62

    /// Checks a peer's message against what the core assumes of every message it steps: nil
    /// when it may be stepped, else why not. The runtime drops (and counts) what fails, so no
    /// message — malformed, hostile, or a member's with extreme fields — reaches a precondition
    /// of the core or persists a term no later election can increment.
    public func screen(_ message: Message) -> MessageDropReason? {
        let limit = Self.maxAcceptedValue
        if message.from == .none || message.from == id || (message.to != .none && message.to != id) { return .addressing }
        if message.term > limit || message.logTerm > limit { return .term }
        if message.index > limit || message.commit > limit || message.rejectHint > limit { return .index }
        switch message.kind {
        case .append:
            var expected = message.index
            var previousTerm = message.logTerm
            for entry in message.entries {
                expected += 1
                guard entry.index == expected, entry.term >= previousTerm, entry.term <= message.term else { return .entries }
                // A committed entry is never replaced (§5.4): one that differs is a lie.
                if entry.index <= log.committed, let local = log.term(at: entry.index), local != entry.term { return .entries }
                previousTerm = entry.term
            }
        case .appendResponse:
            if message.index > log.lastIndex || (message.reject && message.rejectHint > log.lastIndex) { return .acknowledgement }
        case .snapshot:
            guard let snapshot = message.snapshot else { return .snapshot }
            let metadata = snapshot.metadata
            if metadata.index > limit || metadata.term > message.term || metadata.confState.allMembers.contains(.none) {
                return .snapshot
            }
        default:
            break
        }
        return nil
    }
}
