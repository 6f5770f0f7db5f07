public import Logging
public import ServiceLifecycle

/// Services (HTTP servers, say) run in a task for a test, and stopped by a graceful shutdown.
///
/// Cancelling the task instead races with connections the server accepted but did not serve
/// yet: they are dropped unfinished and NIO traps ("Deinited NIOAsyncWriter without calling
/// finish()", apple/swift-nio#2637), which crashes the whole test process. The task is
/// cancelled only when the graceful shutdown has not ended within `grace`.
public final class RunningServices: Sendable {
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    public init(_ services: [any Service], logger: Logger) {
        let group = ServiceGroup(services: services, logger: logger)
        self.group = group
        task = Task { try await group.run() }
    }

    public func stop(grace: Duration = .seconds(5)) async {
        await group.triggerGracefulShutdown()
        let task = task
        let deadline = Task {
            try? await Task.sleep(for: grace)
            task.cancel()
        }
        _ = await task.result
        deadline.cancel()
    }
}
