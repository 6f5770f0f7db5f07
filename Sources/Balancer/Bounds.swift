/// The ranges outside numbers are clamped into where they enter the balancer's state: loads and
/// capacities from workers, host resources from agents, values decoded from the log or a
/// snapshot. Every constructor of those types clamps, so no later arithmetic on them can
/// overflow, no conversion can trap, and an absurd value from one worker cannot stop a node —
/// nor, once replicated, every node. The HTTP API refuses out-of-range values with a 400 before
/// they get here; the clamps are what holds for every other path (engine status formats, old
/// log entries, peers). Documented in `Docs/api.md`.
public enum Bounds {
    /// Requests one worker can hold (running or waiting).
    public static let requests = 1 << 20
    /// Tokens (queued prefill) and KV blocks one worker can report.
    public static let tokens = 1 << 40
    public static let blocks = 1 << 40
    /// Bytes of memory or disk on one host (1 EiB).
    public static let bytes: UInt64 = 1 << 60
    /// Milliseconds of one engine step (a day).
    public static let stepMilliseconds = 86_400_000.0
    /// Prefill speed, tokens per second.
    public static let tokensPerSecond = 1e9

    /// `value` within `0...limit`.
    @inlinable public static func count(_ value: Int, _ limit: Int) -> Int { min(max(value, 0), limit) }

    /// `value` rounded down within `0...limit`; NaN is 0 and +∞ is `limit`.
    @inlinable public static func count(_ value: Double, _ limit: Int) -> Int {
        guard value > 0 else { return 0 }
        guard value < Double(limit) else { return limit }
        return Int(value)
    }

    /// `value` within `0...limit`; NaN is 0.
    @inlinable public static func real(_ value: Double, _ limit: Double) -> Double {
        guard value > 0 else { return 0 }
        return min(value, limit)
    }

    /// A fraction within 0…1; NaN is 0.
    @inlinable public static func fraction(_ value: Double) -> Double { real(value, 1) }

    @inlinable public static func bytes(_ value: UInt64) -> UInt64 { min(value, bytes) }

    /// `value` within `range`; NaN is `fallback`.
    @inlinable public static func within(_ value: Double, _ range: ClosedRange<Double>, fallback: Double) -> Double {
        guard !value.isNaN else { return fallback }
        return min(max(value, range.lowerBound), range.upperBound)
    }
}
