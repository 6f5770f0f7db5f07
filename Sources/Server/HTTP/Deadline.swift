import NIOCore
import NIOPosix
import Synchronization

/// Work that must end by a given time.
struct DeadlineExceeded: Error, CustomStringConvertible {
    var what: String
    var description: String { "\(what) did not end in time" }
}

/// Runs `action` at `deadline` unless cancelled first. A scheduled task on an event loop, not a
/// sleeping `Task`: a cancelled `Task.sleep` stays queued in the runtime until its deadline, so
/// one per proxied request with the 10-minute upstream deadline piled up by the hundred thousand
/// and made every later request slower (a proxy with a connection per request lost a fifth of its
/// throughput); NIO drops a cancelled task from its queue at once.
struct Alarm: Sendable {
    private let scheduled: Scheduled<Void>

    init(at deadline: ContinuousClock.Instant, _ action: @escaping @Sendable () -> Void) {
        // Clamped to 0…30 days, so no deadline can overflow the event loop's clock.
        let (seconds, attoseconds) = (deadline - .now).components
        let limit: Int64 = 30 * 86_400
        let nanoseconds = seconds < 0 ? 0 : min(seconds, limit) * 1_000_000_000 + (seconds < limit ? attoseconds / 1_000_000_000 : 0)
        scheduled = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .nanoseconds(nanoseconds)) { action() }
    }

    func cancel() { scheduled.cancel() }
}

/// Runs `body` until `deadline`: past it, `body` is cancelled and the call throws
/// ``DeadlineExceeded``. For the parts of an exchange that `HTTPClient`'s own deadline does not
/// cover (it ends when the response head arrives, not the body).
func withDeadline<Value: Sendable>(
    _ deadline: ContinuousClock.Instant, _ what: String, _ body: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    let task = Task { try await body() }
    let expired = Atomic<Bool>(false)
    let alarm = Alarm(at: deadline) {
        expired.store(true, ordering: .relaxed)
        task.cancel()
    }
    defer { alarm.cancel() }
    do {
        let value = try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
        if expired.load(ordering: .relaxed) { throw DeadlineExceeded(what: what) }
        return value
    } catch {
        if expired.load(ordering: .relaxed) { throw DeadlineExceeded(what: what) }
        throw error
    }
}
