/// Work that must end by a given time.
struct DeadlineExceeded: Error, CustomStringConvertible {
    var what: String
    var description: String { "\(what) did not end in time" }
}

/// Runs `body` until `deadline`: past it, `body` is cancelled and the call throws
/// ``DeadlineExceeded``. For the parts of an exchange that `HTTPClient`'s own deadline does not
/// cover (it ends when the response head arrives, not the body).
func withDeadline<Value: Sendable>(
    _ deadline: ContinuousClock.Instant, _ what: String, _ body: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    try await withThrowingTaskGroup(of: Value?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(until: deadline, clock: .continuous)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw DeadlineExceeded(what: what) }
        return value
    }
}
