/// Read requests waiting for a quorum of heartbeat acknowledgements (§6.4).
struct ReadOnlyQueue: Sendable {
    struct Request: Sendable {
        var index: LogIndex
        var context: [UInt8]
        var requester: NodeID
        var acks: Set<NodeID>
    }

    var requests: [Request] = []
    /// Requests that arrived before the leader committed an entry of its term.
    var waitingForCommit: [(requester: NodeID, context: [UInt8])] = []

    var lastContext: [UInt8]? { requests.last?.context }
}

extension RaftNode {
    /// Requests a linearizable read point. When it is known, a ``ReadState`` with the same context
    /// appears in a later `Ready`; once the state machine has applied its index, the read may be
    /// served locally. Contexts must be unique among outstanding reads.
    public mutating func readIndex(context: [UInt8]) throws(RaftError) {
        guard !context.isEmpty else { throw .invalidRequest("read context must not be empty") }
        switch role {
        case .leader:
            handleReadIndex(from: id, context: context)
        case .follower where leader != .none:
            send(Message(kind: .readIndex, to: leader, context: context))
        default:
            throw .notLeader(leader: leader)
        }
    }

    mutating func handleReadIndex(from requester: NodeID, context: [UInt8]) {
        if confState.quorum.voters == [id] {
            // A single voter is its own quorum.
            answerRead(requester: requester, index: log.committed, context: context)
            return
        }
        // §6.4 step 1: the commit index is only known to be current once an entry of this term
        // committed; until then, hold the read.
        guard hasCommittedEntryInTerm else {
            readOnly.waitingForCommit.append((requester, context))
            return
        }
        if readOnly.requests.contains(where: { $0.context == context }) { return }
        readOnly.requests.append(.init(index: log.committed, context: context, requester: requester, acks: [id]))
        // §6.4 step 3: confirm leadership with a round of heartbeats.
        broadcastHeartbeat(context: context)
    }

    mutating func releasePendingReads() {
        let waiting = readOnly.waitingForCommit
        readOnly.waitingForCommit = []
        for (requester, context) in waiting {
            handleReadIndex(from: requester, context: context)
        }
    }

    /// A heartbeat answer for `context` confirms leadership for that read and every earlier one.
    mutating func acknowledgeRead(from peer: NodeID, context: [UInt8]) {
        guard let position = readOnly.requests.firstIndex(where: { $0.context == context }) else { return }
        readOnly.requests[position].acks.insert(peer)
        let acks = readOnly.requests[position].acks
        guard confState.quorum.voteResult({ acks.contains($0) ? true : nil }) == .won else { return }
        let confirmed = readOnly.requests[...position]
        readOnly.requests.removeFirst(position + 1)
        for request in confirmed {
            answerRead(requester: request.requester, index: request.index, context: request.context)
        }
    }

    private mutating func answerRead(requester: NodeID, index: LogIndex, context: [UInt8]) {
        if requester == id {
            readStates.append(ReadState(index: index, context: context))
        } else {
            send(Message(kind: .readIndexResponse, to: requester, index: index, context: context))
        }
    }
}
