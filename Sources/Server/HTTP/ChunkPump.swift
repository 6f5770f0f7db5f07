import AsyncHTTPClient
import Hummingbird
import NIOCore
import Synchronization
import Serving
import FulcrumAPI

/// Copies a worker's streamed answer to the client, coalescing what arrived while the previous
/// write was in flight: a burst of SSE events leaves in one write (one syscall) instead of one
/// each, and no event ever waits for another. A reader task drains the upstream body into a
/// shared queue; the writer takes everything queued each time it wakes.
enum ChunkPump {
    enum Failure: Error {
        /// The upstream body failed (the worker broke the stream or timed out).
        case upstream(any Error)
        /// Writing to the client failed (it went away).
        case client(any Error)
    }

    private struct Queue {
        var buffers: [ByteBuffer] = []
        var finished = false
        var error: (any Error)?
    }

    /// Returns when the whole body was written; `firstByte` runs once, when the first bytes
    /// arrive from upstream.
    static func pump(
        _ body: HTTPClientResponse.Body, into writer: inout any ResponseBodyWriter, firstByte: @Sendable () -> Void
    ) async throws(Failure) {
        let queue = Mutex(Queue())
        let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let reader = Task {
            do {
                for try await chunk in body { queue.withLock { $0.buffers.append(chunk) }; signal.yield() }
                queue.withLock { $0.finished = true }
            } catch {
                queue.withLock { $0.error = error; $0.finished = true }
            }
            signal.finish()
        }
        var first = true
        for await _ in signals {
            let (buffers, error) = queue.withLock { queue in
                defer { queue.buffers.removeAll(keepingCapacity: true) }
                return (queue.buffers, queue.error)
            }
            if !buffers.isEmpty {
                if first {
                    firstByte()
                    first = false
                }
                var merged = buffers[0]
                for buffer in buffers.dropFirst() { merged.writeImmutableBuffer(buffer) }
                do {
                    try await writer.write(merged)
                } catch {
                    reader.cancel()
                    throw .client(error)
                }
            }
            if let error { throw .upstream(error) }
        }
        // The stream finished; take what the last signal may not have covered.
        let (rest, error) = queue.withLock { ($0.buffers, $0.error) }
        if !rest.isEmpty {
            if first { firstByte() }
            var merged = rest[0]
            for buffer in rest.dropFirst() { merged.writeImmutableBuffer(buffer) }
            do { try await writer.write(merged) } catch { throw .client(error) }
        }
        if let error { throw .upstream(error) }
    }
}
