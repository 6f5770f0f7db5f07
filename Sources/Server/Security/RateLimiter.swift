import Synchronization
import Serving
import FulcrumAPI

/// Token buckets per client: `rate` tokens a second, up to `burst`. Thread-safe. The number of
/// clients tracked is bounded: when full, clients whose buckets have refilled are forgotten
/// (they would start full again anyway).
final class RateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: Double
    }

    let rate: Double
    let burst: Double
    let maxClients: Int
    private let buckets = Mutex<[String: Bucket]>([:])

    init(rate: Double, burst: Int, maxClients: Int = 100_000) {
        self.rate = rate
        self.burst = Double(max(burst, 1))
        self.maxClients = maxClients
    }

    private static let origin = ContinuousClock.now

    /// Seconds on the monotonic clock: a wall-clock jump must neither stall refills nor
    /// hand out a burst.
    static func monotonicNow() -> Double { (ContinuousClock.now - origin).seconds }

    /// Takes a token for `client` at `now` (seconds); returns nil when allowed, else the seconds
    /// until a token is available.
    func acquire(_ client: String, now: Double) -> Double? {
        buckets.withLock { buckets in
            var bucket = buckets[client] ?? Bucket(tokens: burst, updated: now)
            bucket.tokens = min(burst, bucket.tokens + max(0, now - bucket.updated) * rate)
            bucket.updated = now
            let wait: Double?
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                wait = nil
            } else {
                wait = (1 - bucket.tokens) / rate
            }
            if buckets.count >= maxClients && buckets[client] == nil {
                buckets = buckets.filter { $0.value.tokens + (now - $0.value.updated) * rate < burst }
            }
            buckets[client] = bucket
            return wait
        }
    }

    var trackedClients: Int { buckets.withLock { $0.count } }
}
