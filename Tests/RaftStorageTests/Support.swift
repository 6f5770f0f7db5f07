import Foundation
import GRDB

/// Writes to a database behind the storage layer's back, to plant corruption.
struct RawSQLite {
    let queue: DatabaseQueue

    init(path: String) throws { queue = try DatabaseQueue(path: path) }

    func execute(_ sql: String) throws {
        try queue.write { db in try db.execute(sql: sql) }
    }
}
