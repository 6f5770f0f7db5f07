import Synchronization
public import Raft
import RaftCoding
public import WireCoding

/// Encodes Raft messages and the connection handshake into frame payloads.
public enum MessageCodec {
    public struct Hello: Sendable, Hashable {
        public var clusterID: String
        public var from: NodeID
        /// Where the sender listens for peers, so a new member can answer a leader it has not
        /// learned about from the log yet.
        public var address: String

        public init(clusterID: String, from: NodeID, address: String = "") {
            self.clusterID = clusterID
            self.from = from
            self.address = address
        }
    }

    public static func encode(_ hello: Hello) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(hello.clusterID)
        writer.write(hello.from)
        writer.write(hello.address)
        return writer.bytes
    }

    public static func decodeHello(_ bytes: [UInt8]) throws(DecodingError) -> Hello {
        var reader = ByteReader(bytes)
        let hello = Hello(clusterID: try reader.readString(), from: try reader.readUInt64(), address: try reader.readString())
        try reader.expectEnd()
        return hello
    }

    public static func encode(_ messages: [Message]) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(messages) { writer, message in encode(message, into: &writer) }
        return writer.bytes
    }

    public static func decodeMessages(_ bytes: [UInt8]) throws(DecodingError) -> [Message] {
        var reader = ByteReader(bytes)
        let messages = try reader.readArray(minimumBytes: 12) { reader throws(DecodingError) in try decodeMessage(&reader) }
        try reader.expectEnd()
        return messages
    }

    static func encode(_ message: Message, into writer: inout ByteWriter) {
        writer.write(message.kind.rawValue)
        writer.write(message.from)
        writer.write(message.to)
        writer.write(message.term)
        writer.write(message.logTerm)
        writer.write(message.index)
        writer.write(message.commit)
        writer.write(message.reject)
        writer.write(message.rejectHint)
        writer.write(bytes: message.context)
        writer.write(message.entries) { writer, entry in
            writer.write(entry.term)
            writer.write(entry.index)
            writer.write(entry.kind.rawValue)
            writer.write(bytes: entry.data)
        }
        writer.write(optional: message.snapshot) { writer, snapshot in
            writer.write(snapshot.metadata.index)
            writer.write(snapshot.metadata.term)
            writer.write(snapshot.metadata.confState)
            writer.write(bytes: snapshot.data)
        }
    }

    static func decodeMessage(_ reader: inout ByteReader) throws(DecodingError) -> Message {
        let rawKind = try reader.readByte()
        guard let kind = MessageKind(rawValue: rawKind) else { throw DecodingError("unknown message kind \(rawKind)") }
        var message = Message(kind: kind)
        message.from = try reader.readUInt64()
        message.to = try reader.readUInt64()
        message.term = try reader.readUInt64()
        message.logTerm = try reader.readUInt64()
        message.index = try reader.readUInt64()
        message.commit = try reader.readUInt64()
        message.reject = try reader.readBool()
        message.rejectHint = try reader.readUInt64()
        message.context = try reader.readBytes()
        message.entries = try reader.readArray(minimumBytes: 4) { reader throws(DecodingError) in
            let term = try reader.readUInt64()
            let index = try reader.readUInt64()
            let rawEntryKind = try reader.readByte()
            guard let entryKind = EntryKind(rawValue: rawEntryKind) else {
                throw DecodingError("unknown entry kind \(rawEntryKind)")
            }
            return Entry(term: term, index: index, kind: entryKind, data: try reader.readBytes())
        }
        message.snapshot = try reader.readOptional { reader throws(DecodingError) in
            let index = try reader.readUInt64()
            let term = try reader.readUInt64()
            let conf = try reader.readConfState()
            return Snapshot(metadata: SnapshotMetadata(index: index, term: term, confState: conf), data: try reader.readBytes())
        }
        return message
    }

    // MARK: Chunks

    /// Splits a payload too large for one frame into chunk payloads.
    public static func chunks(of payload: [UInt8], transfer: UInt64, chunkBytes: Int) -> [[UInt8]] {
        let count = (payload.count + chunkBytes - 1) / chunkBytes
        return (0..<count).map { position in
            var writer = ByteWriter()
            writer.write(transfer)
            writer.write(UInt64(position))
            writer.write(UInt64(count))
            let start = position * chunkBytes
            writer.write(bytes: Array(payload[start..<min(start + chunkBytes, payload.count)]))
            return writer.bytes
        }
    }
}

/// Bytes that all inbound chunked transfers of a node hold together, so that many connections
/// (or many peers) cannot each buffer a transfer's worth of memory.
public final class TransferBudget: Sendable {
    public let limit: Int
    private let used = Mutex(0)

    public init(limit: Int) { self.limit = limit }

    /// Takes `bytes` from the budget; false (and nothing taken) when that would exceed it.
    func reserve(_ bytes: Int) -> Bool {
        used.withLock { used in
            guard used + bytes <= limit else { return false }
            used += bytes
            return true
        }
    }

    func release(_ bytes: Int) { used.withLock { $0 -= bytes } }
}

/// Puts chunked payloads back together, within a bound on what one connection may buffer and,
/// with a ``TransferBudget``, on what all connections buffer together.
public struct ChunkAssembler: Sendable {
    public let maxAssembledBytes: Int
    private let budget: TransferBudget?
    private var transfer: UInt64?
    private var expectedCount = 0
    private var parts: [UInt8] = []
    private var received = 0

    public init(maxAssembledBytes: Int, budget: TransferBudget? = nil) {
        self.maxAssembledBytes = maxAssembledBytes
        self.budget = budget
    }

    /// Drops a transfer in progress (its connection closed) and returns its bytes to the budget.
    public mutating func abandon() {
        budget?.release(parts.count)
        parts = []
        transfer = nil
    }

    /// Adds one chunk; returns the whole payload when it is complete. Chunks of one transfer
    /// arrive in order on one connection; anything else is an error.
    public mutating func add(_ chunk: [UInt8]) throws(TransportError) -> [UInt8]? {
        var reader = ByteReader(chunk)
        let id: UInt64
        let position: UInt64
        let count: UInt64
        let bytes: [UInt8]
        do {
            id = try reader.readUInt64()
            position = try reader.readUInt64()
            count = try reader.readUInt64()
            bytes = try reader.readBytes()
            try reader.expectEnd()
        } catch {
            throw TransportError(.malformedPayload, "chunk: \(error.message)")
        }
        if position == 0 {
            abandon()
            transfer = id
            expectedCount = Int(clamping: count)
            received = 0
        }
        guard transfer == id, position == UInt64(received), count == UInt64(expectedCount), count > 0 else {
            throw TransportError(.unexpectedFrame, "chunk \(position)/\(count) of transfer \(id) out of order")
        }
        guard parts.count + bytes.count <= maxAssembledBytes else {
            throw TransportError(.frameTooLarge, "chunked transfer exceeds \(maxAssembledBytes) bytes")
        }
        if let budget, !budget.reserve(bytes.count) {
            throw TransportError(.frameTooLarge, "inbound chunked transfers together exceed \(budget.limit) bytes")
        }
        parts += bytes
        received += 1
        guard received == expectedCount else { return nil }
        defer { abandon() }
        return parts
    }
}
