extension RaftNode {
    /// Appends entries as leader and returns the index of the last one. The broadcast waits for
    /// the next `Ready`, so proposals made between two batches share one append per follower.
    mutating func appendAsLeader(_ items: [(EntryKind, [UInt8])]) -> LogIndex {
        var index = log.lastIndex
        var entries = [Entry]()
        entries.reserveCapacity(items.count)
        for (kind, data) in items {
            index += 1
            entries.append(Entry(term: term, index: index, kind: kind, data: data))
        }
        log.append(entries)
        // The leader counts its own entries only once they are durable (``advance(_:)``), so
        // the runtime may send them to followers while it writes them (thesis §10.2.1).
        needsBroadcast = true
        return index
    }

    /// Advances the commit index to what a quorum holds, counting only entries of the current
    /// term (§5.4.2). Returns whether it moved.
    @discardableResult
    mutating func maybeCommit() -> Bool {
        let quorumIndex = confState.quorum.committedIndex { progress[$0]?.match }
        guard quorumIndex > log.committed, quorumIndex != .max, log.term(at: quorumIndex) == term else { return false }
        let hadCommittedInTerm = hasCommittedEntryInTerm
        log.commit(to: quorumIndex)
        if !hadCommittedInTerm { releasePendingReads() }
        return true
    }

    var hasCommittedEntryInTerm: Bool { log.term(at: log.committed) == term }

    /// Sends an append (or a snapshot) to `peer` when its flow control allows.
    /// Returns whether a message went out.
    @discardableResult
    mutating func sendAppend(to peer: NodeID, evenIfEmpty: Bool = true) -> Bool {
        guard var tracked = progress[peer], !tracked.isPaused else { return false }
        defer { progress[peer] = tracked }
        let previous = tracked.next - 1
        guard let previousTerm = log.term(at: previous) else {
            // The entries it needs are compacted: send the snapshot instead (§7).
            guard let snapshot = latestSnapshot else {
                preconditionFailure("node \(id): log compacted to \(log.firstIndex) but no snapshot is held")
            }
            send(Message(kind: .snapshot, to: peer, snapshot: snapshot))
            tracked.becomeSnapshot(index: snapshot.metadata.index)
            return true
        }
        let entries = log.slice(from: tracked.next, to: log.lastIndex + 1, maxBytes: settings.maxMessageBytes)
        if entries.isEmpty && !evenIfEmpty { return false }
        var bytes = 0
        for entry in entries { bytes += entry.byteSize }
        send(Message(
            kind: .append, to: peer, logTerm: previousTerm, index: previous, entries: entries,
            commit: log.committed
        ))
        tracked.sentEntries(lastIndex: previous + LogIndex(entries.count), bytes: bytes, count: entries.count)
        return true
    }

    mutating func broadcastAppend() {
        for member in confState.allMembers where member != id {
            sendAppend(to: member)
            // Pipelining: keep sending size-capped appends while the window allows.
            while progress[member]?.state == .replicate && sendAppend(to: member, evenIfEmpty: false) {}
        }
    }

    mutating func broadcastHeartbeat(context: [UInt8]) {
        for member in confState.allMembers where member != id {
            // Never tell a follower to commit past what it is known to hold.
            let commit = min(progress[member]?.match ?? 0, log.committed)
            send(Message(kind: .heartbeat, to: member, commit: commit, context: context))
        }
    }

    // MARK: Leader message handling

    mutating func stepLeader(_ message: Message) {
        switch message.kind {
        case .readIndex:
            handleReadIndex(from: message.from, context: message.context)
            return
        case .transferLeader:
            handleTransferLeader(message)
            return
        default:
            break
        }
        guard progress[message.from] != nil else { return }
        switch message.kind {
        case .appendResponse:
            handleAppendResponse(message)
        case .heartbeatResponse:
            handleHeartbeatResponse(message)
        default:
            // Appends from another leader of our term cannot happen (election safety); other kinds
            // are for followers.
            break
        }
    }

    private mutating func handleAppendResponse(_ message: Message) {
        let peer = message.from
        progress[peer]!.recentActive = true
        if message.reject {
            var probeFrom = message.rejectHint
            if message.logTerm > 0 {
                probeFrom = log.findConflictByTerm(index: message.rejectHint, term: message.logTerm).index
            }
            if progress[peer]!.rejected(message.index, hint: probeFrom) {
                if progress[peer]!.state == .replicate { progress[peer]!.becomeProbe() }
                sendAppend(to: peer)
            }
            return
        }
        let wasPaused = progress[peer]!.isPaused
        let updated = progress[peer]!.acknowledge(message.index)
        let tracked = progress[peer]!
        guard updated || (tracked.match == message.index && tracked.state == .probe) else { return }
        switch tracked.state {
        case .probe:
            progress[peer]!.becomeReplicate()
        case .snapshot where tracked.match + 1 >= log.firstIndex:
            // The snapshot (or a later append) got through; whatever it brought, the log can take
            // the follower from here.
            progress[peer]!.becomeProbe()
            progress[peer]!.becomeReplicate()
        case .snapshot:
            break
        case .replicate:
            progress[peer]!.inflights.free(upTo: message.index)
        }
        if maybeCommit() {
            // Followers learn the new commit index with the next appends.
            needsBroadcast = true
        } else if wasPaused {
            sendAppend(to: peer)
        }
        // Keep the pipeline full while there is more to send.
        while progress[peer]!.state == .replicate && sendAppend(to: peer, evenIfEmpty: false) {}
        if peer == transferee && progress[peer]!.match == log.lastIndex {
            send(Message(kind: .timeoutNow, to: peer))
        }
    }

    private mutating func handleHeartbeatResponse(_ message: Message) {
        let peer = message.from
        progress[peer]!.recentActive = true
        progress[peer]!.probeSent = false
        // Acknowledgements may have been lost: let one more append through, and a gap will show.
        if progress[peer]!.state == .replicate && progress[peer]!.inflights.isFull {
            progress[peer]!.inflights.freeFirst()
        }
        if progress[peer]!.match < log.lastIndex {
            sendAppend(to: peer)
        }
        if !message.context.isEmpty {
            acknowledgeRead(from: peer, context: message.context)
        }
    }

    mutating func handleTransferLeader(_ message: Message) {
        let target = message.from
        guard target != id, let tracked = progress[target], !tracked.isLearner else { return }
        if transferee != .none {
            if transferee == target { return }
            transferee = .none
        }
        // The transfer must finish within an election timeout, or it is abandoned.
        electionElapsed = 0
        transferee = target
        if tracked.match == log.lastIndex {
            send(Message(kind: .timeoutNow, to: target))
        } else {
            sendAppend(to: target)
        }
    }

    // MARK: Runtime reports

    /// The runtime could not reach `peer`: stop pipelining and probe.
    public mutating func reportUnreachable(_ peer: NodeID) {
        guard role == .leader, progress[peer]?.state == .replicate else { return }
        progress[peer]!.becomeProbe()
    }

    /// The runtime finished (or failed) sending a snapshot to `peer`.
    public mutating func reportSnapshot(to peer: NodeID, succeeded: Bool) {
        guard role == .leader, progress[peer]?.state == .snapshot else { return }
        if !succeeded { progress[peer]!.pendingSnapshot = 0 }
        progress[peer]!.becomeProbe()
        // Wait for a heartbeat answer before probing again.
        progress[peer]!.probeSent = true
    }
}
