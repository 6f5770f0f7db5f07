import Foundation
public import Balancer
import Synchronization

/// The API keys Fulcrum presents to engines started with `--api-key`, read from a secret on
/// each node (`engine_keys_file`) and named by a worker's `api_key_ref` label. Only the name is
/// registered, replicated and shown; the key itself never enters the log, a snapshot, an answer
/// or a log line.
///
/// The secret is either a file of `NAME KEY` lines (`#` starts a comment), or a directory with
/// one file per name holding the key — the layout of a Kubernetes Secret mounted as a volume.
/// It is read again when it changes (at most every `recheckInterval`), so a rotated key takes
/// effect without a restart.
public final class EngineKeys: Sendable {
    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    /// What a name must look like: it is replicated, so it is short and plain.
    public static func isValidName(_ name: String) -> Bool {
        (1...128).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x2D || byte == 0x5F || byte == 0x2E
        }
    }

    static let maxKeyBytes = 4_096
    static let maxEntries = 10_000

    private struct Loaded {
        var keys: [String: String] = [:]
        var stamp: Date?
        var checked: ContinuousClock.Instant?
    }

    public let path: String?
    let recheckInterval: Duration
    private let loaded = Mutex(Loaded())

    /// Reads `path` now, so a bad secret fails the node's start rather than its first request.
    public init(path: String?, recheckInterval: Duration = .seconds(5)) throws(LoadError) {
        self.path = path
        self.recheckInterval = recheckInterval
        guard let path else { return }
        let keys = try Self.read(path)
        loaded.withLock { $0 = Loaded(keys: keys, stamp: Self.stamp(path), checked: .now) }
    }

    /// No keys: every engine is called without one.
    public static let none = try! EngineKeys(path: nil)

    public var names: [String] { loaded.withLock { $0.keys.keys.sorted() } }

    /// The key called `name`, re-reading the secret when it changed. A secret that became
    /// unreadable keeps the keys last read.
    public func key(named name: String) -> String? {
        guard let path else { return nil }
        let now = ContinuousClock.now
        let due = loaded.withLock { state -> Bool in
            guard let checked = state.checked, now - checked < recheckInterval else {
                state.checked = now
                return true
            }
            return false
        }
        if due, let stamp = Self.stamp(path), stamp != loaded.withLock({ $0.stamp }), let keys = try? Self.read(path) {
            loaded.withLock {
                $0.keys = keys
                $0.stamp = stamp
            }
        }
        return loaded.withLock { $0.keys[name] }
    }

    /// The `Authorization` value for `worker`, when it names a key that exists.
    public func authorization(for worker: Worker) -> String? {
        worker.labels["api_key_ref"].flatMap(key(named:)).map { "Bearer \($0)" }
    }

    /// The newest modification time under `path` (a directory's files change by symlink swap).
    static func stamp(_ path: String) -> Date? {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        var newest = (try? manager.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? .distantPast
        if isDirectory.boolValue, let names = try? manager.contentsOfDirectory(atPath: path) {
            for name in names {
                let full = (path as NSString).appendingPathComponent(name)
                if let date = (try? manager.attributesOfItem(atPath: full)[.modificationDate]) as? Date, date > newest { newest = date }
                if let resolved = try? manager.destinationOfSymbolicLink(atPath: full),
                   let date = (try? manager.attributesOfItem(atPath: (path as NSString).appendingPathComponent(resolved))[.modificationDate]) as? Date,
                   date > newest {
                    newest = date
                }
            }
        }
        return newest
    }

    static func read(_ path: String) throws(LoadError) -> [String: String] {
        let manager = FileManager.default
        var isDirectory: ObjCBool = false
        guard manager.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw LoadError(description: "engine_keys_file \(path) does not exist")
        }
        var keys: [String: String] = [:]
        if isDirectory.boolValue {
            let names: [String]
            do {
                names = try manager.contentsOfDirectory(atPath: path)
            } catch {
                throw LoadError(description: "engine_keys_file \(path) cannot be listed: \(error.localizedDescription)")
            }
            for name in names.sorted() where !name.hasPrefix(".") && isValidName(name) {
                let full = (path as NSString).appendingPathComponent(name)
                var entryIsDirectory: ObjCBool = false
                guard manager.fileExists(atPath: full, isDirectory: &entryIsDirectory), !entryIsDirectory.boolValue else { continue }
                guard let data = manager.contents(atPath: full) else { throw LoadError(description: "\(full) cannot be read") }
                let key = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                try check(key, name: name, at: full)
                keys[name] = key
                guard keys.count <= maxEntries else { throw LoadError(description: "\(path): more than \(maxEntries) keys") }
            }
            return keys
        }
        guard let data = manager.contents(atPath: path) else { throw LoadError(description: "engine_keys_file \(path) cannot be read") }
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(in: .whitespaces)
            guard !content.isEmpty else { continue }
            let parts = content.split(separator: " ", omittingEmptySubsequences: true)
            // The line is never quoted back: it holds a key.
            guard parts.count == 2, isValidName(String(parts[0])) else {
                throw LoadError(description: "\(path):\(number + 1): expected NAME KEY, NAME of letters, digits, '.', '_' or '-'")
            }
            try check(String(parts[1]), name: String(parts[0]), at: "\(path):\(number + 1)")
            keys[String(parts[0])] = String(parts[1])
            guard keys.count <= maxEntries else { throw LoadError(description: "\(path): more than \(maxEntries) keys") }
        }
        return keys
    }

    private static func check(_ key: String, name: String, at place: String) throws(LoadError) {
        guard !key.isEmpty, key.utf8.count <= maxKeyBytes, key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw LoadError(description: "\(place): the key \(name) must be 1 to \(maxKeyBytes) printable ASCII bytes without spaces")
        }
    }
}
