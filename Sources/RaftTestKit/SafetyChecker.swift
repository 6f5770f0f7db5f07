import Raft

/// A broken safety or liveness property, with where it broke.
public struct SimulationViolation: Error, Sendable, CustomStringConvertible {
    public var property: String
    public var detail: String
    public var step: UInt64

    public var description: String { "[\(property)] at step \(step): \(detail)" }
}

/// Keeps the cluster-wide facts the Raft properties are checked against. Fed by the simulation
/// as nodes persist, send and apply; every method throws the first violation it sees.
struct SafetyChecker {
    var step: UInt64 = 0
    /// Election safety: the leader of each term.
    private var leaderOfTerm: [Term: NodeID] = [:]
    /// Votes granted, by (voter, term), as seen on the wire.
    private var votesGranted: [VoteKey: NodeID] = [:]
    /// Log matching: for each (index, term) ever persisted, the previous term and a data digest.
    private var entryIdentity: [EntryKey: EntryFingerprint] = [:]
    /// State machine safety: the entry applied at each index, by anyone (index 1 at slot 0).
    private(set) var appliedLog: [Entry] = []
    /// The term of every index known committed by some node.
    private(set) var committedTerms: [LogIndex: Term] = [:]
    private(set) var maxCommitted: LogIndex = 0
    /// Leader append-only: the last (term, last index, last term) seen per leader.
    private var leaderTails: [NodeID: (term: Term, index: LogIndex, lastTerm: Term)] = [:]

    struct VoteKey: Hashable { var voter: NodeID; var term: Term }
    struct EntryKey: Hashable { var index: LogIndex; var term: Term }
    struct EntryFingerprint: Hashable { var previousTerm: Term; var kind: EntryKind; var data: [UInt8] }

    func violation(_ property: String, _ detail: String) -> SimulationViolation {
        SimulationViolation(property: property, detail: detail, step: step)
    }

    /// Checks a node that is leader in its term right now.
    mutating func observeLeader(_ raft: RaftNode) throws(SimulationViolation) {
        let term = raft.term
        if let known = leaderOfTerm[term] {
            guard known == raft.id else {
                throw violation("election safety", "nodes \(known) and \(raft.id) both lead term \(term)")
            }
        } else {
            leaderOfTerm[term] = raft.id
            try checkLeaderCompleteness(raft)
        }
        if let tail = leaderTails[raft.id], tail.term == term {
            guard raft.lastIndex >= tail.index, raft.term(at: tail.index).map({ $0 == tail.lastTerm }) ?? true else {
                throw violation(
                    "leader append-only",
                    "leader \(raft.id) of term \(term) had \(tail.index)/\(tail.lastTerm), now last is \(raft.lastIndex)"
                )
            }
        }
        leaderTails[raft.id] = (term, raft.lastIndex, raft.lastTerm)
        try checkPendingConfChanges(raft)
    }

    /// Leader completeness (§5.4): a new leader holds every entry committed before its term.
    private func checkLeaderCompleteness(_ raft: RaftNode) throws(SimulationViolation) {
        guard maxCommitted > 0 else { return }
        guard raft.lastIndex >= maxCommitted else {
            throw violation(
                "leader completeness",
                "leader \(raft.id) of term \(raft.term) ends at \(raft.lastIndex), before committed \(maxCommitted)"
            )
        }
        let from = max(raft.firstIndex - 1, 1)
        guard from <= maxCommitted else { return }
        for index in from...maxCommitted {
            guard let committed = committedTerms[index], let held = raft.term(at: index) else { continue }
            guard committed == held else {
                throw violation(
                    "leader completeness",
                    "leader \(raft.id) of term \(raft.term) has term \(held) at \(index), committed term \(committed)"
                )
            }
        }
    }

    /// At most one configuration change is pending on a leader.
    private func checkPendingConfChanges(_ raft: RaftNode) throws(SimulationViolation) {
        guard raft.lastIndex > raft.appliedIndex, raft.appliedIndex + 1 >= raft.firstIndex else { return }
        let unapplied = (try? raft.entries(from: raft.appliedIndex + 1, through: raft.lastIndex)) ?? []
        let pending = unapplied.filter { $0.kind == .confChange }.count
        guard pending <= 1 else {
            throw violation("single pending change", "leader \(raft.id) has \(pending) unapplied configuration changes")
        }
    }

    /// A configuration change was just proposed: its leader must have committed an entry of its term.
    func checkConfChangeProposal(_ raft: RaftNode) throws(SimulationViolation) {
        guard raft.term(at: raft.commitIndex) == raft.term else {
            throw violation(
                "no change before the leader's no-op commits",
                "leader \(raft.id) accepted a change in term \(raft.term) with commit \(raft.commitIndex) from an earlier term"
            )
        }
    }

    /// A node persisted entries; `previousTerm` is the term before the first of them.
    mutating func observePersisted(_ entries: [Entry], previousTerm: Term?, node: NodeID) throws(SimulationViolation) {
        var previous = previousTerm
        for entry in entries {
            let key = EntryKey(index: entry.index, term: entry.term)
            let print = EntryFingerprint(previousTerm: previous ?? .max, kind: entry.kind, data: entry.data)
            if let known = entryIdentity[key] {
                let previousMatches = previous == nil || known.previousTerm == .max || known.previousTerm == print.previousTerm
                guard previousMatches && known.kind == print.kind && known.data == print.data else {
                    throw violation(
                        "log matching",
                        "node \(node) holds a different entry \(entry.index)/\(entry.term) (or predecessor) than another node "
                            + "(predecessor term \(print.previousTerm) vs \(known.previousTerm), same data: \(known.data == print.data))"
                    )
                }
            } else {
                entryIdentity[key] = print
            }
            previous = entry.term
        }
    }

    /// A vote was granted on the wire.
    mutating func observeVoteGranted(voter: NodeID, candidate: NodeID, term: Term) throws(SimulationViolation) {
        let key = VoteKey(voter: voter, term: term)
        if let earlier = votesGranted[key], earlier != candidate {
            throw violation("one vote per term", "node \(voter) voted for \(earlier) and \(candidate) in term \(term)")
        }
        votesGranted[key] = candidate
    }

    /// A node's commit index rose to `commit`; `raft` holds the entries it now calls committed.
    mutating func observeCommit(_ raft: RaftNode, from previous: LogIndex) throws(SimulationViolation) {
        let commit = raft.commitIndex
        guard commit > previous else { return }
        for index in (previous + 1)...commit {
            guard let term = raft.term(at: index) else { continue }
            if let known = committedTerms[index], known != term {
                throw violation(
                    "state machine safety",
                    "node \(raft.id) committed term \(term) at \(index), another node committed term \(known)"
                )
            }
            committedTerms[index] = term
        }
        maxCommitted = max(maxCommitted, commit)
    }

    /// A node applied `entry`. Returns true if this is the first time any node applied that index.
    @discardableResult
    mutating func observeApplied(_ entry: Entry, node: NodeID) throws(SimulationViolation) -> Bool {
        let slot = Int(entry.index) - 1
        if slot < appliedLog.count {
            let known = appliedLog[slot]
            guard known.term == entry.term && known.data == entry.data && known.kind == entry.kind else {
                throw violation(
                    "state machine safety",
                    "node \(node) applied \(entry.index)/\(entry.term), another node applied \(known.index)/\(known.term)"
                )
            }
            return false
        }
        guard slot == appliedLog.count else {
            // A node applied past what anyone applied before: only possible after a snapshot, whose
            // entries some node must have applied. The gap means a snapshot skipped history.
            throw violation("state machine safety", "node \(node) applied \(entry.index) with nothing known before \(appliedLog.count + 1)")
        }
        appliedLog.append(entry)
        return true
    }

    /// The store a fresh node would have after replaying the applied log up to `index`.
    func replayedStore(through index: LogIndex) -> KeyValueStore {
        var store = KeyValueStore()
        for entry in appliedLog.prefix(Int(index)) { store.apply(entry) }
        return store
    }
}
