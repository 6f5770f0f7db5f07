import Foundation
public import Raft
import RaftStorage
public import RaftTransport
public import WireCoding

/// A node's state in one file: what `fulcrumctl snapshot save` writes and `fulcrum restore`
/// and `fulcrum recover` read. The data is the runtime's snapshot payload (replicated peer
/// addresses and the state machine's snapshot); a checksum guards the whole file.
public struct SnapshotArchive: Sendable, Equatable {
    public static let magic = Array("FULCRUM-SNAPSHOT".utf8)
    public static let version: UInt8 = 1

    public var clusterID: String
    public var index: LogIndex
    public var term: Term
    public var data: [UInt8]

    public init(clusterID: String, index: LogIndex, term: Term, data: [UInt8]) {
        self.clusterID = clusterID
        self.index = index
        self.term = term
        self.data = data
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(clusterID)
        writer.write(index)
        writer.write(term)
        writer.write(bytes: data)
        var hasher = StableHasher()
        hasher.combine(bytes: writer.bytes)
        var trailer = ByteWriter()
        trailer.write(hasher.finalized)
        return Self.magic + [Self.version] + writer.bytes + trailer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        guard bytes.count > Self.magic.count + 1, Array(bytes.prefix(Self.magic.count)) == Self.magic else {
            throw DecodingError("not a Fulcrum snapshot file")
        }
        let version = bytes[Self.magic.count]
        guard version == Self.version else { throw DecodingError("snapshot file version \(version) is not supported (this build reads \(Self.version))") }
        var reader = ByteReader(Array(bytes.dropFirst(Self.magic.count + 1)))
        clusterID = try reader.readString()
        index = try reader.readUInt64()
        term = try reader.readUInt64()
        data = try reader.readBytes()
        let body = Array(bytes.dropFirst(Self.magic.count + 1).prefix(bytes.count - Self.magic.count - 1 - reader.remaining))
        let checksum = try reader.readUInt64()
        try reader.expectEnd()
        var hasher = StableHasher()
        hasher.combine(bytes: body)
        guard hasher.finalized == checksum else { throw DecodingError("snapshot file checksum mismatch: the file is damaged") }
    }
}

extension ClusterNode {
    /// A fresh snapshot of this node's state as an archive (for `snapshot save`).
    public func archive() throws -> SnapshotArchive {
        _ = try snapshotNow()
        let snapshot = try storage.load().snapshot
        return SnapshotArchive(clusterID: settings.clusterID, index: snapshot.metadata.index, term: snapshot.metadata.term, data: snapshot.data)
    }

    /// Everything a stopped node's data directory holds as one archive: its snapshot with every
    /// entry of its log applied after it — committed or not, as etcd's `--force-new-cluster`
    /// does, since a lost majority can no longer say which were.
    public static func archive(dataDirectory: String, clusterID: String, machine: Machine) throws -> SnapshotArchive {
        let storage = try RaftDatabase(path: dataDirectory + "/raft.sqlite", clusterID: clusterID)
        let persisted = try storage.load()
        var machine = machine
        var book = AddressBook(configured: [:])
        if persisted.snapshot.metadata.index > 0 {
            try restore(persisted.snapshot, into: &machine, addresses: &book)
        }
        var term = persisted.snapshot.metadata.term
        for entry in persisted.entries {
            term = entry.term
            guard entry.kind == .normal, let first = entry.data.first else { continue }
            let payload = Array(entry.data.dropFirst())
            switch Tag(rawValue: first) {
            case .application:
                _ = machine.apply(payload, at: entry.index)
            case .memberAddress:
                if let (member, address) = ClusterLog.decodeMemberAddress(payload) {
                    book.learn(member, at: address)
                }
            case nil:
                continue
            }
        }
        let lastIndex = persisted.snapshot.metadata.index + LogIndex(persisted.entries.count)
        return SnapshotArchive(clusterID: clusterID, index: lastIndex, term: term, data: SnapshotEnvelope.encode(addresses: book.replicated, state: machine.snapshot()))
    }

    /// Writes a new data directory that starts from `archive` as a one-member cluster: node
    /// `nodeID`, reachable at `address`. `fulcrum serve` on it then leads at once; add members
    /// as learners and promote them. The directory must not hold a log already.
    public static func seed(
        dataDirectory: String, clusterID: String, nodeID: NodeID, address: PeerAddress, from archive: SnapshotArchive
    ) throws {
        guard nodeID > 0 else { throw ClusterError(.rejected, "the node id must be positive") }
        guard archive.index > 0 else { throw ClusterError(.rejected, "the snapshot is empty (index 0)") }
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let storage = try RaftDatabase(path: dataDirectory + "/raft.sqlite", clusterID: clusterID)
        guard try storage.isEmpty() else {
            throw ClusterError(.rejected, "\(dataDirectory) already holds a Raft log; restore into an empty directory")
        }
        // The old members' addresses must not linger: this node is the whole membership.
        let (_, state) = try SnapshotEnvelope.decode(archive.data)
        let data = SnapshotEnvelope.encode(addresses: [nodeID: address], state: state)
        try storage.setMetadata("node_id", String(nodeID))
        try storage.initialize(with: PersistentState(
            hardState: HardState(term: archive.term, vote: .none, commit: archive.index),
            snapshot: Snapshot(metadata: SnapshotMetadata(index: archive.index, term: archive.term, confState: ConfState(voters: [nodeID])), data: data),
            entries: []
        ))
    }

    /// Disaster recovery on a survivor of a lost majority: archives its data directory (every
    /// entry it holds), moves the old database aside and seeds a one-member cluster from the
    /// archive, keeping the node's id. Returns the archive and where the old database went.
    public static func forceNewCluster(
        dataDirectory: String, clusterID: String, address: PeerAddress, machine: Machine
    ) throws -> (archive: SnapshotArchive, nodeID: NodeID, backup: String) {
        let path = dataDirectory + "/raft.sqlite"
        guard FileManager.default.fileExists(atPath: path) else { throw ClusterError(.rejected, "no Raft database at \(path)") }
        let nodeID: NodeID
        do {
            let storage = try RaftDatabase(path: path, clusterID: clusterID)
            guard let stored = try storage.metadata("node_id").flatMap(UInt64.init) else {
                throw ClusterError(.rejected, "\(path) records no node id")
            }
            nodeID = stored
        }
        let archive = try archive(dataDirectory: dataDirectory, clusterID: clusterID, machine: machine)
        let stamp = Int(Date().timeIntervalSince1970)
        let backup = dataDirectory + "/before-recovery-\(stamp)"
        try FileManager.default.createDirectory(atPath: backup, withIntermediateDirectories: true)
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            try FileManager.default.moveItem(atPath: path + suffix, toPath: backup + "/raft.sqlite" + suffix)
        }
        try seed(dataDirectory: dataDirectory, clusterID: clusterID, nodeID: nodeID, address: address, from: archive)
        return (archive, nodeID, backup)
    }
}
