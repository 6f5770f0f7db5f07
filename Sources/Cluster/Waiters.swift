import Raft

/// What callers of a node wait for: proposals to apply, read indexes to be confirmed, applied
/// indexes to be reached. A node that failed fails every waiter, and every later one at once:
/// the failure is this value's state, not a check at each call site.
struct Waiters<Outcome: Sendable> {
    typealias Proposal = (term: Term, continuation: CheckedContinuation<Outcome, any Error>)
    typealias AppliedWaiter = (id: UInt64, index: LogIndex, continuation: CheckedContinuation<Void, any Error>)

    private(set) var failure: ClusterError?
    private var proposals: [LogIndex: Proposal] = [:]
    private var reads: [UInt64: CheckedContinuation<LogIndex, any Error>] = [:]
    private var applied: [AppliedWaiter] = []
    private var lastID: UInt64 = 0

    init() {}

    /// A fresh id for a read or an applied-index waiter.
    mutating func nextID() -> UInt64 {
        lastID += 1
        return lastID
    }

    // MARK: Proposals

    mutating func waitForProposal(at index: LogIndex, term: Term, _ continuation: CheckedContinuation<Outcome, any Error>) {
        if let failure { return continuation.resume(throwing: failure) }
        proposals[index] = (term, continuation)
    }

    /// The entry at `index` applied with `outcome`; its proposer learns it, or learns that a new
    /// leader replaced its entry (another term at the same index).
    mutating func applied(index: LogIndex, term: Term, outcome: Outcome) {
        guard let proposal = proposals.removeValue(forKey: index) else { return }
        if proposal.term == term {
            proposal.continuation.resume(returning: outcome)
        } else {
            proposal.continuation.resume(throwing: ClusterError(.dropped, "entry \(index) was replaced by a new leader"))
        }
    }

    mutating func expireProposal(at index: LogIndex, term: Term, _ error: ClusterError) {
        guard let proposal = proposals[index], proposal.term == term else { return }
        proposals[index] = nil
        proposal.continuation.resume(throwing: error)
    }

    // MARK: Reads

    mutating func waitForRead(_ id: UInt64, _ continuation: CheckedContinuation<LogIndex, any Error>) {
        if let failure { return continuation.resume(throwing: failure) }
        reads[id] = continuation
    }

    mutating func confirmRead(_ id: UInt64, at index: LogIndex) {
        reads.removeValue(forKey: id)?.resume(returning: index)
    }

    mutating func expireRead(_ id: UInt64, _ error: ClusterError) {
        reads.removeValue(forKey: id)?.resume(throwing: error)
    }

    // MARK: Applied indexes

    mutating func waitUntilApplied(_ id: UInt64, index: LogIndex, _ continuation: CheckedContinuation<Void, any Error>) {
        if let failure { return continuation.resume(throwing: failure) }
        applied.append((id, index, continuation))
    }

    mutating func wake(appliedUpTo index: LogIndex) {
        guard !applied.isEmpty else { return }
        let ready = applied.filter { $0.index <= index }
        applied.removeAll { $0.index <= index }
        for waiter in ready { waiter.continuation.resume() }
    }

    mutating func expireAppliedWaiter(_ id: UInt64, _ error: ClusterError) {
        guard let position = applied.firstIndex(where: { $0.id == id }) else { return }
        applied.remove(at: position).continuation.resume(throwing: error)
    }

    // MARK: Failure

    /// The node stopped: every waiter fails with `error`, and so will every later one.
    mutating func fail(_ error: ClusterError) {
        guard failure == nil else { return }
        failure = error
        for (_, proposal) in proposals { proposal.continuation.resume(throwing: error) }
        proposals = [:]
        for (_, read) in reads { read.resume(throwing: error) }
        reads = [:]
        for waiter in applied { waiter.continuation.resume(throwing: error) }
        applied = []
    }
}
