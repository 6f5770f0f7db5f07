import Foundation
import GRDB
public import Raft
import WireCoding

/// A node's Raft log, hard state and latest snapshot in one SQLite database (WAL mode,
/// `synchronous=FULL` by default).
///
/// Each ``persist(entries:hardState:snapshot:)`` is one transaction, so a `Ready` batch is
/// durable as a whole or not at all (group commit), and a snapshot replaces the previous one and
/// the entries it covers atomically: a crash at any point leaves either the old or the new one.
public final class RaftDatabase: Sendable {
    /// The schema this build writes; it opens this one and refuses newer ones.
    public static let schemaVersion = 1

    public struct Options: Sendable {
        /// `FULL` fsyncs every commit (Raft's requirement before acknowledging); `NORMAL` is
        /// faster and loses the latest transactions on power loss — for tests and benchmarks.
        public enum Durability: String, Sendable { case full = "FULL", normal = "NORMAL" }
        public var durability: Durability = .full

        public init(durability: Durability = .full) { self.durability = durability }
    }

    public let path: String
    public let clusterID: String
    private let queue: DatabaseQueue

    /// Opens (or creates) the database at `path` for `clusterID`. A database of another
    /// cluster, of a newer schema, or that SQLite cannot read throws an error naming the file.
    public init(path: String, clusterID: String, options: Options = Options()) throws(StorageError) {
        self.path = path
        self.clusterID = clusterID
        var configuration = Configuration()
        configuration.label = "raft"
        let durability = options.durability
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue)")
        }
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw Self.storageError(error, path: path)
        }
        try migrate()
    }

    // MARK: Schema

    private func migrate() throws(StorageError) {
        let path = self.path
        let clusterID = self.clusterID
        try run { db in
            let hasMeta = try db.tableExists("meta")
            if !hasMeta {
                guard try db.tableExists("entries") == false else {
                    throw StorageError(.corrupt, path: path, "has Raft tables but no meta table")
                }
                try db.execute(sql: """
                    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
                    CREATE TABLE hard_state (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        term INTEGER NOT NULL, vote INTEGER NOT NULL, commit_index INTEGER NOT NULL);
                    CREATE TABLE entries (
                        log_index INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL,
                        data BLOB NOT NULL);
                    CREATE TABLE snapshot (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        log_index INTEGER NOT NULL, term INTEGER NOT NULL, conf BLOB NOT NULL,
                        data BLOB NOT NULL);
                    """)
                try db.execute(
                    sql: "INSERT INTO meta (key, value) VALUES ('schema_version', ?), ('cluster_id', ?)",
                    arguments: [String(Self.schemaVersion), clusterID]
                )
                return
            }
            let version = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'schema_version'")
            guard let version, let number = Int(version) else {
                throw StorageError(.corrupt, path: path, "no readable schema version")
            }
            guard number <= Self.schemaVersion else {
                throw StorageError(
                    .futureSchema, path: path,
                    "schema version \(number) is newer than this build's \(Self.schemaVersion); upgrade Fulcrum"
                )
            }
            let stored = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'cluster_id'")
            guard stored == clusterID else {
                throw StorageError(
                    .foreignCluster, path: path,
                    "belongs to cluster '\(stored ?? "?")', not '\(clusterID)'"
                )
            }
        }
    }

    // MARK: Metadata

    /// A value kept beside the log (the node's own id, for example).
    public func metadata(_ key: String) throws(StorageError) -> String? {
        try read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key]) }
    }

    public func setMetadata(_ key: String, _ value: String) throws(StorageError) {
        try run { db in
            try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", arguments: [key, value])
        }
    }

    // MARK: Reading

    /// Everything a node needs to restart: hard state, latest snapshot, the entries after it.
    /// Checks the snapshot's checksum and that the entries are contiguous and consistent.
    public func load() throws(StorageError) -> PersistentState {
        let path = self.path
        return try read { db in
            let hard = try Row.fetchOne(db, sql: "SELECT term, vote, commit_index FROM hard_state WHERE id = 1")
            let hardState = hard.map {
                HardState(term: UInt64(bitPattern: $0[0]), vote: UInt64(bitPattern: $0[1]), commit: UInt64(bitPattern: $0[2]))
            } ?? HardState()
            var snapshot = Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, confState: ConfState()), data: [])
            if let row = try Row.fetchOne(db, sql: "SELECT log_index, term, conf, data FROM snapshot WHERE id = 1") {
                let conf = [UInt8](row[2] as Data? ?? Data())
                let stored = [UInt8](row[3] as Data? ?? Data())
                do {
                    snapshot = Snapshot(
                        metadata: SnapshotMetadata(
                            index: UInt64(bitPattern: row[0]), term: UInt64(bitPattern: row[1]),
                            confState: try SnapshotCodec.decodeConf(conf)
                        ),
                        data: try SnapshotCodec.decompress(stored)
                    )
                } catch let error as DecodingError {
                    throw StorageError(.corrupt, path: path, "snapshot at index \(UInt64(bitPattern: row[0])): \(error.message)")
                }
            }
            var entries: [Entry] = []
            var expected = snapshot.metadata.index + 1
            let cursor = try Row.fetchCursor(db, sql: "SELECT log_index, term, kind, data FROM entries ORDER BY log_index")
            while let row = try cursor.next() {
                let index = UInt64(bitPattern: row[0])
                if index <= snapshot.metadata.index { continue }
                guard index == expected else {
                    throw StorageError(.corrupt, path: path, "log has a gap: expected index \(expected), found \(index)")
                }
                let rawKind: Int64 = row[2]
                guard let kind = EntryKind(rawValue: UInt8(truncatingIfNeeded: rawKind)), rawKind >= 0, rawKind <= 255 else {
                    throw StorageError(.corrupt, path: path, "entry \(index) has unknown kind \(rawKind)")
                }
                let data = [UInt8](row[3] as Data? ?? Data())
                entries.append(Entry(term: UInt64(bitPattern: row[1]), index: index, kind: kind, data: data))
                expected += 1
            }
            let lastIndex = snapshot.metadata.index + UInt64(entries.count)
            guard hardState.commit <= lastIndex else {
                throw StorageError(.corrupt, path: path, "commit index \(hardState.commit) is past the last entry \(lastIndex)")
            }
            return PersistentState(hardState: hardState, snapshot: snapshot, entries: entries)
        }
    }

    /// Whether nothing was ever persisted (a fresh node).
    public func isEmpty() throws(StorageError) -> Bool {
        try read { db in
            try Int.fetchOne(db, sql: """
                SELECT (SELECT COUNT(*) FROM entries) + (SELECT COUNT(*) FROM hard_state) + (SELECT COUNT(*) FROM snapshot)
                """) == 0
        }
    }

    // MARK: Writing

    /// Writes a node's starting state (e.g. ``PersistentState/bootstrap(_:)``) into an empty database.
    public func initialize(with state: PersistentState) throws(StorageError) {
        guard try isEmpty() else {
            throw StorageError(.invalidOperation, path: path, "already holds a Raft log; refusing to initialize it again")
        }
        try persist(
            entries: state.entries, hardState: state.hardState,
            snapshot: state.snapshot.metadata.index > 0 ? state.snapshot : nil
        )
    }

    /// Makes a `Ready` batch's snapshot, entries and hard state durable, in one transaction.
    public func persist(_ ready: Ready) throws(StorageError) {
        try persist(entries: ready.entries, hardState: ready.hardState, snapshot: ready.snapshot)
    }

    /// Persists, in one transaction and in this order: a snapshot received from the leader (the
    /// log it covers goes; a matching suffix stays), entries (overwriting any conflicting suffix)
    /// and the hard state.
    public func persist(entries: [Entry], hardState: HardState?, snapshot: Snapshot?) throws(StorageError) {
        try run { db in
            if let snapshot {
                let index = Int64(bitPattern: snapshot.metadata.index)
                let heldTerm = try Int64.fetchOne(db, sql: "SELECT term FROM entries WHERE log_index = ?", arguments: [index])
                if heldTerm == Int64(bitPattern: snapshot.metadata.term) {
                    try db.execute(sql: "DELETE FROM entries WHERE log_index <= ?", arguments: [index])
                } else {
                    try db.execute(sql: "DELETE FROM entries")
                }
                try Self.writeSnapshot(snapshot, db)
            }
            if let first = entries.first {
                try db.execute(sql: "DELETE FROM entries WHERE log_index >= ?", arguments: [Int64(bitPattern: first.index)])
                let insert = try db.cachedStatement(sql: "INSERT INTO entries (log_index, term, kind, data) VALUES (?, ?, ?, ?)")
                for entry in entries {
                    try insert.execute(arguments: [
                        Int64(bitPattern: entry.index), Int64(bitPattern: entry.term), Int64(entry.kind.rawValue),
                        Data(entry.data),
                    ])
                }
            }
            if let hardState {
                try db.execute(
                    sql: "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_index) VALUES (1, ?, ?, ?)",
                    arguments: [Int64(bitPattern: hardState.term), Int64(bitPattern: hardState.vote), Int64(bitPattern: hardState.commit)]
                )
            }
        }
    }

    /// Records a snapshot this node took (``RaftNode/takeSnapshot(data:)``) and drops the entries
    /// it covers, atomically.
    public func compact(to snapshot: Snapshot) throws(StorageError) {
        try run { db in
            let current = try Int64.fetchOne(db, sql: "SELECT log_index FROM snapshot WHERE id = 1") ?? 0
            guard UInt64(bitPattern: current) < snapshot.metadata.index else { return }
            try Self.writeSnapshot(snapshot, db)
            try db.execute(sql: "DELETE FROM entries WHERE log_index <= ?", arguments: [Int64(bitPattern: snapshot.metadata.index)])
        }
    }

    /// Folds the write-ahead log back into the database file and truncates it (after compaction).
    public func checkpoint() throws(StorageError) {
        try run { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
    }

    private static func writeSnapshot(_ snapshot: Snapshot, _ db: Database) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO snapshot (id, log_index, term, conf, data) VALUES (1, ?, ?, ?, ?)",
            arguments: [
                Int64(bitPattern: snapshot.metadata.index), Int64(bitPattern: snapshot.metadata.term),
                Data(SnapshotCodec.encode(snapshot.metadata.confState)), Data(SnapshotCodec.compress(snapshot.data)),
            ]
        )
    }

    // MARK: Plumbing

    private func run(_ body: (Database) throws -> Void) throws(StorageError) {
        do {
            try queue.inTransaction { db in
                try body(db)
                return .commit
            }
        } catch let error as StorageError {
            throw error
        } catch {
            throw Self.storageError(error, path: path)
        }
    }

    private func read<Value>(_ body: (Database) throws -> Value) throws(StorageError) -> Value {
        do {
            return try queue.read(body)
        } catch let error as StorageError {
            throw error
        } catch {
            throw Self.storageError(error, path: path)
        }
    }

    private static func storageError(_ error: any Error, path: String) -> StorageError {
        if let database = error as? DatabaseError {
            switch database.resultCode {
            case .SQLITE_CORRUPT, .SQLITE_NOTADB:
                return StorageError(.corrupt, path: path, database.message ?? "SQLite reports a corrupt database")
            default:
                return StorageError(.io, path: path, "\(database.resultCode): \(database.message ?? "")")
            }
        }
        return StorageError(.io, path: path, "\(error)")
    }
}
