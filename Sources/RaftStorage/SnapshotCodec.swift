import Raft
import RaftCoding
package import WireCoding

/// How a snapshot's parts are stored: the configuration as a small binary record, the data
/// LZ4-compressed behind a header that names its format, size and checksum.
package enum SnapshotCodec {
    static let formatVersion: UInt8 = 1

    static func encode(_ conf: ConfState) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.write(conf)
        return writer.bytes
    }

    static func decodeConf(_ bytes: [UInt8]) throws(DecodingError) -> ConfState {
        var reader = ByteReader(bytes)
        let version = try reader.readByte()
        guard version == 1 else { throw DecodingError("configuration record version \(version)") }
        let conf = try reader.readConfState()
        try reader.expectEnd()
        return conf
    }

    /// `[format][raw size][checksum of raw data][LZ4 block]`.
    package static func compress(_ data: [UInt8]) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(formatVersion)
        writer.write(UInt64(data.count))
        writer.write(checksum(data))
        var bytes = writer.bytes
        bytes += LZ4.compress(data)
        return bytes
    }

    package static func decompress(_ stored: [UInt8]) throws(DecodingError) -> [UInt8] {
        var reader = ByteReader(stored)
        let format = try reader.readByte()
        guard format == formatVersion else { throw DecodingError("snapshot format \(format) is not \(formatVersion)") }
        let size = try reader.readUInt64()
        let expected = try reader.readUInt64()
        // LZ4 expands at most 255-fold: a larger claimed size is corrupt, and must not be
        // allocated before the block is even read.
        let block = stored.count - reader.offset
        guard size <= UInt64(Int32.max), size <= UInt64(block) * 255 + 16 else {
            throw DecodingError("snapshot size \(size) is implausible for a \(block)-byte block")
        }
        guard let data = LZ4.decompress(Array(stored[reader.offset...]), size: Int(size)) else {
            throw DecodingError("LZ4 block does not decompress to \(size) bytes")
        }
        guard checksum(data) == expected else { throw DecodingError("snapshot checksum mismatch") }
        return data
    }

    static func checksum(_ data: [UInt8]) -> UInt64 {
        var hasher = StableHasher()
        hasher.combine(bytes: data)
        return hasher.finalized
    }
}
