/// Appends values to a byte buffer in Fulcrum's compact binary encoding: unsigned integers as
/// LEB128 varints, doubles as their IEEE-754 bits (little-endian), strings and byte arrays with
/// a varint length prefix. Used for replicated commands and snapshots, where the same state
/// must always encode to the same bytes.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func write(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    public mutating func write(_ value: Int) { write(UInt64(bitPattern: Int64(value))) }
    public mutating func write(_ value: UInt8) { bytes.append(value) }
    public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }

    public mutating func write(_ value: Double) {
        var bits = value.bitPattern
        for _ in 0..<8 {
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bits >>= 8
        }
    }

    public mutating func write(_ value: String) {
        let utf8 = Array(value.utf8)
        write(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// Bytes with a length prefix.
    public mutating func write(bytes: [UInt8]) {
        write(UInt64(bytes.count))
        self.bytes.append(contentsOf: bytes)
    }

    public mutating func write(_ values: [UInt64]) {
        write(UInt64(values.count))
        for value in values { write(value) }
    }

    public mutating func write<Value>(_ values: [Value], each: (inout ByteWriter, Value) -> Void) {
        write(UInt64(values.count))
        for value in values { each(&self, value) }
    }

    public mutating func write<Value>(optional value: Value?, each: (inout ByteWriter, Value) -> Void) {
        if let value {
            write(true)
            each(&self, value)
        } else {
            write(false)
        }
    }
}

/// Why bytes could not be decoded: truncated, malformed or from a newer version.
public struct DecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "malformed encoding: \(message)" }
}

/// Reads what ``ByteWriter`` wrote. Every read checks bounds; lengths are checked against the
/// bytes that remain, so hostile input can neither trap nor make the reader allocate much.
public struct ByteReader: Sendable {
    private let bytes: [UInt8]
    public private(set) var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { offset == bytes.count }
    public var remaining: Int { bytes.count - offset }

    public mutating func readUInt64() throws(DecodingError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < bytes.count else { throw DecodingError("varint runs past the end at byte \(offset)") }
            let byte = bytes[offset]
            offset += 1
            guard shift < 64, shift < 63 || byte <= 1 else { throw DecodingError("varint too long at byte \(offset)") }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    public mutating func readInt() throws(DecodingError) -> Int {
        Int(Int64(bitPattern: try readUInt64()))
    }

    /// A count of items that each take at least `minimumBytes`; refuses counts the input cannot hold.
    public mutating func readCount(minimumBytes: Int = 1) throws(DecodingError) -> Int {
        let count = try readUInt64()
        guard count <= UInt64(remaining / max(minimumBytes, 1)) else {
            throw DecodingError("count \(count) exceeds the \(remaining) bytes left")
        }
        return Int(count)
    }

    public mutating func readByte() throws(DecodingError) -> UInt8 {
        guard offset < bytes.count else { throw DecodingError("unexpected end at byte \(offset)") }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func readBool() throws(DecodingError) -> Bool {
        switch try readByte() {
        case 0: return false
        case 1: return true
        case let other: throw DecodingError("invalid boolean \(other) at byte \(offset - 1)")
        }
    }

    public mutating func readDouble() throws(DecodingError) -> Double {
        guard remaining >= 8 else { throw DecodingError("double runs past the end at byte \(offset)") }
        var bits: UInt64 = 0
        for position in 0..<8 { bits |= UInt64(bytes[offset + position]) << (8 * UInt64(position)) }
        offset += 8
        // Nothing Fulcrum writes is NaN or infinite; such a value can only be corruption, and
        // would poison every comparison the router makes with it.
        let value = Double(bitPattern: bits)
        guard value.isFinite else { throw DecodingError("non-finite double at byte \(offset - 8)") }
        return value
    }

    public mutating func readString() throws(DecodingError) -> String {
        let count = try readCount()
        let slice = bytes[offset..<(offset + count)]
        offset += count
        guard let string = String(validating: slice, as: UTF8.self) else {
            throw DecodingError("invalid UTF-8 in a string ending at byte \(offset)")
        }
        return string
    }

    /// Bytes written by ``ByteWriter/write(bytes:)``.
    public mutating func readBytes() throws(DecodingError) -> [UInt8] {
        let count = try readCount()
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    public mutating func readUInt64Array() throws(DecodingError) -> [UInt64] {
        let count = try readCount()
        var values: [UInt64] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try readUInt64()) }
        return values
    }

    public mutating func readArray<Value>(
        minimumBytes: Int = 1, _ each: (inout ByteReader) throws(DecodingError) -> Value
    ) throws(DecodingError) -> [Value] {
        let count = try readCount(minimumBytes: minimumBytes)
        var values: [Value] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try each(&self)) }
        return values
    }

    public mutating func readOptional<Value>(
        _ each: (inout ByteReader) throws(DecodingError) -> Value
    ) throws(DecodingError) -> Value? {
        try readBool() ? try each(&self) : nil
    }

    public mutating func expectEnd() throws(DecodingError) {
        guard isAtEnd else { throw DecodingError("\(remaining) unexpected trailing bytes") }
    }
}

/// FNV-1a over bytes followed by a 64-bit finalizer: a stable, platform-independent hash for
/// state fingerprints and block hashing (not for security).
public struct StableHasher: Sendable {
    public private(set) var state: UInt64 = 0xCBF2_9CE4_8422_2325

    public init(seed: UInt64 = 0) { state ^= seed &* 0x9E37_79B9_7F4A_7C15 }

    @inline(__always)
    public mutating func combine(byte: UInt8) {
        state = (state ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
    }

    public mutating func combine<Bytes: Sequence<UInt8>>(bytes: Bytes) {
        for byte in bytes { combine(byte: byte) }
    }

    /// Mixes a whole 64-bit word at once (faster than byte by byte for token ids and hashes).
    @inline(__always)
    public mutating func combine(_ word: UInt64) {
        state = Self.mix(state ^ word)
    }

    public var finalized: UInt64 { Self.mix(state) }

    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
