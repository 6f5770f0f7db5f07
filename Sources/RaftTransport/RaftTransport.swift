public import Logging
public import NIOCore
public import NIOPosix
import NIOSSL
import NIOTLS
public import Raft
import Synchronization
import WireCoding

/// Where a peer listens.
public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (IPv6 hosts in brackets).
    public static let maxHostBytes = 253

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        // A DNS name is at most 253 bytes; nothing a peer, an admin call or the log supplies
        // may make every node dial a megabyte-long host or one with control characters.
        guard !host.isEmpty, host.utf8.count <= Self.maxHostBytes,
              host.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
        else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Raft messages between peers over TCP: one outbound connection per peer, batched (everything
/// queued while a write is in flight goes out in the next frame), reconnected with exponential
/// backoff; inbound connections start with a handshake naming the cluster and the sender.
/// Malformed input closes that connection and is logged; it never affects the node.
public final class RaftTransport: Sendable {
    public struct Settings: Sendable {
        /// Largest frame payload accepted or sent; larger batches travel in chunks.
        public var maxFramePayloadBytes = 8 << 20
        /// Largest batch (e.g. a snapshot) reassembled from chunks, and the most that all
        /// inbound transfers together may buffer.
        public var maxAssembledBytes = 1 << 30
        /// Messages waiting for one peer before the oldest are dropped (Raft retries).
        public var maxQueuedMessagesPerPeer = 8192
        public var reconnectInitialDelay = Duration.milliseconds(20)
        public var reconnectMaxDelay = Duration.seconds(1)
        public var connectTimeout = Duration.seconds(1)
        /// Mutual TLS between peers: both sides present a certificate signed by `trustRoots`
        /// whose common name is `node-<id>` (``CertificateIdentity``).
        public var tls: TLSFiles?
        /// The cluster's shared secret: every connection starts with an HMAC challenge
        /// (``Handshake``), and a peer without the secret is refused.
        public var secret: PeerSecret?
        /// Time a new connection has to say hello and prove itself.
        public var handshakeTimeout = Duration.seconds(5)
        /// Inbound peer connections held at once; more are closed at accept.
        public var maxInboundConnections = 64
        /// Peers learned from hellos (not in the configured membership) kept at once.
        public var maxLearnedPeers = 16

        public init() {}

        /// Whether a peer must prove who it is (mutual TLS or the shared secret).
        public var authenticatesPeers: Bool { tls != nil || secret != nil }
    }

    /// PEM files for mutual TLS.
    public struct TLSFiles: Sendable, Hashable {
        public var certificateChain: String
        public var privateKey: String
        /// The CA that signs every member's certificate.
        public var trustRoots: String

        public init(certificateChain: String, privateKey: String, trustRoots: String) {
            self.certificateChain = certificateChain
            self.privateKey = privateKey
            self.trustRoots = trustRoots
        }
    }

    /// Server and client TLS contexts, when mutual TLS is on.
    private struct TLSContexts: Sendable {
        let server: NIOSSLContext
        let client: NIOSSLContext
    }

    private let tls: TLSContexts?

    public let nodeID: NodeID
    public let clusterID: String
    public let settings: Settings
    private let listenAddress: PeerAddress
    /// What this node tells peers to dial back (its listen address unless set).
    private let advertisedAddress: PeerAddress?
    private let logger: Logger
    private let group: any EventLoopGroup

    /// Messages from peers, one batch per frame, in arrival order per connection. A node steps a
    /// whole batch before it persists and sends, so a batch costs one fsync.
    public let incoming: AsyncStream<[Message]>
    private let incomingContinuation: AsyncStream<[Message]>.Continuation

    private struct PeerQueue {
        var address: PeerAddress
        var messages: [Message] = []
        var dropped = 0
        var wake: AsyncStream<Void>.Continuation
        var signals: AsyncStream<Void>
        var writerStarted = false

        init(address: PeerAddress) {
            self.address = address
            (signals, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        }
    }

    private struct State {
        var peers: [NodeID: PeerQueue] = [:]
        /// Peers known only from their hello, not from the membership.
        var learned: Set<NodeID> = []
        var newPeers: AsyncStream<NodeID>.Continuation?
        var boundPort: Int?
    }

    /// Connections refused or closed for cause, by reason.
    public let refusals = RefusalCounts()
    private let inboundConnections = Atomic<Int>(0)

    private let state = Mutex(State())
    private let transferCounter = Atomic<UInt64>(1)
    /// Shared by every inbound connection's chunk assembler.
    private let transferBudget: TransferBudget

    public init(
        nodeID: NodeID, clusterID: String, listen: PeerAddress, advertise: PeerAddress? = nil,
        peers: [NodeID: PeerAddress] = [:], settings: Settings = Settings(), logger: Logger = Logger(label: "fulcrum.transport"),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        self.nodeID = nodeID
        self.clusterID = clusterID
        self.settings = settings
        self.transferBudget = TransferBudget(limit: settings.maxAssembledBytes)
        self.listenAddress = listen
        self.advertisedAddress = advertise
        var logger = logger
        logger[metadataKey: "node"] = "\(nodeID)"
        self.logger = logger
        self.group = group
        self.tls = try Self.makeTLS(settings.tls)
        (incoming, incomingContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(16_384))
        setPeers(peers)
    }

    /// The port the listener is bound to, once ``run()`` has bound it.
    public var boundPort: Int? { state.withLock { $0.boundPort } }

    /// The peers this transport has a queue for: the membership and those learned from hellos.
    public var knownPeers: Set<NodeID> { state.withLock { Set($0.peers.keys) } }

    /// Replaces the peer list (membership changed). New peers get a connection when first
    /// messaged; removed peers' queues are dropped and their writers stop, except those in
    /// `keeping` (members whose address only the transport knows, from their hello).
    public func setPeers(_ peers: [NodeID: PeerAddress], keeping: Set<NodeID> = []) {
        state.withLock { state in
            for id in state.peers.keys where peers[id] == nil && !keeping.contains(id) {
                state.peers[id]!.wake.finish()
                state.peers[id] = nil
                state.learned.remove(id)
            }
            for (id, address) in peers where id != nodeID {
                state.learned.remove(id)
                if state.peers[id] != nil {
                    state.peers[id]!.address = address
                } else {
                    state.peers[id] = PeerQueue(address: address)
                }
            }
        }
    }

    /// Queues messages for their peers; returns at once. Messages to unknown peers are dropped
    /// (Raft retries what matters).
    public func send(_ messages: [Message]) {
        guard !messages.isEmpty else { return }
        let limit = settings.maxQueuedMessagesPerPeer
        state.withLock { state in
            for message in messages {
                guard var queue = state.peers[message.to] else { continue }
                state.peers[message.to] = nil
                queue.messages.append(message)
                if queue.messages.count > limit {
                    queue.dropped += queue.messages.count - limit
                    queue.messages.removeFirst(queue.messages.count - limit)
                }
                if !queue.writerStarted, let newPeers = state.newPeers {
                    queue.writerStarted = true
                    newPeers.yield(message.to)
                }
                queue.wake.yield()
                state.peers[message.to] = queue
            }
        }
    }

    /// Listens and keeps peer connections until the task is cancelled.
    public func run() async throws {
        let (newPeers, newPeersContinuation) = AsyncStream<NodeID>.makeStream()
        let pending: [NodeID] = state.withLock { state in
            state.newPeers = newPeersContinuation
            var started: [NodeID] = []
            for id in state.peers.keys where !state.peers[id]!.messages.isEmpty {
                state.peers[id]!.writerStarted = true
                started.append(id)
            }
            return started
        }
        for id in pending { newPeersContinuation.yield(id) }
        defer {
            newPeersContinuation.finish()
            incomingContinuation.finish()
        }
        let server = try await bind()
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.serve(server) }
            group.addTask {
                await withDiscardingTaskGroup { writers in
                    for await peer in newPeers {
                        writers.addTask { await self.writeLoop(to: peer) }
                    }
                }
            }
            // Stop everything on cancellation: the streams above end with it.
            try await withTaskCancellationHandler {
                try await Task.sleep(for: .seconds(86_400 * 365))
            } onCancel: {
                newPeersContinuation.finish()
                self.state.withLock { state in
                    for queue in state.peers.values { queue.wake.finish() }
                }
                server.channel.close(promise: nil)
            }
        }
    }

    private static func makeTLS(_ files: TLSFiles?) throws -> TLSContexts? {
        guard let files else { return nil }
        let chain = try NIOSSLCertificate.fromPEMFile(files.certificateChain).map { NIOSSLCertificateSource.certificate($0) }
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: files.privateKey, format: .pem))
        var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
        server.trustRoots = .file(files.trustRoots)
        // Require and verify the dialling peer's certificate; peers are known by id, not hostname.
        server.certificateVerification = .noHostnameVerification
        server.minimumTLSVersion = .tlsv12
        var client = TLSConfiguration.makeClientConfiguration()
        client.certificateChain = chain
        client.privateKey = key
        client.trustRoots = .file(files.trustRoots)
        client.certificateVerification = .noHostnameVerification
        client.minimumTLSVersion = .tlsv12
        return TLSContexts(server: try NIOSSLContext(configuration: server), client: try NIOSSLContext(configuration: client))
    }

    // MARK: Inbound

    private func bind() async throws -> NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never> {
        let maxPayload = settings.maxFramePayloadBytes
        let tls = self.tls?.server
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: listenAddress.host, port: listenAddress.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    return try Self.configure(channel, maxPayload: maxPayload)
                }
            }
        let port = server.channel.localAddress?.port
        state.withLock { $0.boundPort = port }
        logger.info("listening for peers", metadata: ["address": "\(listenAddress.host):\(port ?? 0)"])
        return server
    }

    static func configure(_ channel: any Channel, maxPayload: Int) throws -> NIOAsyncChannel<Frame, Frame> {
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxPayloadBytes: maxPayload)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
        return try NIOAsyncChannel<Frame, Frame>(wrappingChannelSynchronously: channel)
    }

    private func serve(_ server: NIOAsyncChannel<NIOAsyncChannel<Frame, Frame>, Never>) async throws {
        try await server.executeThenClose { connections in
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in connections {
                    let remote = connection.channel.remoteAddress.map { "\($0)" } ?? "?"
                    let open = inboundConnections.wrappingAdd(1, ordering: .relaxed).newValue
                    guard open <= settings.maxInboundConnections else {
                        inboundConnections.wrappingSubtract(1, ordering: .relaxed)
                        refuse(TransportError(.tooManyConnections, "\(open - 1) peer connections already open"), remote: remote)
                        group.addTask { try? await connection.executeThenClose { _, _ in } }
                        continue
                    }
                    group.addTask {
                        defer { self.inboundConnections.wrappingSubtract(1, ordering: .relaxed) }
                        do {
                            try await self.receive(on: connection, remote: remote)
                        } catch is CancellationError {
                            // Shutting down.
                        } catch let error as TransportError {
                            self.refuse(error, remote: remote)
                        } catch {
                            // One bad peer connection closes; the node carries on.
                            self.refusals.record(error is NIOSSLError ? "tls_handshake" : "connection_error")
                            self.logger.warning("closed peer connection", metadata: ["remote": "\(remote)", "error": "\(error)"])
                        }
                    }
                }
            }
        }
    }

    /// Logs and counts a connection closed for cause.
    private func refuse(_ error: TransportError, remote: String) {
        refusals.record(error.code.rawValue)
        logger.warning("refused peer connection", metadata: ["remote": "\(remote)", "reason": "\(error.code.rawValue)", "error": "\(error.message)"])
    }

    /// Where an inbound connection is in its handshake.
    private enum InboundPhase {
        case awaitingHello
        case awaitingProof(MessageCodec.Hello, nonce: [UInt8])
        case open(NodeID)
    }

    private func receive(on connection: NIOAsyncChannel<Frame, Frame>, remote: String) async throws {
        let channel = connection.channel
        let deadline = HandshakeDeadline(channel: channel, after: settings.handshakeTimeout) { [self] in
            refuse(TransportError(.handshakeTimeout, "no hello and proof within \(settings.handshakeTimeout)"), remote: remote)
        }
        defer { deadline.cancel() }
        try await connection.executeThenClose { inbound, outbound in
            var phase = InboundPhase.awaitingHello
            var assembler = ChunkAssembler(maxAssembledBytes: settings.maxAssembledBytes, budget: transferBudget)
            defer { assembler.abandon() }
            for try await frame in inbound {
                switch phase {
                case .awaitingHello:
                    // With mutual TLS the certificate names the node (TLS's own handshake is
                    // over once a frame arrives).
                    let certified: NodeID?? = tls == nil ? nil : .some(try await channel.nioSSL_peerCertificate().get().flatMap(CertificateIdentity.nodeID))
                    let hello = try checkHello(frame, certified: certified)
                    if settings.secret != nil {
                        let nonce = Handshake.nonce()
                        try await outbound.write(Frame(kind: .challenge, payload: nonce))
                        phase = .awaitingProof(hello, nonce: nonce)
                    } else {
                        phase = .open(admit(hello, deadline: deadline))
                    }
                case .awaitingProof(let hello, let nonce):
                    guard let secret = settings.secret, frame.kind == .proof,
                        frame.payload.count == Handshake.nonceBytes + Handshake.macBytes
                    else {
                        throw TransportError(.unauthenticated, "peer \(hello.from) sent a \(frame.kind) frame instead of a proof of the cluster secret")
                    }
                    let theirNonce = Array(frame.payload[..<Handshake.nonceBytes])
                    let expected = Handshake.proof(
                        secret: secret, cluster: clusterID, dialler: hello.from, listener: nodeID, listenerNonce: nonce, diallerNonce: theirNonce
                    )
                    guard Handshake.same(Array(frame.payload[Handshake.nonceBytes...]), expected) else {
                        throw TransportError(.badProof, "peer \(hello.from) does not hold the cluster secret")
                    }
                    let accept = Handshake.accept(
                        secret: secret, cluster: clusterID, dialler: hello.from, listener: nodeID, listenerNonce: nonce, diallerNonce: theirNonce
                    )
                    try await outbound.write(Frame(kind: .accept, payload: accept))
                    phase = .open(admit(hello, deadline: deadline))
                case .open(let from):
                    try deliver(frame, from: from, assembler: &assembler)
                }
            }
        }
    }

    /// Checks a connection's first frame: a hello of this cluster, from the node the peer's
    /// certificate names when there is one.
    private func checkHello(_ frame: Frame, certified: NodeID??) throws -> MessageCodec.Hello {
        guard frame.kind == .hello else {
            throw TransportError(.unexpectedFrame, "expected a hello frame first, got \(frame.kind)")
        }
        let hello: MessageCodec.Hello
        do throws(DecodingError) { hello = try MessageCodec.decodeHello(frame.payload) } catch {
            throw TransportError(.malformedPayload, "hello: \(error.message)")
        }
        guard hello.clusterID == clusterID else {
            throw TransportError(.foreignCluster, "peer \(hello.from) is in cluster '\(hello.clusterID)', not '\(clusterID)'")
        }
        guard hello.from != nodeID, hello.from != 0 else {
            throw TransportError(.spoofedSender, "a hello from node \(hello.from), which is not a peer's id")
        }
        if let certified {
            guard let certified else {
                throw TransportError(.unauthenticated, "the peer's certificate names no node (its common name must be \(CertificateIdentity.prefix)<id>)")
            }
            guard certified == hello.from else {
                throw TransportError(.identityMismatch, "hello from node \(hello.from) over a certificate of node \(certified)")
            }
        }
        return hello
    }

    /// The peer proved itself: stop the handshake clock and learn where it listens.
    private func admit(_ hello: MessageCodec.Hello, deadline: HandshakeDeadline) -> NodeID {
        deadline.cancel()
        if let address = PeerAddress(hello.address) { learn(hello.from, at: address) }
        return hello.from
    }

    /// Hands one frame's messages (or a finished chunked transfer's) to the node.
    private func deliver(_ frame: Frame, from: NodeID, assembler: inout ChunkAssembler) throws {
        let payload: [UInt8]
        switch frame.kind {
        case .hello, .challenge, .proof, .accept:
            throw TransportError(.unexpectedFrame, "a \(frame.kind) frame from \(from) after its handshake")
        case .messages:
            payload = frame.payload
        case .chunk:
            guard let whole = try assembler.add(frame.payload) else { return }
            payload = whole
        }
        let messages: [Message]
        do throws(DecodingError) { messages = try MessageCodec.decodeMessages(payload) } catch {
            throw TransportError(.malformedPayload, "messages from \(from): \(error.message)")
        }
        for message in messages {
            // A transfer request names the transferee in `from`; everything else must come
            // from the peer that said hello.
            guard message.from == from || message.kind == .transferLeader else {
                throw TransportError(.spoofedSender, "peer \(from) sent a message from \(message.from)")
            }
        }
        let mine = messages.filter { $0.to == nodeID }
        if !mine.isEmpty { incomingContinuation.yield(mine) }
    }

    /// Remembers where a peer that dialled in listens, unless its address is already known or
    /// too many peers are known only this way.
    private func learn(_ peer: NodeID, at address: PeerAddress) {
        guard peer != nodeID else { return }
        let learned = state.withLock { state -> Bool in
            guard state.peers[peer] == nil, state.learned.count < settings.maxLearnedPeers else { return false }
            state.peers[peer] = PeerQueue(address: address)
            state.learned.insert(peer)
            return true
        }
        if learned {
            logger.debug("learned a peer's address from its hello", metadata: ["peer": "\(peer)", "address": "\(address)"])
        }
    }

    // MARK: Outbound

    private func writeLoop(to peer: NodeID) async {
        var delay = settings.reconnectInitialDelay
        var logger = self.logger
        logger[metadataKey: "peer"] = "\(peer)"
        while !Task.isCancelled {
            guard let (address, signals) = state.withLock({ state in state.peers[peer].map { ($0.address, $0.signals) } }) else {
                return
            }
            do {
                let (channel, tlsDone) = try await connect(to: address)
                delay = settings.reconnectInitialDelay
                logger.debug("connected", metadata: ["address": "\(address)"])
                let finished = try await channel.executeThenClose { inbound, outbound in
                    try await handshake(with: peer, on: channel.channel, tlsDone: tlsDone, inbound: inbound, outbound: outbound)
                    for await _ in signals {
                        let batch = state.withLock { state -> [Message] in
                            guard state.peers[peer] != nil else { return [] }
                            defer { state.peers[peer]!.messages = [] }
                            return state.peers[peer]!.messages
                        }
                        guard !batch.isEmpty else { continue }
                        for frame in frames(for: batch) { try await outbound.write(frame) }
                    }
                    return true
                }
                if finished { return }
            } catch let error as TransportError {
                logger.warning("peer refused, retrying", metadata: ["address": "\(address)", "reason": "\(error.code.rawValue)", "error": "\(error.message)", "retry_in": "\(delay)"])
                do { try await Task.sleep(for: delay) } catch { return }
                delay = min(delay * 2, settings.reconnectMaxDelay)
            } catch {
                logger.debug("peer unreachable, retrying", metadata: ["address": "\(address)", "error": "\(error)", "retry_in": "\(delay)"])
                do { try await Task.sleep(for: delay) } catch { return }
                delay = min(delay * 2, settings.reconnectMaxDelay)
            }
        }
    }

    /// The dialler's side of the handshake: hello, and with a secret the proof, then the
    /// listener's accept; with mutual TLS, the listener's certificate must name `peer`.
    private func handshake(
        with peer: NodeID, on channel: any Channel, tlsDone: EventLoopFuture<Void>?,
        inbound: NIOAsyncChannelInboundStream<Frame>, outbound: NIOAsyncChannelOutboundWriter<Frame>
    ) async throws {
        let deadline = HandshakeDeadline(channel: channel, after: settings.handshakeTimeout) {}
        defer { deadline.cancel() }
        if let tlsDone {
            try await tlsDone.get()
            let certified = try await channel.nioSSL_peerCertificate().get().flatMap(CertificateIdentity.nodeID)
            guard certified == peer else {
                throw TransportError(.identityMismatch, "dialled node \(peer), reached a certificate of \(certified.map { "node \($0)" } ?? "no node")")
            }
        }
        let advertised = advertisedAddress ?? PeerAddress(host: listenAddress.host, port: boundPort ?? listenAddress.port)
        let hello = MessageCodec.Hello(clusterID: clusterID, from: nodeID, address: advertised.description)
        try await outbound.write(Frame(kind: .hello, payload: MessageCodec.encode(hello)))
        guard let secret = settings.secret else { return }
        var frames = inbound.makeAsyncIterator()
        guard let challenge = try await frames.next() else {
            throw TransportError(.unauthenticated, "node \(peer) closed the connection instead of sending a challenge (wrong cluster, or no secret there?)")
        }
        guard challenge.kind == .challenge, challenge.payload.count == Handshake.nonceBytes else {
            throw TransportError(.unexpectedFrame, "expected a challenge from node \(peer), got \(challenge.kind)")
        }
        let nonce = Handshake.nonce()
        let proof = Handshake.proof(secret: secret, cluster: clusterID, dialler: nodeID, listener: peer, listenerNonce: challenge.payload, diallerNonce: nonce)
        try await outbound.write(Frame(kind: .proof, payload: nonce + proof))
        guard let accept = try await frames.next() else {
            throw TransportError(.badProof, "node \(peer) closed the connection after the proof: it holds another secret")
        }
        let expected = Handshake.accept(secret: secret, cluster: clusterID, dialler: nodeID, listener: peer, listenerNonce: challenge.payload, diallerNonce: nonce)
        guard accept.kind == .accept, Handshake.same(accept.payload, expected) else {
            throw TransportError(.badProof, "node \(peer) does not hold the cluster secret")
        }
    }

    /// A new outbound connection, and with TLS the future of TLS's own handshake.
    private func connect(to address: PeerAddress) async throws -> (NIOAsyncChannel<Frame, Frame>, EventLoopFuture<Void>?) {
        let maxPayload = settings.maxFramePayloadBytes
        let tls = self.tls?.client
        return try await ClientBootstrap(group: group)
            .connectTimeout(.milliseconds(Int64(settings.connectTimeout.components.seconds * 1000)
                + settings.connectTimeout.components.attoseconds / 1_000_000_000_000_000))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    var tlsDone: EventLoopFuture<Void>?
                    if let tls {
                        let waiter = TLSHandshakeWaiter(promise: channel.eventLoop.makePromise())
                        tlsDone = waiter.promise.futureResult
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(waiter)
                    }
                    return (try Self.configure(channel, maxPayload: maxPayload), tlsDone)
                }
            }
    }

    /// One frame for the batch, or chunks when it is larger than a frame may be.
    func frames(for batch: [Message]) -> [Frame] {
        let payload = MessageCodec.encode(batch)
        guard payload.count > settings.maxFramePayloadBytes else { return [Frame(kind: .messages, payload: payload)] }
        let transfer = transferCounter.wrappingAdd(1, ordering: .relaxed).oldValue
        // Leave room for the chunk's own header inside the frame cap.
        let chunkBytes = settings.maxFramePayloadBytes - 64
        return MessageCodec.chunks(of: payload, transfer: transfer, chunkBytes: chunkBytes).map { Frame(kind: .chunk, payload: $0) }
    }
}

/// Closes a connection whose handshake is not finished in time.
final class HandshakeDeadline: Sendable {
    private let scheduled: Scheduled<Void>

    init(channel: any Channel, after timeout: Duration, onExpiry: @escaping @Sendable () -> Void) {
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        scheduled = channel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) {
            onExpiry()
            channel.close(promise: nil)
        }
    }

    func cancel() { scheduled.cancel() }
}

/// Completes its promise when TLS's handshake is done, or fails it when the connection ends
/// first, so that the dialler checks the listener's certificate before it sends anything.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let promise: EventLoopPromise<Void>
    private let completed = Atomic<Bool>(false)

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    private func complete(_ result: Result<Void, any Error>) {
        guard completed.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        promise.completeWith(result)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { complete(.success(())) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(TransportError(.unauthenticated, "the connection closed during TLS's handshake")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(error))
        context.fireErrorCaught(error)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        complete(.failure(TransportError(.unauthenticated, "the connection closed during TLS's handshake")))
    }
}
