import Synchronization

/// Publishes a node's role, leader and term as they change, so the serving layer reacts to an
/// election at once instead of polling. Readers either iterate ``updates()`` or wait for the
/// next change after one they saw (``next(after:)``).
public final class LeadershipFeed: Sendable {
    private struct State {
        var current: Leadership
        var generation: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<(Leadership, UInt64), Never>] = [:]
        var streams: [UInt64: AsyncStream<Leadership>.Continuation] = [:]
        var lastID: UInt64 = 0
    }

    private let state: Mutex<State>

    init(_ initial: Leadership) { state = Mutex(State(current: initial)) }

    /// The latest value and its generation.
    public var current: (leadership: Leadership, generation: UInt64) {
        state.withLock { ($0.current, $0.generation) }
    }

    /// Called by the node after every Ready: publishes only changes of role, leader or term.
    func publish(_ leadership: Leadership) {
        typealias Wakeups = ([CheckedContinuation<(Leadership, UInt64), Never>], [AsyncStream<Leadership>.Continuation], UInt64)
        let (waiters, streams, generation) = state.withLock { state -> Wakeups in
            guard !state.current.sameRole(as: leadership) else {
                state.current = leadership
                return ([], [], state.generation)
            }
            state.current = leadership
            state.generation += 1
            let waiters = Array(state.waiters.values)
            state.waiters = [:]
            return (waiters, Array(state.streams.values), state.generation)
        }
        for waiter in waiters { waiter.resume(returning: (leadership, generation)) }
        for stream in streams { stream.yield(leadership) }
    }

    /// Returns the first value published after `generation` (at once if one was already),
    /// or nil when the task is cancelled first.
    public func next(after generation: UInt64) async -> (leadership: Leadership, generation: UInt64)? {
        let id = state.withLock { state -> UInt64 in
            state.lastID += 1
            return state.lastID
        }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<(Leadership, UInt64), Never>) in
                let immediate = state.withLock { state -> (Leadership, UInt64)? in
                    if state.generation > generation || Task.isCancelled { return (state.current, state.generation) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state in state.waiters.removeValue(forKey: id).map { ($0, state.current, state.generation) } }
            if let (continuation, current, generation) = waiter { continuation.resume(returning: (current, generation)) }
        }
        return Task.isCancelled && result.1 <= generation ? nil : result
    }

    /// Every change from now on, starting with the current value.
    public func updates() -> AsyncStream<Leadership> {
        let (stream, continuation) = AsyncStream<Leadership>.makeStream(bufferingPolicy: .bufferingNewest(16))
        let id = state.withLock { state -> UInt64 in
            state.lastID += 1
            state.streams[state.lastID] = continuation
            continuation.yield(state.current)
            return state.lastID
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.streams.removeValue(forKey: id) }
        }
        return stream
    }

    /// Ends every stream (the node stopped).
    func finish() {
        let streams = state.withLock { state in
            defer { state.streams = [:] }
            return Array(state.streams.values)
        }
        for stream in streams { stream.finish() }
    }
}
