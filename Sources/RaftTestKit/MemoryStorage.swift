public import Raft

/// What a node has on "disk" in tests and simulations: hard state, latest snapshot and the log
/// after it. Applies a `Ready` the way the real storage must.
public struct MemoryStorage: Sendable, Hashable {
    public var state: PersistentState

    public init(_ state: PersistentState) { self.state = state }

    public var lastIndex: LogIndex { state.snapshot.metadata.index + LogIndex(state.entries.count) }

    public func term(at index: LogIndex) -> Term? {
        let base = state.snapshot.metadata.index
        if index == base { return state.snapshot.metadata.term }
        if index < base || index > lastIndex { return nil }
        return state.entries[Int(index - base - 1)].term
    }

    /// Installs a received snapshot: the log it covers is dropped, a matching suffix kept.
    public mutating func apply(snapshot: Snapshot) {
        let index = snapshot.metadata.index
        if term(at: index) == snapshot.metadata.term {
            state.entries = state.entries.filter { $0.index > index }
        } else {
            state.entries = []
        }
        state.snapshot = snapshot
    }

    /// Appends entries, first dropping any suffix they overwrite.
    public mutating func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        let base = state.snapshot.metadata.index
        precondition(first.index > base && first.index <= lastIndex + 1, "append at \(first.index) outside \(base)...\(lastIndex + 1)")
        state.entries.removeSubrange(Int(first.index - base - 1)...)
        state.entries.append(contentsOf: entries)
    }

    public mutating func set(hardState: HardState) { state.hardState = hardState }

    /// Records a snapshot the node took itself and drops the entries it covers.
    public mutating func compact(to snapshot: Snapshot) {
        let index = snapshot.metadata.index
        state.entries = state.entries.filter { $0.index > index }
        state.snapshot = snapshot
    }

    /// Persists the durable parts of a `Ready`, in the required order.
    public mutating func persist(_ ready: Ready) {
        if let snapshot = ready.snapshot { apply(snapshot: snapshot) }
        append(ready.entries)
        if let hardState = ready.hardState { set(hardState: hardState) }
    }
}
