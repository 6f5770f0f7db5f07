public import Balancer
import Foundation
import Synchronization

/// The time every balancer timestamp is taken from: command stamps, sticky-binding expiry,
/// load reports, circuit cool-downs.
///
/// It is the replicated clock carried forward by this node's monotonic clock, not the wall
/// clock. Every replica's ``BalancerState/clock`` is the largest stamp it applied; this clock
/// re-anchors to it whenever it is ahead and otherwise counts monotonic time from the last
/// anchor. So a node whose wall clock jumps (NTP step, a bad RTC after reboot, an operator)
/// cannot move the cluster's time: a leader an hour ahead would otherwise expire every sticky
/// session on every replica (the state keeps the largest stamp), and one an hour behind would
/// create bindings that are already expired.
///
/// The wall clock is read only before the node has applied any stamp (a brand-new cluster's
/// first command). Time during which no node leads is not counted, as in etcd's leases.
public final class ClusterClock: Sendable {
    private struct Anchor {
        var cluster: Milliseconds
        var at: ContinuousClock.Instant
    }

    private let anchor = Mutex<Anchor?>(nil)
    /// Added to the wall clock: a fault-injection knob standing for a wall-clock jump.
    private let wallOffset = Atomic<Int64>(0)

    public init() {}

    /// Now, in milliseconds on the cluster's time.
    public func now() -> Milliseconds {
        anchor.withLock { anchor in
            guard let anchor else { return wall() }
            return Self.reading(anchor, at: .now)
        }
    }

    /// Never run behind the time the cluster has already seen; called after every apply.
    public func observe(_ replicated: Milliseconds) {
        guard replicated > 0 else { return }
        let instant = ContinuousClock.now
        anchor.withLock { anchor in
            if let current = anchor, Self.reading(current, at: instant) >= replicated { return }
            anchor = Anchor(cluster: replicated, at: instant)
        }
    }

    /// Moves the wall clock this node reads by `milliseconds` (fault injection only).
    public func jumpWallClock(by milliseconds: Int64) {
        wallOffset.add(milliseconds, ordering: .relaxed)
    }

    public var wallClockOffset: Int64 { wallOffset.load(ordering: .relaxed) }

    private func wall() -> Milliseconds {
        let real = Int64(Date().timeIntervalSince1970 * 1000)
        return UInt64(max(1, real + wallOffset.load(ordering: .relaxed)))
    }

    private static func reading(_ anchor: Anchor, at instant: ContinuousClock.Instant) -> Milliseconds {
        anchor.cluster + UInt64(max(0, (instant - anchor.at).nanoseconds / 1_000_000))
    }
}
