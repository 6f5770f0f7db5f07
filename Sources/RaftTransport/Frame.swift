public import NIOCore
import WireCoding

/// One unit on a peer connection.
///
/// Wire format (version 1), big-endian:
/// ```
/// "FR" | version: u8 | type: u8 | payload length: u32 | checksum: u64 | payload
/// ```
/// The checksum is ``StableHasher`` over the payload. A frame with another magic or version, a
/// length above the receiver's cap or a wrong checksum closes the connection.
public struct Frame: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable {
        /// First frame of every connection: cluster id and sender id.
        case hello = 1
        /// A batch of Raft messages.
        case messages = 2
        /// A piece of a batch too large for one frame (large snapshots).
        case chunk = 3
        /// Listener to dialler, after the hello when the cluster has a peer secret: a nonce.
        case challenge = 4
        /// Dialler to listener: its nonce and its HMAC over both (``Handshake``).
        case proof = 5
        /// Listener to dialler: the listener's HMAC; messages may follow.
        case accept = 6
    }

    public static let version: UInt8 = 1
    static let magic: (UInt8, UInt8) = (0x46, 0x52)
    static let headerSize = 16

    public var kind: Kind
    public var payload: [UInt8]

    public init(kind: Kind, payload: [UInt8]) {
        self.kind = kind
        self.payload = payload
    }

    static func checksum(_ payload: [UInt8]) -> UInt64 {
        var hasher = StableHasher()
        hasher.combine(bytes: payload)
        return hasher.finalized
    }
}

/// Splits a byte stream into ``Frame``s, refusing anything malformed.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    public let maxPayloadBytes: Int

    public init(maxPayloadBytes: Int) { self.maxPayloadBytes = maxPayloadBytes }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes >= Frame.headerSize else { return .needMoreData }
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self),
            first == Frame.magic.0, second == Frame.magic.1
        else {
            throw TransportError(.badMagic, "frame does not start with \"FR\"")
        }
        let version = buffer.getInteger(at: start + 2, as: UInt8.self)!
        guard version == Frame.version else {
            throw TransportError(.unsupportedVersion, "frame version \(version); this node speaks \(Frame.version)")
        }
        let rawKind = buffer.getInteger(at: start + 3, as: UInt8.self)!
        guard let kind = Frame.Kind(rawValue: rawKind) else {
            throw TransportError(.malformedPayload, "unknown frame type \(rawKind)")
        }
        let length = Int(buffer.getInteger(at: start + 4, as: UInt32.self)!)
        guard length <= maxPayloadBytes else {
            throw TransportError(.frameTooLarge, "frame of \(length) bytes exceeds the cap of \(maxPayloadBytes)")
        }
        guard buffer.readableBytes >= Frame.headerSize + length else { return .needMoreData }
        let checksum = buffer.getInteger(at: start + 8, as: UInt64.self)!
        buffer.moveReaderIndex(forwardBy: Frame.headerSize)
        let payload = buffer.readBytes(length: length)!
        guard Frame.checksum(payload) == checksum else {
            throw TransportError(.checksumMismatch, "checksum mismatch on a \(length)-byte \(kind) frame")
        }
        context.fireChannelRead(wrapInboundOut(Frame(kind: kind, payload: payload)))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Writes ``Frame``s.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame

    public init() {}

    public func encode(data frame: Frame, out: inout ByteBuffer) throws {
        out.reserveCapacity(minimumWritableBytes: Frame.headerSize + frame.payload.count)
        out.writeInteger(Frame.magic.0)
        out.writeInteger(Frame.magic.1)
        out.writeInteger(Frame.version)
        out.writeInteger(frame.kind.rawValue)
        out.writeInteger(UInt32(frame.payload.count))
        out.writeInteger(Frame.checksum(frame.payload))
        out.writeBytes(frame.payload)
    }
}
