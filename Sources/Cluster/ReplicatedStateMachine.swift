public import Raft

/// The application state the cluster replicates. Every node applies the same commands in the
/// same order; `apply` MUST be deterministic (no clocks, no randomness, no I/O).
public protocol ReplicatedStateMachine: Sendable {
    /// What applying a command tells its proposer.
    associatedtype Outcome: Sendable
    /// Applies a committed command and returns the result handed to its proposer.
    mutating func apply(_ command: [UInt8], at index: LogIndex) -> Outcome
    /// The whole state, for a snapshot.
    func snapshot() -> [UInt8]
    /// Replaces the state with a snapshot's.
    mutating func restore(from snapshot: [UInt8]) throws
    /// Throws unless ``restore(from:)`` would accept `snapshot`: a node checks a snapshot a peer
    /// sends before it persists it, so one it cannot read (a newer format during a rolling
    /// upgrade, say) is refused rather than written over its log.
    static func validate(snapshot: [UInt8]) throws
}
