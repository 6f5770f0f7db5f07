import Foundation
import Raft
@testable import RaftStorage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fresh directory for one test's database.
func temporaryDatabasePath(_ name: String = "raft.sqlite") -> String {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("fulcrum-storage-\(UInt64.random(in: 0...UInt64.max))")
    try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory.appendingPathComponent(name).path
}

func entries(_ range: ClosedRange<UInt64>, term: UInt64 = 1) -> [Entry] {
    range.map { Entry(term: term, index: $0, data: Array("entry \($0) term \(term)".utf8)) }
}

@Suite struct RaftDatabaseTests {
    @Test func aBatchIsReadBackExactly() throws {
        let path = temporaryDatabasePath()
        let database = try RaftDatabase(path: path, clusterID: "c1")
        #expect(try database.isEmpty())
        try database.persist(entries: entries(1...10), hardState: HardState(term: 1, vote: 2, commit: 7), snapshot: nil)
        let reopened = try RaftDatabase(path: path, clusterID: "c1").load()
        #expect(reopened.entries == entries(1...10))
        #expect(reopened.hardState == HardState(term: 1, vote: 2, commit: 7))
        #expect(reopened.snapshot.metadata.index == 0)
    }

    @Test func aConflictingSuffixIsTruncated() throws {
        let database = try RaftDatabase(path: temporaryDatabasePath(), clusterID: "c1")
        try database.persist(entries: entries(1...10), hardState: HardState(term: 1, vote: 1, commit: 3), snapshot: nil)
        // A new leader of term 2 overwrites from index 6 on, with a shorter log.
        try database.persist(entries: entries(6...8, term: 2), hardState: HardState(term: 2, vote: 3, commit: 3), snapshot: nil)
        let state = try database.load()
        #expect(state.entries == entries(1...5) + entries(6...8, term: 2))
    }

    @Test func compactionKeepsTheSnapshotAndTheEntriesAfterIt() throws {
        let path = temporaryDatabasePath()
        let database = try RaftDatabase(path: path, clusterID: "c1")
        try database.persist(entries: entries(1...20), hardState: HardState(term: 1, vote: 1, commit: 20), snapshot: nil)
        let conf = ConfState(voters: [1, 2, 3], learners: [4])
        let data = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 / 3) }
        try database.compact(to: Snapshot(metadata: SnapshotMetadata(index: 15, term: 1, confState: conf), data: data))
        // An older snapshot never replaces a newer one.
        try database.compact(to: Snapshot(metadata: SnapshotMetadata(index: 10, term: 1, confState: ConfState()), data: []))
        let state = try RaftDatabase(path: path, clusterID: "c1").load()
        #expect(state.snapshot.metadata == SnapshotMetadata(index: 15, term: 1, confState: conf))
        #expect(state.snapshot.data == data)
        #expect(state.entries == Array(entries(1...20)[15...]))
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        #expect(size < 100_000, "the snapshot is stored compressed")
    }

    @Test func aReceivedSnapshotReplacesTheLogItCovers() throws {
        let database = try RaftDatabase(path: temporaryDatabasePath(), clusterID: "c1")
        try database.persist(entries: entries(1...10), hardState: HardState(term: 1, vote: 1, commit: 5), snapshot: nil)
        // A leader's snapshot at 30 that this log does not match: everything goes.
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 30, term: 3, confState: ConfState(voters: [1, 2])), data: [1, 2, 3])
        try database.persist(entries: [], hardState: HardState(term: 3, vote: 0, commit: 30), snapshot: snapshot)
        var state = try database.load()
        #expect(state.entries.isEmpty)
        #expect(state.snapshot == snapshot)
        // Entries after it follow on.
        try database.persist(entries: entries(31...33, term: 3), hardState: nil, snapshot: nil)
        state = try database.load()
        #expect(state.entries.map(\.index) == [31, 32, 33])
        // A snapshot that matches a held entry keeps the suffix after it.
        let matching = Snapshot(metadata: SnapshotMetadata(index: 32, term: 3, confState: ConfState(voters: [1, 2])), data: [9])
        try database.persist(entries: [], hardState: nil, snapshot: matching)
        #expect(try database.load().entries.map(\.index) == [33])
    }

    @Test func aNodeRestartsIntoTheSameRaftState() throws {
        let path = temporaryDatabasePath()
        let database = try RaftDatabase(path: path, clusterID: "c1")
        try database.initialize(with: .bootstrap(ConfState(voters: [1])))
        #expect(throws: StorageError.self) { try database.initialize(with: .bootstrap(ConfState(voters: [1]))) }
        var node = try RaftNode(id: 1, state: try RaftDatabase(path: path, clusterID: "c1").load())
        #expect(node.commitIndex == 1 && node.lastIndex == 1)
        func drain() throws {
            while node.hasReady {
                let ready = node.ready()
                try database.persist(ready)
                node.advance(ready)
            }
        }
        // Apply the bootstrap configuration, win the single-voter election, commit a proposal.
        try drain()
        node.campaign()
        try drain()
        #expect(node.role == .leader)
        try node.propose(Array("hello".utf8))
        try drain()
        let restarted = try RaftNode(id: 1, state: try database.load())
        #expect(restarted.term == node.term && restarted.term >= 2)
        #expect(restarted.lastIndex == 3)
        #expect(restarted.commitIndex == 3)
        #expect(try restarted.entries(from: 3, through: 3).first?.data == Array("hello".utf8))
    }

    @Test func metadataPersists() throws {
        let path = temporaryDatabasePath()
        try RaftDatabase(path: path, clusterID: "c1").setMetadata("node_id", "42")
        #expect(try RaftDatabase(path: path, clusterID: "c1").metadata("node_id") == "42")
        #expect(try RaftDatabase(path: path, clusterID: "c1").metadata("missing") == nil)
    }
}

@Suite struct CorruptDatabaseTests {
    func expectRefusal(_ code: StorageError.Code, path: String, clusterID: String = "c1", load: Bool = false) {
        do {
            let database = try RaftDatabase(path: path, clusterID: clusterID)
            if load { _ = try database.load() }
            Issue.record("expected \(code), the database opened")
        } catch {
            #expect(error.code == code, "\(error)")
            #expect(error.path == path)
            #expect(error.description.hasPrefix(path))
        }
    }

    @Test func anotherClustersDatabaseIsRefused() throws {
        let path = temporaryDatabasePath()
        _ = try RaftDatabase(path: path, clusterID: "blue")
        expectRefusal(.foreignCluster, path: path, clusterID: "green")
    }

    @Test func aSchemaFromTheFutureIsRefused() throws {
        let path = temporaryDatabasePath()
        try RaftDatabase(path: path, clusterID: "c1").setMetadata("schema_version", "99")
        expectRefusal(.futureSchema, path: path)
    }

    @Test func aFileThatIsNotADatabaseIsRefused() throws {
        let path = temporaryDatabasePath()
        try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: path))
        expectRefusal(.corrupt, path: path)
    }

    @Test func aSnapshotWithABadChecksumIsRefusedOnLoad() throws {
        let path = temporaryDatabasePath()
        let database = try RaftDatabase(path: path, clusterID: "c1")
        try database.persist(entries: entries(1...5), hardState: HardState(term: 1, vote: 1, commit: 5), snapshot: nil)
        try database.compact(to: Snapshot(metadata: SnapshotMetadata(index: 3, term: 1, confState: ConfState(voters: [1])), data: Array(repeating: 7, count: 5000)))
        // Flip bytes inside the stored snapshot blob, as a bad sector would.
        let raw = try RawSQLite(path: path)
        try raw.execute("UPDATE snapshot SET data = substr(data, 1, 12) || x'FFFFFFFF' || substr(data, 17)")
        expectRefusal(.corrupt, path: path, load: true)
    }

    @Test func aGapInTheLogIsRefusedOnLoad() throws {
        let path = temporaryDatabasePath()
        try RaftDatabase(path: path, clusterID: "c1")
            .persist(entries: entries(1...5), hardState: HardState(term: 1, vote: 1, commit: 2), snapshot: nil)
        try RawSQLite(path: path).execute("DELETE FROM entries WHERE log_index = 3")
        expectRefusal(.corrupt, path: path, load: true)
    }
}
