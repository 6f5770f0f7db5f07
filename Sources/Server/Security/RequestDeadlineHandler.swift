import HummingbirdCore
import Synchronization
import NIOCore
import NIOHTTPTypes
import Serving
import FulcrumAPI

/// Closes a connection whose client does not finish sending a request head within `timeout` of
/// connecting, or within `keepAlive` of the end of its previous response, or does not finish
/// the request's body within `bodyTimeout` of its head: a slow client (slow-loris, or one byte of
/// body every 50 s) cannot hold a connection and a task open. Sits after HTTP decoding, where a
/// head is only seen once complete.
///
/// A kept-alive connection gets the longer `keepAlive` (the idle timeout) before its next head:
/// a server that closes idle connections sooner than its clients' pools expire them races with
/// the next request on them, which then fails without reaching the server (a replay lost one
/// request in 4,000 that way with the header timeout here).
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let timeout: TimeAmount
    private let keepAlive: TimeAmount
    private let bodyTimeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount, keepAlive: TimeAmount, bodyTimeout: TimeAmount) {
        self.timeout = timeout
        self.keepAlive = max(timeout, keepAlive)
        self.bodyTimeout = bodyTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context, in: timeout) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context, in: timeout)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: arm(context, in: bodyTimeout)
        case .body: break
        case .end:
            deadline?.cancel()
            deadline = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context, in: keepAlive) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext, in delay: TimeAmount) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: delay) { channel.close(promise: nil) }
    }
}

/// Holds the HTTP listener's open connections to `limit`: one past it is closed as it opens
/// (and counted), so a flood of connections cannot exhaust file descriptors or memory.
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny

    /// The count shared by every connection of one listener.
    final class Gauge: Sendable {
        let open = Atomic<Int>(0)
        let limit: Int
        let refused: @Sendable () -> Void

        init(limit: Int, refused: @escaping @Sendable () -> Void) {
            self.limit = limit
            self.refused = refused
        }
    }

    private let gauge: Gauge
    private let counted = Atomic<Bool>(false)

    init(gauge: Gauge) { self.gauge = gauge }

    func handlerAdded(context: ChannelHandlerContext) {
        guard !counted.exchange(true, ordering: .relaxed) else { return }
        if gauge.open.wrappingAdd(1, ordering: .relaxed).newValue > gauge.limit {
            gauge.refused()
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }

    private func release() {
        if counted.exchange(false, ordering: .relaxed) { gauge.open.wrappingSubtract(1, ordering: .relaxed) }
    }
}
