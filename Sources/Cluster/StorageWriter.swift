import Dispatch
import Raft
import RaftStorage

/// Runs the node's disk writes (fsynced log appends, snapshots) on a thread of their own, so
/// the node's actor stays free while the disk works: a routing decision, which reads the state
/// machine on that actor, never waits behind an fsync. Writes run one at a time, in order.
final class StorageWriter: Sendable {
    let database: RaftDatabase
    private let queue: DispatchQueue

    init(database: RaftDatabase, label: String) {
        self.database = database
        queue = DispatchQueue(label: label, qos: .userInitiated)
    }

    /// Persists a Ready's entries, hard state and snapshot; returns once durable.
    func persist(_ ready: Ready) async throws {
        try await run { database in try database.persist(ready) }
    }

    /// Writes a snapshot and deletes the log entries it covers.
    func compact(to snapshot: Snapshot) async throws {
        try await run { database in try database.compact(to: snapshot) }
    }

    private func run(_ body: @escaping @Sendable (RaftDatabase) throws -> Void) async throws {
        let database = database
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue.async {
                do {
                    try body(database)
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }
}
