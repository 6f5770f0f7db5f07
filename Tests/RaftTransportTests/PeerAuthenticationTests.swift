import NIOCore
import NIOPosix
import Raft
@testable import RaftTransport
import Testing

/// The shared-secret handshake, the handshake deadline and the connection caps, on loopback.
@Suite struct PeerAuthenticationTests {
    static let loopback = PeerAddress(host: "127.0.0.1", port: 0)

    static func settings(secret: String?) throws -> RaftTransport.Settings {
        var settings = RaftTransport.Settings()
        settings.secret = try secret.map { try PeerSecret(text: $0) }
        return settings
    }

    @Test(.timeLimit(.minutes(1)))
    func onlyPeersHoldingTheSecretGetThrough() async throws {
        let secret = "correct horse battery staple"
        let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: Self.loopback, settings: Self.settings(secret: secret))
        let friend = try RaftTransport(nodeID: 1, clusterID: "c", listen: Self.loopback, settings: Self.settings(secret: secret))
        let wrong = try RaftTransport(nodeID: 3, clusterID: "c", listen: Self.loopback, settings: Self.settings(secret: "another secret, 16+ bytes"))
        let none = try RaftTransport(nodeID: 4, clusterID: "c", listen: Self.loopback)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let portB = try await LoopbackTests.start(b, in: &group)
            for transport in [friend, wrong, none] { _ = try await LoopbackTests.start(transport, in: &group) }
            let addressB = PeerAddress(host: "127.0.0.1", port: portB)
            for (transport, id) in [(wrong, NodeID(3)), (none, NodeID(4))] {
                transport.setPeers([2: addressB])
                transport.send([Message(kind: .heartbeat, from: id, to: 2, term: 1)])
            }
            // Both are refused and counted before the member tries.
            try await LoopbackTests.waitFor {
                b.refusals.snapshot["bad_proof", default: 0] >= 1 && b.refusals.snapshot["unauthenticated", default: 0] >= 1
            }
            friend.setPeers([2: addressB])
            friend.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1, commit: 3)])
            let received = try await LoopbackTests.receive(1, from: b)
            #expect(received.map(\.from) == [1])
            #expect(received.first?.commit == 3)
            group.cancelAll()
        }
    }

    /// A dialler with the secret does not talk to a listener without it (or with another).
    @Test(.timeLimit(.minutes(1)))
    func aDiallerSendsNothingToAListenerThatCannotProveItself() async throws {
        let listener = try RaftTransport(nodeID: 2, clusterID: "c", listen: Self.loopback)
        let dialler = try RaftTransport(nodeID: 1, clusterID: "c", listen: Self.loopback, settings: Self.settings(secret: "a secret of enough bytes"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            let port = try await LoopbackTests.start(listener, in: &group)
            _ = try await LoopbackTests.start(dialler, in: &group)
            dialler.setPeers([2: PeerAddress(host: "127.0.0.1", port: port)])
            dialler.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1)])
            let got = try? await withThrowingTaskGroup(of: [Message].self) { inner in
                inner.addTask { try await LoopbackTests.receive(1, from: listener) }
                inner.addTask { try await Task.sleep(for: .seconds(1)); return [] }
                defer { inner.cancelAll() }
                return try await inner.next()!
            }
            #expect(got ?? [] == [])
            group.cancelAll()
        }
    }

    @Test func shortSecretsAreRefused() {
        #expect(throws: PeerSecretError.tooShort(5)) { _ = try PeerSecret(text: "short\n ") }
        #expect(throws: Never.self) { _ = try PeerSecret(text: String(repeating: "x", count: 16)) }
    }

    /// The proof covers the cluster, both ids and both nonces: change any and it differs.
    @Test func theProofIsBoundToClusterIdsAndNonces() throws {
        let secret = try PeerSecret(text: "0123456789abcdef")
        let n1 = [UInt8](repeating: 1, count: 32), n2 = [UInt8](repeating: 2, count: 32)
        let base = Handshake.proof(secret: secret, cluster: "c", dialler: 1, listener: 2, listenerNonce: n1, diallerNonce: n2)
        #expect(base.count == 32)
        let variants = [
            Handshake.proof(secret: secret, cluster: "d", dialler: 1, listener: 2, listenerNonce: n1, diallerNonce: n2),
            Handshake.proof(secret: secret, cluster: "c", dialler: 3, listener: 2, listenerNonce: n1, diallerNonce: n2),
            Handshake.proof(secret: secret, cluster: "c", dialler: 1, listener: 3, listenerNonce: n1, diallerNonce: n2),
            Handshake.proof(secret: secret, cluster: "c", dialler: 1, listener: 2, listenerNonce: n2, diallerNonce: n2),
            Handshake.proof(secret: secret, cluster: "c", dialler: 1, listener: 2, listenerNonce: n1, diallerNonce: n1),
            Handshake.accept(secret: secret, cluster: "c", dialler: 1, listener: 2, listenerNonce: n1, diallerNonce: n2),
            Handshake.proof(secret: try PeerSecret(text: "0123456789abcdeF"), cluster: "c", dialler: 1, listener: 2, listenerNonce: n1, diallerNonce: n2),
        ]
        for variant in variants { #expect(!Handshake.same(variant, base)) }
        #expect(Handshake.same(base, Handshake.proof(secret: secret, cluster: "c", dialler: 1, listener: 2, listenerNonce: n1, diallerNonce: n2)))
    }

    /// A connection that says nothing is closed at the handshake deadline; connections beyond
    /// the cap are closed at once; both are counted.
    @Test(.timeLimit(.minutes(1)))
    func silentAndSurplusConnectionsAreClosed() async throws {
        var settings = RaftTransport.Settings()
        settings.handshakeTimeout = .milliseconds(300)
        settings.maxInboundConnections = 3
        let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: Self.loopback, settings: settings)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let port = try await LoopbackTests.start(b, in: &group)
            var raw: [any Channel] = []
            for _ in 0..<5 {
                raw.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
            }
            let clock = ContinuousClock()
            let start = clock.now
            for channel in raw { try await channel.closeFuture.get() }
            #expect(clock.now - start < .seconds(5))
            #expect(b.refusals.snapshot["too_many_connections"] == 2)
            #expect(b.refusals.snapshot["handshake_timeout"] == 3)
            group.cancelAll()
        }
    }

    /// Hellos from ever new ids learn at most `maxLearnedPeers` addresses.
    @Test(.timeLimit(.minutes(1)))
    func learnedPeersAreCapped() async throws {
        var settings = RaftTransport.Settings()
        settings.maxLearnedPeers = 2
        let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: Self.loopback, settings: settings)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let port = try await LoopbackTests.start(b, in: &group)
            for id in NodeID(10)..<NodeID(20) {
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder())) } }
                    .connect(host: "127.0.0.1", port: port).get()
                let hello = MessageCodec.Hello(clusterID: "c", from: id, address: "127.0.0.1:\(1000 + id)")
                try await channel.writeAndFlush(Frame(kind: .hello, payload: MessageCodec.encode(hello)))
                try await channel.writeAndFlush(Frame(kind: .messages, payload: MessageCodec.encode([Message(kind: .heartbeat, from: id, to: 2, term: 1)])))
                _ = try await LoopbackTests.receive(1, from: b)
                try await channel.close()
            }
            #expect(b.knownPeers.count == 2)
            group.cancelAll()
        }
    }
}
