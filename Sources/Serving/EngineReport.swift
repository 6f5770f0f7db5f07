public import Balancer

/// What one poll of a worker learned.
public struct EngineReport: Sendable, Equatable {
    /// The engine's load; nil when its status source reports none (TCP), or when the status was
    /// not newer than the last one applied (rtp-llm's `status_version`).
    public var load: EngineLoad?
    /// Requests the engine reports finished since the cursor (by the request ids they were
    /// scheduled with): their holds end.
    public var finishedRequestIDs: [String]
    /// The engine's cached block keys, when this poll read them.
    public var cache: CachedKeys?
    /// Where the next poll starts.
    public var cursor: EngineCursor

    public init(load: EngineLoad?, finishedRequestIDs: [String] = [], cache: CachedKeys? = nil, cursor: EngineCursor = EngineCursor()) {
        self.load = load
        self.finishedRequestIDs = finishedRequestIDs
        self.cache = cache
        self.cursor = cursor
    }
}

/// Every block key an engine holds, with the version of that set (it only grows while the
/// engine lives; a lower one means the engine restarted cold).
public struct CachedKeys: Sendable, Equatable {
    public var version: Int64
    public var keys: [BlockHash]

    public init(version: Int64, keys: [BlockHash]) {
        self.version = version
        self.keys = keys
    }
}

/// The leader's place in a worker's versioned status (rtp-llm's): the next poll asks for what
/// is newer. Leader-local, and started afresh by each new leader.
public struct EngineCursor: Sendable, Equatable {
    /// The newest `status_version` applied; a status not newer only counts as alive.
    public var statusVersion: Int64 = 0
    /// The newest finished-request version seen; the engine lists only newer ones.
    public var finishedVersion: Int64 = 0
    /// Whether this poll reads the engine's cached keys too.
    public var readsCache = false

    public init(statusVersion: Int64 = 0, finishedVersion: Int64 = 0, readsCache: Bool = false) {
        self.statusVersion = statusVersion
        self.finishedVersion = finishedVersion
        self.readsCache = readsCache
    }
}

/// How a worker's reported key sets become changes to the replicated prefix index: the
/// difference from the last set applied, so each log entry carries what changed, not every key.
///
/// - With no earlier set (a new leader, a new worker) or after the version fell (the engine
///   restarted), the set is reconciled against what the index holds for the worker: blocks it
///   does not report are evicted, including those the router recorded from its own decisions.
/// - A set with the same version changes nothing.
/// - Otherwise the newly reported keys are recorded and the ones gone are evicted. Blocks the
///   router recorded since (requests still prefilling) stay until a later set drops them or the
///   per-worker cap pushes them out.
public struct CachedKeysTracker: Sendable {
    private var applied: [String: (version: Int64, keys: Set<BlockHash>)] = [:]

    public init() {}

    /// The records and evictions that bring the index from `held` (what it holds for the
    /// worker now) to `report`; at most `cap` keys of a report are kept.
    public mutating func changes(
        workerID: String, report: CachedKeys, held: @autoclosure () -> [BlockHash], cap: Int
    ) -> (record: [BlockHash], evict: [BlockHash]) {
        let keys = Set(report.keys.prefix(max(0, cap)))
        let previous = applied[workerID]
        if let previous, report.version == previous.version { return ([], []) }
        let base: Set<BlockHash>
        if let previous, report.version > previous.version {
            base = previous.keys
        } else {
            base = Set(held())
        }
        applied[workerID] = (report.version, keys)
        return (keys.subtracting(base).sorted(), base.subtracting(keys).sorted())
    }

    /// Forgets workers not in `known`.
    public mutating func keep(only known: Set<String>) {
        applied = applied.filter { known.contains($0.key) }
    }

    public mutating func reset() { applied = [:] }
}
