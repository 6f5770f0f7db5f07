import Raft
import Synchronization

/// Counts of peer messages dropped before the core, by reason; read by the metrics endpoint.
public final class DropCounts: Sendable {
    private let counts = Mutex<[MessageDropReason: Int]>([:])

    public init() {}

    /// Counts one more for `reason`; returns its new count.
    @discardableResult
    func record(_ reason: MessageDropReason) -> Int {
        counts.withLock { counts in
            counts[reason, default: 0] += 1
            return counts[reason]!
        }
    }

    /// Every reason's count, by its name (reasons never seen at 0).
    public var snapshot: [String: Int] {
        counts.withLock { counts in Dictionary(uniqueKeysWithValues: MessageDropReason.allCases.map { ($0.rawValue, counts[$0, default: 0]) }) }
    }
}

extension Int {
    var isPowerOfTwo: Bool { self > 0 && self & (self - 1) == 0 }
}
