public import Raft
import Synchronization

/// What a node's Ready loop did, as it happens: for metrics (fsync and apply durations,
/// snapshots, campaigns). Reporting costs one lock when nobody observes.
public enum NodeEvent: Sendable {
    /// One `Ready` written to storage (one fsynced transaction) in this time.
    case persisted(Duration)
    /// Committed entries applied to the state machine, in this time.
    case applied(entries: Int, Duration)
    /// A snapshot of this many bytes taken (and the log compacted) in this time.
    case snapshot(bytes: Int, Duration)
    /// This node stood for election: it became a candidate in a new term (a pre-vote that
    /// failed is not one).
    case campaign
    /// A leader's heartbeat to `peer` was answered this long after it left (the round trip
    /// through both transports and the peer's loop; etcd's peer round-trip time).
    case peerRoundTrip(peer: NodeID, Duration)
}

/// Where a node sends its ``NodeEvent``s: one observer, set by whoever serves the node.
public final class NodeEvents: Sendable {
    private let observer = Mutex<(@Sendable (NodeEvent) -> Void)?>(nil)

    public init() {}

    public func observe(_ body: @escaping @Sendable (NodeEvent) -> Void) {
        observer.withLock { $0 = body }
    }

    func emit(_ event: NodeEvent) {
        observer.withLock { $0 }?(event)
    }
}
