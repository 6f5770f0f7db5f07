import HTTPTypes
import Hummingbird
import NIOCore
@testable import Server
import Synchronization
import Testing

/// The streamed-answer pump's two bounds (issue 16, items 6 and 10): the whole answer ends by
/// its deadline, and a slow client holds back the worker's stream instead of growing a queue.
@Suite struct ChunkPumpTests {
    /// A body of `count` chunks of `size` bytes, counting how many were taken; it stalls
    /// forever after `stallAfter` chunks.
    struct Source: AsyncSequence, Sendable {
        typealias Element = ByteBuffer
        let count: Int
        let size: Int
        let stallAfter: Int?
        let produced = Produced()

        final class Produced: Sendable {
            let value = Atomic<Int>(0)
        }

        struct AsyncIterator: AsyncIteratorProtocol {
            let source: Source
            var index = 0

            mutating func next() async throws -> ByteBuffer? {
                if let stallAfter = source.stallAfter, index >= stallAfter {
                    try await Task.sleep(for: .seconds(3_600))
                }
                guard index < source.count else { return nil }
                index += 1
                source.produced.value.add(1, ordering: .relaxed)
                return ByteBuffer(repeating: 0x61, count: source.size)
            }
        }

        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: self) }
    }

    /// A client that takes `delay` to accept each write, and checks on each how far ahead of it
    /// the worker's stream has run.
    struct SlowClient: ResponseBodyWriter {
        let delay: Duration
        let source: Source
        let log: Log

        final class Log: Sendable {
            let written = Atomic<Int>(0)
            let maxAhead = Atomic<Int>(0)
        }

        mutating func write(_ buffer: ByteBuffer) async throws {
            let ahead = source.produced.value.load(ordering: .relaxed) * source.size - log.written.load(ordering: .relaxed)
            log.maxAhead.max(ahead, ordering: .relaxed)
            log.written.add(buffer.readableBytes, ordering: .relaxed)
            try await Task.sleep(for: delay)
        }

        mutating func write(contentsOf buffers: some Sequence<ByteBuffer>) async throws {
            for buffer in buffers { try await write(buffer) }
        }

        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    @Test(.timeLimit(.minutes(1)))
    func aStreamThatStallsEndsAtTheDeadline() async throws {
        let source = Source(count: 100, size: 10, stallAfter: 3)
        let log = SlowClient.Log()
        var writer: any ResponseBodyWriter = SlowClient(delay: .zero, source: source, log: log)
        let started = ContinuousClock.now
        do {
            try await ChunkPump.pump(source, into: &writer, deadline: started + .milliseconds(300)) {}
            Issue.record("a stalled stream ended normally")
        } catch {
            guard case .upstream(let cause) = error, cause is DeadlineExceeded else {
                Issue.record("unexpected \(error)")
                return
            }
        }
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(2), "the pump took \(elapsed)")
        #expect(log.written.load(ordering: .relaxed) == 30, "what arrived before the stall went out")
    }

    @Test(.timeLimit(.minutes(1)))
    func aSlowClientHoldsBackTheStreamInsteadOfGrowingTheQueue() async throws {
        // 4 MiB from a fast worker to a client that takes 5 ms per write, with a 256 KiB cap.
        let size = 64 << 10
        let source = Source(count: 64, size: size, stallAfter: nil)
        let log = SlowClient.Log()
        var writer: any ResponseBodyWriter = SlowClient(delay: .milliseconds(5), source: source, log: log)
        try await ChunkPump.pump(source, into: &writer, deadline: .now + .seconds(30), maxQueuedBytes: 256 << 10) {}
        #expect(log.written.load(ordering: .relaxed) == 64 * size)
        // At most a full queue (the cap and the chunk that crossed it) waits while as much is
        // being written; without the cap the stream ran the whole 4 MiB ahead.
        let ahead = log.maxAhead.load(ordering: .relaxed)
        #expect(ahead <= 2 * ((256 << 10) + size), "the worker's stream ran \(ahead) bytes ahead of the client")
    }
}
