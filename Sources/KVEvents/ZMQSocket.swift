import CZMQ
import Foundation

/// A thin owner of one libzmq socket. libzmq sockets are not thread-safe: each is used by one
/// thread only (the event hub's, or a simulated engine's publisher thread).
public final class ZMQSocket: @unchecked Sendable {
    public enum Kind: Int32, Sendable {
        case pub = 1
        case sub = 2
        case dealer = 5
        case router = 6
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// One process-wide context (its I/O thread serves every socket).
    nonisolated(unsafe) static let context: UnsafeMutableRawPointer = zmq_ctx_new()

    let handle: UnsafeMutableRawPointer
    private var closed = false

    /// `maxMessageBytes` bounds every received frame (libzmq drops the connection of a peer
    /// that sends more).
    public init(_ kind: Kind, maxMessageBytes: Int64 = 32 << 20) throws(Failure) {
        guard let socket = zmq_socket(Self.context, kind.rawValue) else { throw Self.lastError("zmq_socket") }
        handle = socket
        try set(ZMQ_LINGER, Int32(0))
        try set(ZMQ_MAXMSGSIZE, maxMessageBytes)
        try set(ZMQ_RECONNECT_IVL, Int32(100))
        try set(ZMQ_RECONNECT_IVL_MAX, Int32(2_000))
        if kind == .sub { try subscribe(prefix: []) }
    }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        zmq_close(handle)
    }

    static func lastError(_ call: String) -> Failure {
        Failure(description: "\(call): \(String(cString: zmq_strerror(zmq_errno())))")
    }

    func set<Value>(_ option: Int32, _ value: Value) throws(Failure) {
        var value = value
        let result = withUnsafeBytes(of: &value) { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        guard result == 0 else { throw Self.lastError("zmq_setsockopt(\(option))") }
    }

    public func subscribe(prefix: [UInt8]) throws(Failure) {
        let result = prefix.withUnsafeBytes { zmq_setsockopt(handle, ZMQ_SUBSCRIBE, $0.baseAddress, $0.count) }
        guard result == 0 else { throw Self.lastError("zmq_setsockopt(ZMQ_SUBSCRIBE)") }
    }

    public func connect(_ endpoint: String) throws(Failure) {
        guard zmq_connect(handle, endpoint) == 0 else { throw Self.lastError("zmq_connect(\(endpoint))") }
    }

    public func bind(_ endpoint: String) throws(Failure) {
        guard zmq_bind(handle, endpoint) == 0 else { throw Self.lastError("zmq_bind(\(endpoint))") }
    }

    /// The endpoint bound last (with the port chosen for `tcp://host:*`).
    public var lastEndpoint: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        guard zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sends the frames as one multipart message; false when it would block (a full queue).
    @discardableResult
    public func send(_ frames: [[UInt8]], wait: Bool = false) throws(Failure) -> Bool {
        for (index, frame) in frames.enumerated() {
            var flags: Int32 = index + 1 < frames.count ? ZMQ_SNDMORE : 0
            if !wait { flags |= ZMQ_DONTWAIT }
            let sent = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
            if sent < 0 {
                if zmq_errno() == EAGAIN && index == 0 { return false }
                throw Self.lastError("zmq_send")
            }
        }
        return true
    }

    /// The next multipart message, or nil when none is waiting. At most `maxFrames` frames are
    /// kept; the rest of a longer message is read and dropped.
    public func receive(maxFrames: Int = 8) throws(Failure) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        var more = true
        var first = true
        while more {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            let size = zmq_msg_recv(&message, handle, first ? ZMQ_DONTWAIT : 0)
            if size < 0 {
                if first && zmq_errno() == EAGAIN { return nil }
                throw Self.lastError("zmq_msg_recv")
            }
            first = false
            if frames.count < maxFrames, let data = zmq_msg_data(&message) {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: Int(size))))
            } else if frames.count < maxFrames {
                frames.append([])
            }
            more = zmq_msg_more(&message) != 0
        }
        return frames
    }

    /// Waits up to `timeoutMilliseconds` until one of `sockets` has a message; returns which.
    public static func poll(_ sockets: [ZMQSocket], timeoutMilliseconds: Int) -> [Bool] {
        guard !sockets.isEmpty else {
            Thread.sleep(forTimeInterval: Double(timeoutMilliseconds) / 1000)
            return []
        }
        var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        let ready = zmq_poll(&items, Int32(items.count), timeoutMilliseconds)
        guard ready > 0 else { return Array(repeating: false, count: sockets.count) }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }
}
