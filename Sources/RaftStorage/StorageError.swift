/// Why the Raft database cannot be used. Every error names the file and what is wrong; a node
/// that meets one stops rather than start empty.
public struct StorageError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// Unreadable, not a database, failed checksum or inconsistent contents.
        case corrupt
        /// Written by another cluster.
        case foreignCluster = "foreign_cluster"
        /// Written by a newer Fulcrum whose schema this build does not know.
        case futureSchema = "future_schema"
        /// The operation does not fit the stored state (e.g. initializing a non-empty database).
        case invalidOperation = "invalid_operation"
        /// SQLite or the file system failed.
        case io
    }

    public let code: Code
    public let path: String
    public let message: String

    init(_ code: Code, path: String, _ message: String) {
        self.code = code
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(code.rawValue): \(message)" }
}
