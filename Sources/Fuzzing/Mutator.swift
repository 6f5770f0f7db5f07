import Balancer
import WireCoding

/// Seeded structure-blind mutations of byte strings, in the manner of libFuzzer's default
/// mutators: bit flips, interesting values, inserted, erased, duplicated and spliced ranges, and
/// counts and lengths overwritten with boundary values (as 4- and 8-byte fields and as the
/// varints Fulcrum's own encoding uses). The same seed gives the same inputs.
public struct Mutator: Sendable {
    private var generator: SeededGenerator
    /// Inputs never grow beyond this, so a mutation cannot allocate without bound by itself.
    public let maxLength: Int

    public init(seed: UInt64, maxLength: Int = 1 << 16) {
        generator = SeededGenerator(seed: seed)
        self.maxLength = maxLength
    }

    public mutating func next() -> UInt64 { generator.next() }

    /// Uniform in 0..<bound (bound > 0).
    public mutating func below(_ bound: Int) -> Int { generator.below(bound) }

    static let interestingBytes: [UInt8] = [0, 1, 0x7F, 0x80, 0xFF, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0xC0, 0xED]
    static let interestingWords: [UInt64] = [
        0, 1, 2, 0x7F, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x1_0000_0000,
        0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, UInt64.max, UInt64.max - 1,
    ]

    /// One to four stacked mutations of `input`, sometimes spliced with `other`.
    public mutating func mutate(_ input: [UInt8], other: [UInt8]? = nil) -> [UInt8] {
        var bytes = input
        for _ in 0...below(4) { mutateOnce(&bytes, other: other) }
        if bytes.count > maxLength { bytes.removeSubrange(maxLength...) }
        return bytes
    }

    private mutating func mutateOnce(_ bytes: inout [UInt8], other: [UInt8]?) {
        if bytes.isEmpty {
            bytes = (0...below(16)).map { _ in UInt8(truncatingIfNeeded: next()) }
            return
        }
        switch below(12) {
        case 0:  // flip a bit
            let at = below(bytes.count)
            bytes[at] ^= 1 << UInt8(below(8))
        case 1:  // a random byte
            bytes[below(bytes.count)] = UInt8(truncatingIfNeeded: next())
        case 2:  // an interesting byte
            bytes[below(bytes.count)] = Self.interestingBytes[below(Self.interestingBytes.count)]
        case 3:  // a boundary value over an 8-byte big-endian field (counts, lengths, indexes)
            let at = below(bytes.count)
            let word = Self.interestingWords[below(Self.interestingWords.count)]
            for offset in 0..<min(8, bytes.count - at) {
                bytes[at + offset] = UInt8(truncatingIfNeeded: word >> UInt64(8 * (7 - offset)))
            }
        case 4:  // the same, as a 4-byte field
            let at = below(bytes.count)
            let word = UInt32(truncatingIfNeeded: Self.interestingWords[below(Self.interestingWords.count)])
            for offset in 0..<min(4, bytes.count - at) {
                bytes[at + offset] = UInt8(truncatingIfNeeded: word >> UInt32(8 * (3 - offset)))
            }
        case 10:  // a boundary value as a varint (the log's and snapshots' integer encoding)
            let at = below(bytes.count)
            var varint = ByteWriter()
            varint.write(Self.interestingWords[below(Self.interestingWords.count)])
            bytes.replaceSubrange(at..<min(bytes.count, at + varint.bytes.count), with: varint.bytes)
        case 5:  // erase a range
            let at = below(bytes.count)
            bytes.removeSubrange(at..<min(bytes.count, at + 1 + below(16)))
        case 6:  // insert random bytes
            let at = below(bytes.count + 1)
            bytes.insert(contentsOf: (0...below(16)).map { _ in UInt8(truncatingIfNeeded: next()) }, at: at)
        case 7:  // duplicate a range
            let at = below(bytes.count)
            let range = at..<min(bytes.count, at + 1 + below(64))
            bytes.insert(contentsOf: bytes[range], at: below(bytes.count + 1))
        case 8:  // truncate
            bytes.removeSubrange(below(bytes.count)...)
        case 9 where other.map { !$0.isEmpty } ?? false:  // splice: a prefix of this input, a suffix of another
            let other = other!
            bytes = Array(bytes[..<below(bytes.count)]) + Array(other[below(other.count)...])
        default:  // swap two bytes
            bytes.swapAt(below(bytes.count), below(bytes.count))
        }
    }
}
