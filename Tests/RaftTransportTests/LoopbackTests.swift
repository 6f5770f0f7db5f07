import NIOCore
import NIOPosix
import Raft
import RaftTransport
import Testing

/// Real transports on 127.0.0.1 with ephemeral ports.
@Suite struct LoopbackTests {
    static func start(_ transport: RaftTransport, in group: inout ThrowingTaskGroup<Void, any Error>) async throws -> Int {
        group.addTask { try await transport.run() }
        for _ in 0..<500 {
            if let port = transport.boundPort { return port }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw CancellationError()
    }

    /// Waits until `condition` holds, or fails after 10 s.
    static func waitFor(_ condition: () -> Bool) async throws {
        for _ in 0..<1_000 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition never held")
        throw CancellationError()
    }

    /// Collects `count` messages from `transport`, or fails after a deadline.
    static func receive(_ count: Int, from transport: RaftTransport) async throws -> [Message] {
        try await withThrowingTaskGroup(of: [Message].self) { group in
            group.addTask {
                var received: [Message] = []
                for await batch in transport.incoming {
                    received += batch
                    if received.count >= count { break }
                }
                return received
            }
            group.addTask {
                try await Task.sleep(for: .seconds(10))
                throw CancellationError()
            }
            let result = try await group.next()!
            group.cancelAll()
            return result
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func messagesCrossInBatchesAndLargeSnapshotsInChunks() async throws {
        var settings = RaftTransport.Settings()
        settings.maxFramePayloadBytes = 64 << 10
        let a = try RaftTransport(nodeID: 1, clusterID: "c", listen: PeerAddress(host: "127.0.0.1", port: 0), settings: settings)
        let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: PeerAddress(host: "127.0.0.1", port: 0), settings: settings)
        try await withThrowingTaskGroup(of: Void.self) { group in
            _ = try await Self.start(a, in: &group)
            let portB = try await Self.start(b, in: &group)
            a.setPeers([2: PeerAddress(host: "127.0.0.1", port: portB)])
            let big = Snapshot(
                metadata: SnapshotMetadata(index: 9, term: 2, confState: ConfState(voters: [1, 2])),
                data: (0..<300_000).map { UInt8(truncatingIfNeeded: $0 / 3) }
            )
            var sent = (1...200).map { Message(kind: .heartbeat, from: 1, to: 2, term: 2, commit: UInt64($0)) }
            sent.append(Message(kind: .snapshot, from: 1, to: 2, term: 2, snapshot: big))
            // Also a message for a node nobody knows: dropped, not an error.
            a.send([Message(kind: .heartbeat, from: 1, to: 99, term: 2)])
            for chunk in stride(from: 0, to: sent.count, by: 50) { a.send(Array(sent[chunk..<min(chunk + 50, sent.count)])) }
            let received = try await Self.receive(sent.count, from: b)
            #expect(received == sent)
            group.cancelAll()
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func garbageAndForeignPeersAreCutOffWhileTheNodeCarriesOn() async throws {
        let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: PeerAddress(host: "127.0.0.1", port: 0))
        let stranger = try RaftTransport(nodeID: 1, clusterID: "other", listen: PeerAddress(host: "127.0.0.1", port: 0))
        let friend = try RaftTransport(nodeID: 3, clusterID: "c", listen: PeerAddress(host: "127.0.0.1", port: 0))
        try await withThrowingTaskGroup(of: Void.self) { group in
            let portB = try await Self.start(b, in: &group)
            _ = try await Self.start(stranger, in: &group)
            _ = try await Self.start(friend, in: &group)
            // Raw garbage on the peer port.
            let raw = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: portB).get()
            try await raw.writeAndFlush(ByteBuffer(bytes: Array(repeating: 0x42, count: 4096)))
            try await raw.closeFuture.get()  // the node hangs up on it
            // A peer of another cluster is refused.
            stranger.setPeers([2: PeerAddress(host: "127.0.0.1", port: portB)])
            stranger.send([Message(kind: .heartbeat, from: 1, to: 2, term: 5)])
            // Give the stranger a head start: if it were let in, its message would arrive first.
            try await Task.sleep(for: .milliseconds(300))
            // A legitimate peer still gets through.
            friend.setPeers([2: PeerAddress(host: "127.0.0.1", port: portB)])
            friend.send([Message(kind: .heartbeat, from: 3, to: 2, term: 5, commit: 77)])
            let received = try await Self.receive(1, from: b)
            #expect(received.map(\.from) == [3])
            #expect(received.first?.commit == 77)
            group.cancelAll()
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aPeerThatComesBackIsReconnected() async throws {
        let a = try RaftTransport(nodeID: 1, clusterID: "c", listen: PeerAddress(host: "127.0.0.1", port: 0))
        try await withThrowingTaskGroup(of: Void.self) { group in
            _ = try await Self.start(a, in: &group)
            // Find a free port, then let nothing listen on it for a while.
            let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
            let port = probe.localAddress!.port!
            try await probe.close()
            a.setPeers([2: PeerAddress(host: "127.0.0.1", port: port)])
            a.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1, commit: 1)])
            try await Task.sleep(for: .milliseconds(200))
            let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: PeerAddress(host: "127.0.0.1", port: port))
            _ = try await Self.start(b, in: &group)
            // Keep sending as Raft would (heartbeats) until one arrives.
            let sender = Task {
                for commit in 2...500 {
                    a.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1, commit: UInt64(commit))])
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            let received = try await Self.receive(1, from: b)
            sender.cancel()
            #expect(received.first?.from == 1)
            group.cancelAll()
        }
    }
}
