/// A MessagePack value (https://github.com/msgpack/msgpack/blob/master/spec.md): what engines'
/// KV-cache events are encoded in (Python's msgspec).
public enum MsgPackValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// Every integer from 0 up (positive fixint, uint 8/16/32/64).
    case unsigned(UInt64)
    /// Negative integers (negative fixint, int 8/16/32/64 below zero).
    case signed(Int64)
    case float(Double)
    case string(String)
    case binary([UInt8])
    case array([MsgPackValue])
    /// Key–value pairs in the order they were encoded.
    case map([(MsgPackValue, MsgPackValue)])
    case ext(type: Int8, data: [UInt8])

    public static func == (lhs: MsgPackValue, rhs: MsgPackValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.unsigned(let a), .unsigned(let b)): a == b
        case (.signed(let a), .signed(let b)): a == b
        case (.float(let a), .float(let b)): a.bitPattern == b.bitPattern
        case (.string(let a), .string(let b)): a == b
        case (.binary(let a), .binary(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.map(let a), .map(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.ext(let t1, let d1), .ext(let t2, let d2)): t1 == t2 && d1 == d2
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0)
        case .bool(let value): hasher.combine(value)
        case .unsigned(let value): hasher.combine(value)
        case .signed(let value): hasher.combine(value)
        case .float(let value): hasher.combine(value.bitPattern)
        case .string(let value): hasher.combine(value)
        case .binary(let value): hasher.combine(value)
        case .array(let value): hasher.combine(value)
        case .map(let pairs):
            hasher.combine(pairs.count)
            for (key, value) in pairs {
                hasher.combine(key)
                hasher.combine(value)
            }
        case .ext(let type, let data):
            hasher.combine(type)
            hasher.combine(data)
        }
    }

    /// The value of `key` in a map with string keys.
    public subscript(key: String) -> MsgPackValue? {
        guard case .map(let pairs) = self else { return nil }
        return pairs.first { $0.0 == .string(key) }?.1
    }

    public var integer: Int64? {
        switch self {
        case .unsigned(let value): value <= UInt64(Int64.max) ? Int64(value) : nil
        case .signed(let value): value
        default: nil
        }
    }

    public var text: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var elements: [MsgPackValue]? {
        if case .array(let value) = self { return value }
        return nil
    }
}

public struct MsgPackError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Decodes MessagePack from untrusted bytes: every length is checked against the bytes that
/// are left (so a forged length cannot allocate), nesting is bounded, strings must be UTF-8,
/// and the whole input must be one value.
public struct MsgPackDecoder {
    public static let maxDepth = 32

    private let bytes: [UInt8]
    private var offset = 0

    public static func decode(_ bytes: [UInt8]) throws(MsgPackError) -> MsgPackValue {
        var decoder = MsgPackDecoder(bytes: bytes)
        let value = try decoder.value(depth: 0)
        guard decoder.offset == bytes.count else { throw MsgPackError("\(bytes.count - decoder.offset) bytes after the value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func byte() throws(MsgPackError) -> UInt8 {
        guard offset < bytes.count else { throw MsgPackError("truncated at byte \(offset)") }
        defer { offset += 1 }
        return bytes[offset]
    }

    private mutating func take(_ count: Int) throws(MsgPackError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count - offset else { throw MsgPackError("a length of \(count) runs past the end (\(bytes.count - offset) bytes left)") }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    private mutating func unsigned(_ width: Int) throws(MsgPackError) -> UInt64 {
        var value: UInt64 = 0
        for byte in try take(width) { value = value << 8 | UInt64(byte) }
        return value
    }

    /// A count of items each at least one byte long: it cannot exceed what is left.
    private mutating func count(_ width: Int, perItem: Int) throws(MsgPackError) -> Int {
        let count = try unsigned(width)
        guard count <= UInt64(bytes.count - offset) / UInt64(perItem) else {
            throw MsgPackError("a count of \(count) cannot fit the \(bytes.count - offset) bytes left")
        }
        return Int(count)
    }

    private mutating func string(_ length: Int) throws(MsgPackError) -> MsgPackValue {
        let raw = try take(length)
        guard let text = String(validating: raw, as: UTF8.self) else { throw MsgPackError("a string is not UTF-8") }
        return .string(text)
    }

    private mutating func value(depth: Int) throws(MsgPackError) -> MsgPackValue {
        guard depth <= Self.maxDepth else { throw MsgPackError("nested deeper than \(Self.maxDepth)") }
        let lead = try byte()
        switch lead {
        case 0x00...0x7f: return .unsigned(UInt64(lead))
        case 0x80...0x8f: return try map(Int(lead & 0x0f), depth: depth)
        case 0x90...0x9f: return try array(Int(lead & 0x0f), depth: depth)
        case 0xa0...0xbf: return try string(Int(lead & 0x1f))
        case 0xc0: return .null
        case 0xc2: return .bool(false)
        case 0xc3: return .bool(true)
        case 0xc4, 0xc5, 0xc6:
            let length = Int(try unsigned(1 << Int(lead - 0xc4)))
            return .binary(Array(try take(length)))
        case 0xc7, 0xc8, 0xc9:
            let length = Int(try unsigned(1 << Int(lead - 0xc7)))
            let type = Int8(bitPattern: try byte())
            return .ext(type: type, data: Array(try take(length)))
        case 0xca: return .float(Double(Float(bitPattern: UInt32(try unsigned(4)))))
        case 0xcb: return .float(Double(bitPattern: try unsigned(8)))
        case 0xcc, 0xcd, 0xce, 0xcf: return .unsigned(try unsigned(1 << Int(lead - 0xcc)))
        case 0xd0: return Self.signed(Int64(Int8(bitPattern: UInt8(try unsigned(1)))))
        case 0xd1: return Self.signed(Int64(Int16(bitPattern: UInt16(try unsigned(2)))))
        case 0xd2: return Self.signed(Int64(Int32(bitPattern: UInt32(try unsigned(4)))))
        case 0xd3: return Self.signed(Int64(bitPattern: try unsigned(8)))
        case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
            let type = Int8(bitPattern: try byte())
            return .ext(type: type, data: Array(try take(1 << Int(lead - 0xd4))))
        case 0xd9, 0xda, 0xdb: return try string(Int(try unsigned(1 << Int(lead - 0xd9))))
        case 0xdc: return try array(try count(2, perItem: 1), depth: depth)
        case 0xdd: return try array(try count(4, perItem: 1), depth: depth)
        case 0xde: return try map(try count(2, perItem: 2), depth: depth)
        case 0xdf: return try map(try count(4, perItem: 2), depth: depth)
        case 0xe0...0xff: return .signed(Int64(Int8(bitPattern: lead)))
        default: throw MsgPackError("0x\(String(lead, radix: 16)) is not a MessagePack type")
        }
    }

    /// Non-negative values decode as `.unsigned`, whatever their encoding.
    private static func signed(_ value: Int64) -> MsgPackValue {
        value >= 0 ? .unsigned(UInt64(value)) : .signed(value)
    }

    private mutating func array(_ count: Int, depth: Int) throws(MsgPackError) -> MsgPackValue {
        var items: [MsgPackValue] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(try value(depth: depth + 1)) }
        return .array(items)
    }

    private mutating func map(_ count: Int, depth: Int) throws(MsgPackError) -> MsgPackValue {
        var pairs: [(MsgPackValue, MsgPackValue)] = []
        pairs.reserveCapacity(count)
        for _ in 0..<count {
            let key = try value(depth: depth + 1)
            pairs.append((key, try value(depth: depth + 1)))
        }
        return .map(pairs)
    }
}

/// Encodes MessagePack in the smallest form for each value, as msgspec does.
public enum MsgPackEncoder {
    public static func encode(_ value: MsgPackValue) -> [UInt8] {
        var out: [UInt8] = []
        encode(value, into: &out)
        return out
    }

    public static func encode(_ value: MsgPackValue, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(0xc0)
        case .bool(let flag): out.append(flag ? 0xc3 : 0xc2)
        case .unsigned(let number):
            switch number {
            case 0...0x7f: out.append(UInt8(number))
            case 0x80...0xff: out += [0xcc, UInt8(number)]
            case 0x100...0xffff: out.append(0xcd); append(number, width: 2, to: &out)
            case 0x1_0000...0xffff_ffff: out.append(0xce); append(number, width: 4, to: &out)
            default: out.append(0xcf); append(number, width: 8, to: &out)
            }
        case .signed(let number) where number >= 0:
            encode(.unsigned(UInt64(number)), into: &out)
        case .signed(let number):
            let bits = UInt64(bitPattern: number)
            switch number {
            case -32 ..< 0: out.append(UInt8(truncatingIfNeeded: number))
            case Int64(Int8.min) ..< -32: out += [0xd0, UInt8(truncatingIfNeeded: number)]
            case Int64(Int16.min) ..< Int64(Int8.min): out.append(0xd1); append(bits, width: 2, to: &out)
            case Int64(Int32.min) ..< Int64(Int16.min): out.append(0xd2); append(bits, width: 4, to: &out)
            default: out.append(0xd3); append(bits, width: 8, to: &out)
            }
        case .float(let number):
            out.append(0xcb)
            append(number.bitPattern, width: 8, to: &out)
        case .string(let text):
            let count = text.utf8.count
            switch count {
            case 0...31: out.append(0xa0 | UInt8(count))
            case 32...0xff: out += [0xd9, UInt8(count)]
            case 0x100...0xffff: out.append(0xda); append(UInt64(count), width: 2, to: &out)
            default: out.append(0xdb); append(UInt64(count), width: 4, to: &out)
            }
            out += text.utf8
        case .binary(let data):
            switch data.count {
            case 0...0xff: out += [0xc4, UInt8(data.count)]
            case 0x100...0xffff: out.append(0xc5); append(UInt64(data.count), width: 2, to: &out)
            default: out.append(0xc6); append(UInt64(data.count), width: 4, to: &out)
            }
            out += data
        case .array(let items):
            header(items.count, fix: 0x90, wide: 0xdc, to: &out)
            for item in items { encode(item, into: &out) }
        case .map(let pairs):
            header(pairs.count, fix: 0x80, wide: 0xde, to: &out)
            for (key, item) in pairs {
                encode(key, into: &out)
                encode(item, into: &out)
            }
        case .ext(let type, let data):
            switch data.count {
            case 1: out.append(0xd4)
            case 2: out.append(0xd5)
            case 4: out.append(0xd6)
            case 8: out.append(0xd7)
            case 16: out.append(0xd8)
            case 0...0xff: out += [0xc7, UInt8(data.count)]
            case 0x100...0xffff: out.append(0xc8); append(UInt64(data.count), width: 2, to: &out)
            default: out.append(0xc9); append(UInt64(data.count), width: 4, to: &out)
            }
            out.append(UInt8(bitPattern: type))
            out += data
        }
    }

    private static func header(_ count: Int, fix: UInt8, wide: UInt8, to out: inout [UInt8]) {
        switch count {
        case 0...15: out.append(fix | UInt8(count))
        case 16...0xffff: out.append(wide); append(UInt64(count), width: 2, to: &out)
        default: out.append(wide + 1); append(UInt64(count), width: 4, to: &out)
        }
    }

    private static func append(_ value: UInt64, width: Int, to out: inout [UInt8]) {
        for shift in stride(from: (width - 1) * 8, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }
}
