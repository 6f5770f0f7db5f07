import HummingbirdCore
import NIOCore
import NIOHTTPTypes
import Serving
import FulcrumAPI

/// Closes a connection whose client does not finish sending a request head within `timeout` of
/// connecting, or within `keepAlive` of the end of its previous response: a slow-header
/// (slow-loris) client cannot hold a connection open by trickling bytes. Sits after HTTP
/// decoding, where a head is only seen once complete.
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
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount, keepAlive: TimeAmount) {
        self.timeout = timeout
        self.keepAlive = max(timeout, keepAlive)
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
        if case .head = unwrapInboundIn(data) {
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
