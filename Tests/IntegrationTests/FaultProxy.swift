import NIOCore
import NIOPosix
import RaftTransport
import Synchronization

/// Which directions between nodes are cut. Shared by every node's ``FaultProxy``.
final class Partitions: Sendable {
    private let blocked = Mutex<Set<Pair>>([])
    private let proxies = Mutex<[FaultProxy]>([])
    /// With network namespaces, the cuts are nftables rules there instead of proxy decisions.
    let lab: NetworkLab?

    init(lab: NetworkLab? = nil) { self.lab = lab }

    struct Pair: Hashable { var from: UInt64; var to: UInt64 }

    func isBlocked(from: UInt64, to: UInt64) -> Bool { blocked.withLock { $0.contains(Pair(from: from, to: to)) } }

    func attach(_ proxy: FaultProxy) { proxies.withLock { $0.append(proxy) } }

    /// Cuts every direction in `pairs` (and nothing else), closing connections that now cross a cut.
    func set(_ pairs: Set<Pair>) {
        blocked.withLock { $0 = pairs }
        lab?.cut(pairs)
        for proxy in proxies.withLock({ $0 }) { proxy.enforce() }
    }

    /// Both directions between every node of `side` and every node outside it.
    func split(_ side: Set<UInt64>, among nodes: [UInt64]) {
        var pairs = Set<Pair>()
        for a in side { for b in nodes where !side.contains(b) { pairs.insert(Pair(from: a, to: b)); pairs.insert(Pair(from: b, to: a)) } }
        set(pairs)
    }

    func heal() { set([]) }
}

/// A TCP proxy in front of one node's peer port. Every peer connection starts with a hello frame
/// naming its sender, so the proxy knows the direction of each connection (the transport uses one
/// connection per direction) and drops those the ``Partitions`` cut.
final class FaultProxy: Sendable {
    let node: UInt64
    let target: Int
    let partitions: Partitions
    private let server = Mutex<(any Channel)?>(nil)
    private let connections = Mutex<[ObjectIdentifier: (from: UInt64, inbound: any Channel, outbound: any Channel)]>([:])

    init(node: UInt64, target: Int, partitions: Partitions) {
        self.node = node
        self.target = target
        self.partitions = partitions
        partitions.attach(self)
    }

    func start(port: Int) async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HelloSniffer(proxy: self))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        server.withLock { $0 = channel }
    }

    func stop() async {
        try? await server.withLock({ $0 })?.close()
        for connection in connections.withLock({ Array($0.values) }) {
            connection.inbound.close(promise: nil)
            connection.outbound.close(promise: nil)
        }
    }

    /// Closes connections whose direction is now cut.
    func enforce() {
        let cut = connections.withLock { table in
            table.filter { partitions.isBlocked(from: $0.value.from, to: node) }.map(\.value)
        }
        for connection in cut {
            connection.inbound.close(promise: nil)
            connection.outbound.close(promise: nil)
        }
    }

    fileprivate func connected(from: UInt64, inbound: any Channel, outbound: any Channel) {
        let key = ObjectIdentifier(inbound)
        connections.withLock { $0[key] = (from, inbound, outbound) }
        inbound.closeFuture.whenComplete { _ in
            _ = self.connections.withLock { $0.removeValue(forKey: key) }
            outbound.close(promise: nil)
        }
        outbound.closeFuture.whenComplete { _ in inbound.close(promise: nil) }
        if partitions.isBlocked(from: from, to: node) { inbound.close(promise: nil) }
    }
}

/// Buffers the start of a connection until the hello frame is complete, then connects to the
/// node and forwards everything (or closes, when the direction is cut).
private final class HelloSniffer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let proxy: FaultProxy
    var buffered = ByteBuffer()
    var connecting = false
    var outbound: (any Channel)?

    init(proxy: FaultProxy) { self.proxy = proxy }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if let outbound {
            outbound.writeAndFlush(bytes, promise: nil)
            return
        }
        buffered.writeBuffer(&bytes)
        guard !connecting, buffered.readableBytes >= 16,
            let length = buffered.getInteger(at: buffered.readerIndex + 4, as: UInt32.self),
            buffered.readableBytes >= 16 + Int(length)
        else { return }
        let payload = buffered.getBytes(at: buffered.readerIndex + 16, length: Int(length)) ?? []
        guard let hello = try? MessageCodec.decodeHello(payload), !proxy.partitions.isBlocked(from: hello.from, to: proxy.node) else {
            context.close(promise: nil)
            return
        }
        connecting = true
        let inbound = context.channel
        let proxy = proxy
        ClientBootstrap(group: context.eventLoop)
            .channelInitializer { outbound in
                outbound.eventLoop.makeCompletedFuture { try outbound.pipeline.syncOperations.addHandler(Splice(partner: inbound)) }
            }
            .connect(host: "127.0.0.1", port: proxy.target)
            .hop(to: context.eventLoop)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let outbound):
                    outbound.writeAndFlush(self.buffered, promise: nil)
                    self.buffered.clear()
                    self.outbound = outbound
                    proxy.connected(from: hello.from, inbound: inbound, outbound: outbound)
                case .failure:
                    inbound.close(promise: nil)
                }
            }
    }

    func channelInactive(context: ChannelHandlerContext) {
        outbound?.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Writes what one connection reads to its partner.
private final class Splice: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let partner: any Channel

    init(partner: any Channel) { self.partner = partner }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner.writeAndFlush(unwrapInboundIn(data), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
