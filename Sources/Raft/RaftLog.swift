/// The log since the last snapshot, held in memory, with the indexes the runtime cares about.
///
/// Entries up to `stableIndex` are known persisted; the rest are handed out by `Ready` for the
/// runtime to persist. Snapshots bound memory: compaction drops the prefix they cover.
struct RaftLog: Sendable {
    /// The last index covered by the snapshot (0 when there is none) and its term.
    private(set) var snapshotIndex: LogIndex
    private(set) var snapshotTerm: Term
    /// Entries `snapshotIndex + 1 ... lastIndex`.
    private(set) var entries: [Entry]
    var committed: LogIndex
    var applied: LogIndex
    /// Highest index the runtime has persisted.
    var stableIndex: LogIndex
    /// A received snapshot that the runtime has not persisted yet.
    var pendingSnapshot: Snapshot?

    init(snapshotIndex: LogIndex, snapshotTerm: Term, entries: [Entry], committed: LogIndex) {
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.entries = entries
        self.committed = committed
        self.applied = snapshotIndex
        self.stableIndex = snapshotIndex + LogIndex(entries.count)
    }

    var firstIndex: LogIndex { snapshotIndex + 1 }
    var lastIndex: LogIndex { snapshotIndex + LogIndex(entries.count) }
    var lastTerm: Term { entries.last?.term ?? snapshotTerm }

    /// The term of the entry at `index`, or nil when it is compacted away or beyond the end.
    func term(at index: LogIndex) -> Term? {
        if index == snapshotIndex { return snapshotTerm }
        if index < snapshotIndex || index > lastIndex { return nil }
        return entries[Int(index - snapshotIndex - 1)].term
    }

    func matchTerm(index: LogIndex, term: Term) -> Bool { self.term(at: index) == term }

    /// §5.4.1: a candidate's log is at least as up to date as ours.
    func isUpToDate(lastIndex candidateIndex: LogIndex, lastTerm candidateTerm: Term) -> Bool {
        candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
    }

    func entry(at index: LogIndex) -> Entry {
        entries[Int(index - snapshotIndex - 1)]
    }

    /// Entries in `from..<to`, cut after `maxBytes` (at least one entry is always returned).
    func slice(from: LogIndex, to: LogIndex, maxBytes: Int) -> [Entry] {
        guard from < to else { return [] }
        precondition(from > snapshotIndex && to <= lastIndex + 1, "slice \(from)..<\(to) outside \(firstIndex)...\(lastIndex)")
        let start = Int(from - snapshotIndex - 1)
        let end = Int(to - snapshotIndex - 1)
        var size = 0
        var cut = start
        while cut < end {
            size += entries[cut].byteSize
            if cut > start && size > maxBytes { break }
            cut += 1
        }
        return Array(entries[start..<cut])
    }

    /// Entries not yet persisted.
    var unstableEntries: [Entry] {
        guard stableIndex < lastIndex else { return [] }
        return Array(entries[Int(stableIndex - snapshotIndex)...])
    }

    /// Committed entries not yet handed to the state machine, up to `maxBytes`.
    func nextCommittedEntries(maxBytes: Int) -> [Entry] {
        guard applied < committed, pendingSnapshot == nil else { return [] }
        return slice(from: applied + 1, to: committed + 1, maxBytes: maxBytes)
    }

    var hasNextCommittedEntries: Bool { applied < committed && pendingSnapshot == nil }

    /// The first index among `newEntries` that conflicts with (or extends) the log, or nil when
    /// the log already holds them all.
    func findConflict(_ newEntries: [Entry]) -> LogIndex? {
        for entry in newEntries where !matchTerm(index: entry.index, term: entry.term) {
            return entry.index
        }
        return nil
    }

    /// The largest index at or below `index` whose term is at or below `term`: where a leader
    /// with `term` at `index` could agree with this log (the fast back-off of §5.3).
    func findConflictByTerm(index: LogIndex, term: Term) -> (index: LogIndex, term: Term) {
        var candidate = min(index, lastIndex)
        while true {
            guard let found = self.term(at: candidate) else { return (candidate, 0) }
            if found <= term || candidate <= snapshotIndex { return (candidate, found) }
            candidate -= 1
        }
    }

    /// Appends entries after the one at `previous`, truncating a conflicting suffix (§5.3).
    /// Returns the last new index, or nil when `previous` does not match.
    mutating func maybeAppend(
        previous: LogIndex, previousTerm: Term, leaderCommit: LogIndex, entries newEntries: [Entry]
    ) -> LogIndex? {
        guard matchTerm(index: previous, term: previousTerm) else { return nil }
        let lastNew = previous + LogIndex(newEntries.count)
        if let conflict = findConflict(newEntries) {
            precondition(conflict > committed, "entry \(conflict) conflicts with committed \(committed)")
            let offset = Int(conflict - newEntries[0].index)
            append(Array(newEntries[offset...]))
        }
        commit(to: min(leaderCommit, lastNew))
        return lastNew
    }

    /// Appends entries that directly follow or overwrite part of the log.
    mutating func append(_ newEntries: [Entry]) {
        guard let first = newEntries.first else { return }
        precondition(first.index > committed, "append at \(first.index) would overwrite committed \(committed)")
        precondition(first.index <= lastIndex + 1, "append at \(first.index) leaves a gap after \(lastIndex)")
        if first.index <= lastIndex {
            entries.removeSubrange(Int(first.index - snapshotIndex - 1)...)
            stableIndex = min(stableIndex, first.index - 1)
        }
        entries.append(contentsOf: newEntries)
    }

    /// Raises the commit index; never lowers it.
    mutating func commit(to index: LogIndex) {
        guard index > committed else { return }
        precondition(index <= lastIndex, "commit \(index) beyond last index \(lastIndex)")
        committed = index
    }

    /// Replaces the log with a snapshot received from the leader.
    mutating func restore(_ snapshot: Snapshot) {
        snapshotIndex = snapshot.metadata.index
        snapshotTerm = snapshot.metadata.term
        entries = []
        committed = snapshot.metadata.index
        stableIndex = snapshot.metadata.index
        pendingSnapshot = snapshot
    }

    /// Drops entries up to `index` (inclusive) after the runtime took a snapshot there.
    mutating func compact(to index: LogIndex) {
        guard index > snapshotIndex else { return }
        precondition(index <= applied, "compacting to \(index) beyond applied \(applied)")
        let term = term(at: index)!
        entries.removeFirst(Int(index - snapshotIndex))
        snapshotIndex = index
        snapshotTerm = term
    }
}
