import Raft
import RaftTransport
import WireCoding

/// What a Raft snapshot's data holds: the replicated address book, then the state machine's
/// own snapshot. Version byte first, so a newer format is recognised rather than misread.
enum SnapshotEnvelope {
    static let version: UInt8 = 1

    static func encode(addresses: [NodeID: PeerAddress], state: [UInt8]) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(version)
        writer.write(addresses.keys.sorted()) { writer, id in
            writer.write(id)
            writer.write(addresses[id]!.description)
        }
        writer.write(bytes: state)
        return writer.bytes
    }

    static func decode(_ data: [UInt8]) throws -> (addresses: [NodeID: PeerAddress], state: [UInt8]) {
        var reader = ByteReader(data)
        let found = try reader.readByte()
        guard found == version else { throw DecodingError("snapshot envelope version \(found) is not supported (this build reads \(version))") }
        var book: [NodeID: PeerAddress] = [:]
        for (id, text) in try reader.readArray(minimumBytes: 2, { reader throws(DecodingError) in
            (try reader.readUInt64(), try reader.readString())
        }) {
            guard let address = PeerAddress(text) else { throw DecodingError("bad peer address '\(text)'") }
            book[id] = address
        }
        let state = try reader.readBytes()
        try reader.expectEnd()
        return (book, state)
    }
}

/// The first byte of every normal entry's data: whose entry it is.
enum LogEntryTag: UInt8 {
    case application = 0
    case memberAddress = 1
}

/// How application commands sit in the Raft log, for tools that read a node's log directly.
public enum ClusterLog {
    /// The application command a normal entry carries, or nil for the cluster's own entries
    /// (member addresses) and empty ones (a new leader's first entry).
    public static func applicationCommand(_ data: [UInt8]) -> [UInt8]? {
        guard data.first == LogEntryTag.application.rawValue else { return nil }
        return Array(data.dropFirst())
    }

    /// A `memberAddress` entry's payload (after the tag).
    static func memberAddress(_ member: NodeID, _ address: PeerAddress) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(member)
        writer.write(address.description)
        return writer.bytes
    }

    static func decodeMemberAddress(_ payload: [UInt8]) -> (NodeID, PeerAddress)? {
        var reader = ByteReader(payload)
        guard let member = try? reader.readUInt64(), let text = try? reader.readString(), let address = PeerAddress(text) else { return nil }
        return (member, address)
    }
}
