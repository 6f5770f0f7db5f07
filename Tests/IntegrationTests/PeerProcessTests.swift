import Foundation
import FulcrumAPI
import NIOCore
import NIOPosix
import Raft
import RaftTransport
import Testing

/// Raw peer connections to real `fulcrum` processes (issue 16, items 3, 4 and 9): what a
/// process that reaches the peer port can do without the cluster secret, and what a member that
/// holds it can do with hostile messages.
@Suite(.serialized) struct PeerProcessTests {
    /// Item 3: without the secret a hello and a message at a higher term moved a follower to that
    /// term (and a snapshot would have replaced its state). Now the connection is refused at the
    /// handshake and counted; the follower's term does not move.
    @Test(.timeLimit(.minutes(3)))
    func aPeerWithoutTheSecretChangesNothing() async throws {
        let cluster = try ProcessCluster(founders: 3, environment: ["FULCRUM_LOG_LEVEL": "warning"])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        let follower = try #require(cluster.founders.first { $0 != leader })
        let before = try #require(await cluster.status(follower))
        let heartbeat = Message(kind: .heartbeat, from: leader, to: follower, term: before.term + 50, commit: before.commitIndex)
        // Plays a member (the leader's id) with no secret: hello, then a message at once ...
        try await RawPeer.session(port: cluster.peerPorts[follower]!) { peer in
            try await peer.hello(cluster: "it", from: leader)
            try? await peer.send([heartbeat])
            try await Task.sleep(for: .milliseconds(300))
        }
        // ... then with a wrong secret.
        let admitted = try await RawPeer.session(port: cluster.peerPorts[follower]!) { peer in
            let admitted = try await peer.handshake(cluster: "it", from: leader, to: follower, secret: try PeerSecret(text: "a wrong secret of 16+ bytes"))
            try? await peer.send([heartbeat])
            try await Task.sleep(for: .milliseconds(300))
            return admitted
        }
        #expect(!admitted)
        try await Task.sleep(for: .milliseconds(500))
        let after = try #require(await cluster.status(follower))
        #expect(after.term == before.term, "the follower moved from term \(before.term) to \(after.term)")
        #expect(after.leader == leader)
        let metrics = try await cluster.request(.GET, cluster.endpoint(follower) + "/metrics")
        let text = String(decoding: metrics.data, as: UTF8.self)
        #expect(text.contains(#"fulcrum_peer_connections_refused_total{reason="unauthenticated"}"#), "\(text.prefix(400))")
        #expect(text.contains(#"fulcrum_peer_connections_refused_total{reason="bad_proof"}"#))
    }

    /// Items 4 and 9: a member (it holds the secret) sends well-formed messages with extreme
    /// fields: terms near the integer limit, appends that are not contiguous, acknowledgements
    /// past the log, and a snapshot this build cannot read. Every node stays up, no term moves
    /// near the limit, the drops are counted, and the cluster still commits.
    @Test(.timeLimit(.minutes(3)))
    func aMemberSendingExtremeFieldsStopsNoNode() async throws {
        let cluster = try ProcessCluster(founders: 3, environment: ["FULCRUM_LOG_LEVEL": "warning"])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        #expect(try await cluster.register("before", via: leader))
        let followers = cluster.founders.filter { $0 != leader }
        let status = try #require(await cluster.status(followers[0]))
        let term = status.term, last = status.lastIndex
        let secret = try PeerSecret(text: ProcessCluster.peerSecret)
        let garbage = Snapshot(metadata: SnapshotMetadata(index: last + 100, term: term, confState: ConfState(voters: cluster.founders)), data: Array("not a snapshot".utf8))
        // To a follower, as the leader.
        let toFollower: [Message] = [
            Message(kind: .heartbeat, from: leader, to: followers[0], term: .max - 1, commit: .max),
            Message(kind: .append, from: leader, to: followers[0], term: UInt64(1) << 63, logTerm: term, index: last),
            Message(kind: .append, from: leader, to: followers[0], term: term, logTerm: term, index: last,
                    entries: [Entry(term: term, index: last + 5), Entry(term: term, index: last + 2)], commit: last + 5),
            Message(kind: .append, from: leader, to: followers[0], term: term, logTerm: term, index: .max - 1,
                    entries: [Entry(term: term, index: .max)], commit: .max),
            Message(kind: .vote, from: leader, to: followers[0], term: .max, logTerm: .max, index: .max),
            Message(kind: .snapshot, from: leader, to: followers[0], term: term, snapshot: garbage),
        ]
        // To the leader, as a follower.
        let toLeader: [Message] = [
            Message(kind: .appendResponse, from: followers[1], to: leader, term: term, index: .max, rejectHint: .max),
            Message(kind: .appendResponse, from: followers[1], to: leader, term: term, index: last + 1_000_000),
            Message(kind: .appendResponse, from: followers[1], to: leader, term: term, index: .max, reject: true, rejectHint: .max),
            Message(kind: .heartbeatResponse, from: followers[1], to: leader, term: .max),
        ]
        for (target, from, messages) in [(followers[0], leader, toFollower), (leader, followers[1], toLeader)] {
            let admitted = try await RawPeer.session(port: cluster.peerPorts[target]!) { peer in
                guard try await peer.handshake(cluster: "it", from: from, to: target, secret: secret) else { return false }
                for message in messages { try await peer.send([message]) }
                try await Task.sleep(for: .milliseconds(300))
                return true
            }
            #expect(admitted)
        }
        try await Task.sleep(for: .milliseconds(500))
        for id in cluster.founders { #expect(cluster.processes[id]?.isRunning == true, "node \(id) stopped") }
        let newLeader = try await cluster.leader()
        #expect(try await cluster.register("after", via: newLeader))
        for id in cluster.founders {
            let current = try #require(await cluster.status(id))
            #expect(current.term < UInt64(1) << 62, "node \(id) took term \(current.term)")
        }
        // Every node applies the write after the attack (its log was not replaced or broken).
        let deadline = ContinuousClock.now + .seconds(10)
        var holding: [UInt64: [String]] = [:]
        repeat {
            for id in cluster.founders { holding[id] = try await cluster.workers(on: id, consistent: false) }
            if holding.values.allSatisfy({ Set($0) == ["before", "after"] }) { break }
            try await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < deadline
        #expect(holding.values.allSatisfy { Set($0) == ["before", "after"] }, "\(holding)")
        let metrics = try await cluster.request(.GET, cluster.endpoint(followers[0]) + "/metrics")
        let text = String(decoding: metrics.data, as: UTF8.self)
        #expect(text.contains("fulcrum_raft_messages_dropped_total{reason=\"term\"}"), "\(text.prefix(600))")
        #expect(text.contains("fulcrum_raft_messages_dropped_total{reason=\"snapshot\"}"))
    }
}

/// A peer connection written frame by frame, to play a stranger or a misbehaving member.
struct RawPeer {
    private var frames: NIOAsyncChannelInboundStream<Frame>.AsyncIterator
    private let outbound: NIOAsyncChannelOutboundWriter<Frame>
    /// Closes the connection after 3 s, so a node that never answers fails the handshake.
    private let deadline: Scheduled<Void>

    /// Connects to a peer port on loopback and runs `body` on the connection, then closes it.
    static func session<T: Sendable>(port: Int, _ body: (inout RawPeer) async throws -> T) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxPayloadBytes: 1 << 20)))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                    return try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
                }
            }
        let raw = channel.channel
        let deadline = raw.eventLoop.scheduleTask(in: .seconds(3)) { raw.close(promise: nil) }
        return try await channel.executeThenClose { inbound, outbound in
            var peer = RawPeer(frames: inbound.makeAsyncIterator(), outbound: outbound, deadline: deadline)
            return try await body(&peer)
        }
    }

    /// Says hello as `from`; with a secret, answers the challenge. True when the node let the
    /// connection in (it accepted the proof).
    func hello(cluster: String, from: NodeID) async throws {
        try await outbound.write(Frame(kind: .hello, payload: MessageCodec.encode(MessageCodec.Hello(clusterID: cluster, from: from, address: ""))))
    }

    mutating func handshake(cluster: String, from: NodeID, to: NodeID, secret: PeerSecret?) async throws -> Bool {
        try await hello(cluster: cluster, from: from)
        guard let challenge = try? await frames.next(), challenge.kind == .challenge else { return false }
        guard let secret else { return false }
        let nonce = Handshake.nonce()
        let proof = Handshake.proof(secret: secret, cluster: cluster, dialler: from, listener: to, listenerNonce: challenge.payload, diallerNonce: nonce)
        try await outbound.write(Frame(kind: .proof, payload: nonce + proof))
        guard let accept = try? await frames.next(), accept.kind == .accept else { return false }
        deadline.cancel()
        return Handshake.same(
            accept.payload,
            Handshake.accept(secret: secret, cluster: cluster, dialler: from, listener: to, listenerNonce: challenge.payload, diallerNonce: nonce)
        )
    }

    func send(_ messages: [Message]) async throws {
        try await outbound.write(Frame(kind: .messages, payload: MessageCodec.encode(messages)))
    }
}
