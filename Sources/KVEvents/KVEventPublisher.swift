import Foundation
import Synchronization

/// Publishes KV event batches the way vLLM's and SGLang's `ZmqEventPublisher` does (both
/// `kv_events.py` files named in ``KVEventBatch``): a PUB socket sends `[topic, seq, payload]`
/// with `seq` numbered from 0 as 8 bytes big-endian; a ROUTER socket answers a replay request
/// `[identity, "", start]` with `[identity, "", seq, payload]` for every buffered batch from
/// `start` on, then `[identity, "", −1, ""]`. For simulated engines and tests; one thread owns
/// both sockets.
public final class KVEventPublisher: Sendable {
    private struct Shared {
        var queue: [KVEventBatch] = []
        var running = true
        /// Test knob: live sends to skip (they stay in the replay buffer), to make a gap.
        var dropLive = 0
        var published: Int64 = 0
    }

    public let endpoint: String
    public let replayEndpoint: String?
    public let encoding: KVEventBatch.Encoding
    let bufferSteps: Int
    private let shared = Mutex(Shared())

    /// Binds `endpoint` (and `replayEndpoint`), e.g. `tcp://127.0.0.1:5557`.
    public init(endpoint: String, replayEndpoint: String?, encoding: KVEventBatch.Encoding, bufferSteps: Int = 10_000) throws(ZMQSocket.Failure) {
        let pub = try ZMQSocket(.pub)
        try pub.set(Int32(23), Int32(100_000))  // ZMQ_SNDHWM, as upstream's hwm default
        try pub.bind(endpoint)
        var replay: ZMQSocket?
        if let replayEndpoint {
            let socket = try ZMQSocket(.router)
            try socket.bind(replayEndpoint)
            replay = socket
        }
        self.endpoint = pub.lastEndpoint ?? endpoint
        self.replayEndpoint = replay?.lastEndpoint ?? replayEndpoint
        self.encoding = encoding
        self.bufferSteps = bufferSteps
        let sockets = Sockets(pub: pub, replay: replay)
        let thread = Thread { [self] in run(sockets) }
        thread.name = "kv-events-publisher"
        thread.start()
    }

    /// Hands the sockets to the publisher's thread.
    private final class Sockets: @unchecked Sendable {
        let pub: ZMQSocket
        let replay: ZMQSocket?
        init(pub: ZMQSocket, replay: ZMQSocket?) {
            self.pub = pub
            self.replay = replay
        }
    }

    public func publish(_ batch: KVEventBatch) {
        guard !batch.events.isEmpty else { return }
        shared.withLock { $0.queue.append(batch) }
    }

    /// Skips the next `count` live sends (each stays replayable): a subscriber sees a gap.
    public func dropLive(_ count: Int) {
        shared.withLock { $0.dropLive += count }
    }

    /// Batches published so far.
    public var published: Int64 { shared.withLock { $0.published } }

    public func stop() {
        shared.withLock { $0.running = false }
    }

    private func run(_ sockets: Sockets) {
        var buffer: [(Int64, [UInt8])] = []
        var sequence: Int64 = 0
        while true {
            let (running, batches, drop) = shared.withLock { state -> (Bool, [KVEventBatch], Int) in
                defer { state.queue = [] }
                return (state.running, state.queue, state.dropLive)
            }
            guard running else { break }
            var dropped = 0
            for batch in batches {
                let payload = batch.encoded(encoding)
                if dropped < drop {
                    dropped += 1
                } else {
                    _ = try? sockets.pub.send([[], sequence.bigEndianBytes, payload])
                }
                buffer.append((sequence, payload))
                if buffer.count > bufferSteps { buffer.removeFirst(buffer.count - bufferSteps) }
                sequence += 1
            }
            let sent = Int64(batches.count)
            shared.withLock {
                $0.dropLive -= dropped
                $0.published += sent
            }
            guard let replay = sockets.replay else {
                Thread.sleep(forTimeInterval: 0.002)
                continue
            }
            guard ZMQSocket.poll([replay], timeoutMilliseconds: 2).first == true else { continue }
            while let frames = try? replay.receive(), frames.count == 3, let start = Int64(bigEndianBytes: frames[2]) {
                let identity = frames[0]
                for (number, payload) in buffer where number >= start {
                    _ = try? replay.send([identity, [], number.bigEndianBytes, payload], wait: true)
                }
                _ = try? replay.send([identity, [], Int64(-1).bigEndianBytes, []], wait: true)
            }
        }
        sockets.pub.close()
        sockets.replay?.close()
    }
}
