import Hummingbird
import NIOCore
import Synchronization

/// Copies a worker's streamed answer to the client, coalescing what arrived while the previous
/// write was in flight: a burst of SSE events leaves in one write (one syscall) instead of one
/// each, and no event ever waits for another. A reader task drains the upstream body into a
/// shared queue; the writer takes everything queued each time it wakes.
///
/// Two bounds: the queue holds at most `maxQueuedBytes` (past it the reader waits for the
/// writer, so a client that reads slowly slows the worker's stream instead of growing this
/// node's memory), and the whole answer must end by `deadline` (`upstream_timeout_ms`), or the
/// pump stops with ``Failure/upstream(_:)``. `abortWhen`, when given, is awaited beside the
/// stream: an error it returns stops the pump the same way (a PD hand-off's other leg failed).
enum ChunkPump {
    enum Failure: Error {
        /// The upstream body failed (the worker broke the stream or passed the deadline).
        case upstream(any Error)
        /// Writing to the client failed (it went away).
        case client(any Error)
    }

    static let defaultMaxQueuedBytes = 1 << 20

    private struct Queue {
        var buffers: [ByteBuffer] = []
        var bytes = 0
        var finished = false
        var error: (any Error)?
        /// Set with `error` when the deadline passed or `abortWhen` fired: nothing more goes out,
        /// even what was queued.
        var halted = false
        /// The reader, waiting for the writer to drain the queue below the cap.
        var readerWaiting: CheckedContinuation<Void, Never>?

        /// Takes everything queued, and the reader's continuation if it waits for room.
        mutating func drain() -> ([ByteBuffer], (any Error)?, CheckedContinuation<Void, Never>?, halted: Bool) {
            defer {
                buffers.removeAll(keepingCapacity: true)
                bytes = 0
                readerWaiting = nil
            }
            return (buffers, error, readerWaiting, halted)
        }
    }

    /// Returns when the whole body was written; `firstByte` runs once, when the first bytes
    /// arrive from upstream.
    static func pump<Body: AsyncSequence & Sendable>(
        _ body: Body, into writer: inout any ResponseBodyWriter, deadline: ContinuousClock.Instant,
        maxQueuedBytes: Int = defaultMaxQueuedBytes, abortWhen: (@Sendable () async -> (any Error)?)? = nil,
        firstByte: @Sendable () -> Void
    ) async throws(Failure) where Body.Element == ByteBuffer {
        let queue = Shared()
        let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let reader = Task {
            do {
                for try await chunk in body {
                    let full = queue.withLock { queue -> Bool in
                        queue.buffers.append(chunk)
                        queue.bytes += chunk.readableBytes
                        return queue.bytes > maxQueuedBytes
                    }
                    signal.yield()
                    if full { await waitForRoom(queue, maxQueuedBytes: maxQueuedBytes) }
                }
                queue.withLock { $0.finished = true }
            } catch {
                queue.withLock { queue in
                    // A cancellation after the deadline keeps the deadline as the reason.
                    if queue.error == nil { queue.error = error }
                    queue.finished = true
                }
            }
            signal.finish()
        }
        @Sendable func halt(_ error: any Error) {
            queue.withLock { queue in
                if !queue.finished {
                    queue.error = error
                    queue.finished = true
                    queue.halted = true
                }
            }
            signal.yield()
            reader.cancel()
        }
        let timer = Alarm(at: deadline) { halt(DeadlineExceeded(what: "the worker's answer")) }
        let watcher = abortWhen.map { abortWhen in
            Task {
                if let error = await abortWhen() { halt(error) }
            }
        }
        defer {
            timer.cancel()
            watcher?.cancel()
            reader.cancel()
            // A reader parked for room must not wait for a writer that has gone.
            queue.withLock { queue in queue.drain() }.2?.resume()
        }
        var first = true
        func write(_ buffers: [ByteBuffer]) async throws(Failure) {
            guard !buffers.isEmpty else { return }
            if first {
                firstByte()
                first = false
            }
            var merged = buffers[0]
            for buffer in buffers.dropFirst() { merged.writeImmutableBuffer(buffer) }
            do { try await writer.write(merged) } catch { throw .client(error) }
        }
        for await _ in signals {
            let (buffers, error, waiting, halted) = queue.withLock { $0.drain() }
            waiting?.resume()
            if halted, let error { throw .upstream(error) }
            try await write(buffers)
            if let error { throw .upstream(error) }
        }
        // The stream finished; take what the last signal may not have covered.
        let (rest, error, waiting, halted) = queue.withLock { $0.drain() }
        waiting?.resume()
        if halted, let error { throw .upstream(error) }
        try await write(rest)
        if let error { throw .upstream(error) }
    }

    /// The queue, shared by the reader and the writer.
    private final class Shared: Sendable {
        private let queue = Mutex(Queue())

        func withLock<T>(_ body: (inout Queue) -> T) -> T { queue.withLock { body(&$0) } }
    }

    /// Parks the reader until the writer has taken the queue (or the pump ends).
    private static func waitForRoom(_ queue: Shared, maxQueuedBytes: Int) async {
        await withCheckedContinuation { continuation in
            let resumeNow = queue.withLock { queue -> Bool in
                guard queue.bytes > maxQueuedBytes, !queue.finished else { return true }
                queue.readerWaiting = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}
