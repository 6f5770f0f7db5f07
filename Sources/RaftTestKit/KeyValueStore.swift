public import Raft

/// A client command replicated through the simulated cluster: write `value` to register `key`.
/// Every command carries a cluster-unique id, so duplicates and losses can be detected.
public struct KeyValueCommand: Sendable, Hashable {
    public var id: UInt64
    public var key: UInt8
    public var value: UInt64

    public init(id: UInt64, key: UInt8, value: UInt64) {
        self.id = id
        self.key = key
        self.value = value
    }

    static let encodedSize = 17

    public func encoded() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.encodedSize)
        withUnsafeBytes(of: id.littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(key)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// Decodes a command, or nil for anything else (such as a leader's empty no-op entry).
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count == Self.encodedSize else { return nil }
        id = ByteReader.uint64(bytes, at: 0)
        key = bytes[8]
        value = ByteReader.uint64(bytes, at: 9)
    }
}

enum ByteReader {
    static func uint64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        for byte in 0..<8 { value |= UInt64(bytes[offset + byte]) << (8 * byte) }
        return value
    }

    static func append(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// The simulated application: registers keyed by a byte, plus the ids of applied commands.
/// Deterministic, snapshot-able byte for byte, and cheap to hash.
public struct KeyValueStore: Sendable, Hashable {
    public private(set) var registers: [UInt8: UInt64] = [:]
    public private(set) var appliedIndex: LogIndex = 0
    /// Order-sensitive digest of every command applied, so two stores compare in O(1).
    public private(set) var digest: UInt64 = 0xcbf2_9ce4_8422_2325
    public private(set) var commandCount: UInt64 = 0

    public init() {}

    /// Applies one committed entry. Returns the command it carried, if any.
    @discardableResult
    public mutating func apply(_ entry: Entry) -> KeyValueCommand? {
        precondition(entry.index == appliedIndex + 1, "store at \(appliedIndex) given entry \(entry.index)")
        appliedIndex = entry.index
        guard entry.kind == .normal, let command = KeyValueCommand(decoding: entry.data) else { return nil }
        registers[command.key] = command.value
        commandCount += 1
        digest = (digest ^ command.id) &* 0x100_0000_01b3
        digest = (digest ^ (UInt64(command.key) << 56 | command.value)) &* 0x100_0000_01b3
        return command
    }

    public func value(of key: UInt8) -> UInt64 { registers[key] ?? 0 }

    /// Byte image: index, digest, count, then registers sorted by key.
    public func snapshotData() -> [UInt8] {
        var bytes = [UInt8]()
        ByteReader.append(appliedIndex, to: &bytes)
        ByteReader.append(digest, to: &bytes)
        ByteReader.append(commandCount, to: &bytes)
        for key in registers.keys.sorted() {
            bytes.append(key)
            ByteReader.append(registers[key]!, to: &bytes)
        }
        return bytes
    }

    public init(snapshotData bytes: [UInt8]) {
        guard bytes.count >= 24 else { return }
        appliedIndex = ByteReader.uint64(bytes, at: 0)
        digest = ByteReader.uint64(bytes, at: 8)
        commandCount = ByteReader.uint64(bytes, at: 16)
        var offset = 24
        while offset + 9 <= bytes.count {
            registers[bytes[offset]] = ByteReader.uint64(bytes, at: offset + 1)
            offset += 9
        }
    }
}
