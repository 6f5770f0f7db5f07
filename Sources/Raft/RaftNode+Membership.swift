extension RaftNode {
    /// Proposes a membership change. Only one may be pending at a time, and none before the
    /// leader's first entry of its term is applied.
    @discardableResult
    public mutating func proposeConfChange(_ change: ConfChange) throws(RaftError) -> LogIndex {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard transferee == .none else { throw .transferInProgress(to: transferee) }
        guard pendingConfIndex <= log.applied else { throw .configurationChangePending(index: pendingConfIndex) }
        // Validated against the configuration in force, which no pending change can alter.
        _ = try confState.applying(change)
        let index = appendAsLeader([(.confChange, change.encoded())])
        pendingConfIndex = index
        return index
    }

    /// Applies a committed configuration-change entry; called as the entry is handed to the
    /// state machine. A change that does not apply is ignored by every node alike.
    mutating func applyConfChange(_ entry: Entry) {
        guard let change = try? ConfChange(decoding: entry.data),
            let next = try? confState.applying(change)
        else { return }
        switchToConfiguration(next)
    }

    mutating func switchToConfiguration(_ next: ConfState) {
        confState = next
        var updated: [NodeID: Progress] = [:]
        for member in next.allMembers {
            var tracked = progress[member] ?? Progress(
                next: log.lastIndex + 1, isLearner: false,
                maxInflight: settings.maxInflightMessages, maxInflightBytes: settings.maxInflightBytes
            )
            tracked.isLearner = !next.isVoter(member)
            // A leader's own entries count once durable (as in `advance`), never before.
            if member == id && role == .leader { tracked.match = max(tracked.match, min(log.lastIndex, log.stableIndex)) }
            updated[member] = tracked
        }
        progress = updated
        guard role == .leader else { return }
        if !next.isVoter(id) {
            // A removed or demoted leader hands over to the most caught-up voter and steps down.
            if let successor = next.quorum.voters
                .filter({ $0 != id })
                .max(by: { (progress[$0]?.match ?? 0, $1) < (progress[$1]?.match ?? 0, $0) }),
                progress[successor]?.match == log.lastIndex
            {
                send(Message(kind: .timeoutNow, to: successor))
            }
            becomeFollower(term: term, leader: .none)
            return
        }
        if transferee != .none && !next.isVoter(transferee) { transferee = .none }
        // The quorum changed: more may be committed now, and new members need the log.
        if maybeCommit() { needsBroadcast = true }
        for member in next.allMembers where member != id && progress[member]!.match == 0 {
            sendAppend(to: member)
        }
    }
}
