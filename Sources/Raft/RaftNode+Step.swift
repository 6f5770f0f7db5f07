extension RaftNode {
    /// Feeds one message from a peer into the state machine.
    ///
    /// Messages from unknown terms, stale senders or non-members are answered or dropped as the
    /// protocol says; no message makes the node trap.
    public mutating func step(_ message: Message) {
        guard message.to == id || message.to == .none else { return }
        if message.carriesTerm {
            guard stepTerm(message) else { return }
        }
        switch message.kind {
        case .vote, .preVote:
            handleVoteRequest(message)
            return
        default:
            break
        }
        switch role {
        case .leader: stepLeader(message)
        case .candidate, .preCandidate: stepCandidate(message)
        case .follower: stepFollower(message)
        }
    }

    /// Applies the term rules of §5.1 (and the PreVote/CheckQuorum refinements). Returns false
    /// when the message is done with.
    private mutating func stepTerm(_ message: Message) -> Bool {
        if message.term > term {
            if message.kind == .vote || message.kind == .preVote {
                let forced = message.context == Self.transferContext
                let inLease = settings.checkQuorum && leader != .none && electionElapsed < settings.electionTicks
                // A node that heard from a leader recently ignores would-be disrupters (thesis §4.2.3).
                if !forced && inLease { return false }
            }
            switch message.kind {
            case .preVote:
                // A PreVote never changes our term.
                break
            case .preVoteResponse where !message.reject:
                // The term we asked for; the election that follows will adopt it.
                break
            case .append, .heartbeat, .snapshot:
                becomeFollower(term: message.term, leader: message.from)
            default:
                becomeFollower(term: message.term, leader: .none)
            }
            return true
        }
        if message.term < term {
            if message.kind == .heartbeat || message.kind == .append || message.kind == .snapshot {
                // §5.1: a stale request is rejected with the current term, so a leader cut off by a
                // partition learns it and steps down. With PreVote this is also what lets a node that
                // raised its term alone rejoin: it could never win an election to announce it.
                send(Message(kind: .appendResponse, to: message.from))
            } else if message.kind == .preVote {
                // Tell a stuck pre-candidate our term so it can catch up.
                send(Message(kind: .preVoteResponse, to: message.from, term: term, reject: true))
            }
            return false
        }
        return true
    }

    private mutating func handleVoteRequest(_ request: Message) {
        let isPreVote = request.kind == .preVote
        let responseKind: MessageKind = isPreVote ? .preVoteResponse : .voteResponse
        // §5.2: one vote per term; a PreVote for a future term binds nothing.
        let canVote = vote == request.from
            || (vote == .none && leader == .none)
            || (isPreVote && request.term > term)
        if canVote && log.isUpToDate(lastIndex: request.index, lastTerm: request.logTerm) {
            // Answer with the term of the request, so the (pre-)candidate counts it.
            send(Message(kind: responseKind, to: request.from, term: request.term))
            if !isPreVote {
                electionElapsed = 0
                vote = request.from
            }
        } else {
            send(Message(kind: responseKind, to: request.from, term: term, reject: true))
        }
    }

    // MARK: Follower

    private mutating func stepFollower(_ message: Message) {
        switch message.kind {
        case .append:
            electionElapsed = 0
            leader = message.from
            handleAppend(message)
        case .heartbeat:
            electionElapsed = 0
            leader = message.from
            handleHeartbeat(message)
        case .snapshot:
            electionElapsed = 0
            leader = message.from
            handleSnapshot(message)
        case .transferLeader, .readIndex:
            guard leader != .none else { return }
            var forwarded = message
            forwarded.to = leader
            if message.kind == .readIndex { forwarded.from = id }
            outbox.append(forwarded)
        case .timeoutNow:
            // Leadership transfer: campaign at once, skipping PreVote (thesis §3.10).
            startElection(transfer: true)
        case .readIndexResponse:
            readStates.append(ReadState(index: message.index, context: message.context))
        case .appendResponse, .heartbeatResponse, .vote, .voteResponse, .preVote, .preVoteResponse:
            break
        }
    }

    // MARK: Candidate

    private mutating func stepCandidate(_ message: Message) {
        switch message.kind {
        case .append:
            // §5.2: a candidate that hears from a leader of its term steps down.
            becomeFollower(term: message.term, leader: message.from)
            handleAppend(message)
        case .heartbeat:
            becomeFollower(term: message.term, leader: message.from)
            handleHeartbeat(message)
        case .snapshot:
            becomeFollower(term: message.term, leader: message.from)
            handleSnapshot(message)
        case .voteResponse where role == .candidate, .preVoteResponse where role == .preCandidate:
            switch recordVote(from: message.from, granted: !message.reject) {
            case .won: electionWon()
            case .lost: becomeFollower(term: term, leader: .none)
            case .pending: break
            }
        default:
            break
        }
    }

    // MARK: Follower-side handlers

    private mutating func handleAppend(_ message: Message) {
        if message.index < log.committed {
            send(Message(kind: .appendResponse, to: message.from, index: log.committed))
            return
        }
        if let lastNew = log.maybeAppend(
            previous: message.index, previousTerm: message.logTerm, leaderCommit: message.commit,
            entries: message.entries
        ) {
            send(Message(kind: .appendResponse, to: message.from, index: lastNew))
            return
        }
        // Fast back-off: point the leader at the last index where our terms could agree.
        let hint = log.findConflictByTerm(index: min(message.index, log.lastIndex), term: message.logTerm)
        send(Message(
            kind: .appendResponse, to: message.from, logTerm: hint.term, index: message.index,
            reject: true, rejectHint: hint.index
        ))
    }

    private mutating func handleHeartbeat(_ message: Message) {
        // The leader sends min(match, commit), so this never passes our last index.
        log.commit(to: min(message.commit, log.lastIndex))
        send(Message(kind: .heartbeatResponse, to: message.from, context: message.context))
    }

    private mutating func handleSnapshot(_ message: Message) {
        guard let snapshot = message.snapshot else { return }
        if restore(snapshot) {
            send(Message(kind: .appendResponse, to: message.from, index: log.lastIndex))
        } else {
            send(Message(kind: .appendResponse, to: message.from, index: log.committed))
        }
    }

    /// Installs a leader's snapshot (§7). Returns false when it brings nothing new.
    private mutating func restore(_ snapshot: Snapshot) -> Bool {
        let metadata = snapshot.metadata
        if metadata.index <= log.committed { return false }
        // Unlike etcd, a snapshot that does not list this node is accepted: a node added after the
        // leader's latest snapshot learns of its own membership from the entries that follow it.
        if log.matchTerm(index: metadata.index, term: metadata.term) {
            // We hold the entries already: fast-forward the commit index instead.
            log.commit(to: metadata.index)
            return false
        }
        log.restore(snapshot)
        confState = metadata.confState
        latestSnapshot = snapshot
        resetProgress()
        return true
    }
}
