#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Milliseconds since the Unix epoch, as the proposing node's clock read them. Replicated
/// commands carry their own time, so applying them never reads a clock.
public typealias Milliseconds = UInt64

/// A chained prompt-block hash: the hash of one block of tokens *and* every block before it, so
/// one value names a whole prefix. See ``BlockHasher``.
public typealias BlockHash = UInt64

/// What an inference worker does for a request.
public enum WorkerRole: UInt8, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    /// Vision encoder: runs before the language model.
    case vit = 0
    /// Prefill only (disaggregated serving): builds the KV cache, then hands over to decode.
    case prefill = 1
    /// Decode only: generates tokens from a KV cache built by a prefill worker.
    case decode = 2
    /// Prefill and decode in one engine.
    case pdfusion = 3

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { name }

    /// The upper-case name used in configuration and APIs (`PREFILL`, `DECODE`, …).
    public var name: String {
        switch self {
        case .vit: "VIT"
        case .prefill: "PREFILL"
        case .decode: "DECODE"
        case .pdfusion: "PDFUSION"
        }
    }

    public init?(name: String) {
        guard let role = Self.allCases.first(where: { $0.name == name.uppercased() }) else { return nil }
        self = role
    }

    /// Whether this role builds KV cache from the prompt, so prefix-cache affinity matters.
    public var prefillsPrompt: Bool { self == .prefill || self == .pdfusion }
}

/// The health checker's verdict; only transitions are replicated.
public enum HealthVerdict: UInt8, Sendable, Hashable, CustomStringConvertible {
    /// Registered, not probed yet. Routable, so a fresh worker takes traffic at once.
    case unknown = 0
    case healthy = 1
    case unhealthy = 2

    public var description: String {
        switch self {
        case .unknown: "unknown"
        case .healthy: "healthy"
        case .unhealthy: "unhealthy"
        }
    }
}

/// The circuit breaker's state for one worker.
public enum CircuitState: UInt8, Sendable, Hashable, CustomStringConvertible {
    case closed = 0
    /// Tripped: no traffic until the breaker lets a trial through.
    case open = 1
    /// Trial traffic allowed.
    case halfOpen = 2

    public var description: String {
        switch self {
        case .closed: "closed"
        case .open: "open"
        case .halfOpen: "half-open"
        }
    }
}

/// How much a worker can hold.
public struct WorkerCapacity: Sendable, Hashable {
    /// KV-cache blocks in the engine.
    public var kvBlocks: Int
    /// Tokens per KV block (and per prompt block of the prefix index).
    public var blockSize: Int
    /// Sequences decoded together in one step.
    public var maxBatch: Int
    /// Requests the worker may hold at once (running and waiting); 0 is unlimited.
    public var maxRequests: Int
    /// Profiled prefill speed, used by the shortest-TTFT cost model.
    public var prefillTokensPerSecond: Double

    public init(
        kvBlocks: Int = 0, blockSize: Int = 16, maxBatch: Int = 256, maxRequests: Int = 0,
        prefillTokensPerSecond: Double = 10_000
    ) {
        self.kvBlocks = Bounds.count(kvBlocks, Bounds.blocks)
        self.blockSize = max(1, Bounds.count(blockSize, RoutingRequest.maxTokensPerBlock))
        self.maxBatch = Bounds.count(maxBatch, Bounds.requests)
        self.maxRequests = Bounds.count(maxRequests, Bounds.requests)
        self.prefillTokensPerSecond = prefillTokensPerSecond > 0 ? Bounds.real(prefillTokensPerSecond, Bounds.tokensPerSecond) : 10_000
    }
}

/// One GPU of a worker host.
public struct GPUStatus: Sendable, Hashable {
    /// Busy fraction, 0…1.
    public var utilization: Double
    public var memoryTotalBytes: UInt64
    public var memoryUsedBytes: UInt64

    public init(utilization: Double, memoryTotalBytes: UInt64, memoryUsedBytes: UInt64) {
        self.utilization = Bounds.fraction(utilization)
        self.memoryTotalBytes = Bounds.bytes(memoryTotalBytes)
        self.memoryUsedBytes = Bounds.bytes(memoryUsedBytes)
    }

    public var memoryFreeBytes: UInt64 { memoryTotalBytes > memoryUsedBytes ? memoryTotalBytes - memoryUsedBytes : 0 }
}

/// Host resources as `fulcrum agent` reports them.
public struct WorkerResources: Sendable, Hashable {
    /// Busy fraction of each CPU core, 0…1.
    public var coreLoads: [Double]
    public var memoryTotalBytes: UInt64
    public var memoryUsedBytes: UInt64
    public var diskTotalBytes: UInt64
    public var diskUsedBytes: UInt64
    public var gpus: [GPUStatus]

    public init(
        coreLoads: [Double] = [], memoryTotalBytes: UInt64 = 0, memoryUsedBytes: UInt64 = 0,
        diskTotalBytes: UInt64 = 0, diskUsedBytes: UInt64 = 0, gpus: [GPUStatus] = []
    ) {
        self.coreLoads = coreLoads.map(Bounds.fraction)
        self.memoryTotalBytes = Bounds.bytes(memoryTotalBytes)
        self.memoryUsedBytes = Bounds.bytes(memoryUsedBytes)
        self.diskTotalBytes = Bounds.bytes(diskTotalBytes)
        self.diskUsedBytes = Bounds.bytes(diskUsedBytes)
        self.gpus = gpus
    }

    public var memoryFreeBytes: UInt64 { memoryTotalBytes > memoryUsedBytes ? memoryTotalBytes - memoryUsedBytes : 0 }
    public var diskFreeBytes: UInt64 { diskTotalBytes > diskUsedBytes ? diskTotalBytes - diskUsedBytes : 0 }
}

/// Where a worker is, for distance-aware placement.
public struct GeoLocation: Sendable, Hashable {
    public var latitude: Double
    public var longitude: Double

    public init(latitude: Double, longitude: Double) {
        self.latitude = Bounds.within(latitude, -90...90, fallback: 0)
        self.longitude = Bounds.within(longitude, -180...180, fallback: 0)
    }

    /// Great-circle distance in kilometres (haversine).
    public func distanceKilometres(to other: GeoLocation) -> Double {
        let radians = Double.pi / 180
        let dLat = (other.latitude - latitude) * radians
        let dLon = (other.longitude - longitude) * radians
        let a = sin(dLat / 2) * sin(dLat / 2)
            + cos(latitude * radians) * cos(other.latitude * radians) * sin(dLon / 2) * sin(dLon / 2)
        return 2 * 6371 * asin(min(1, a.squareRoot()))
    }
}

/// The engine's own view of its load, as last polled or pushed.
public struct EngineLoad: Sendable, Hashable {
    public var runningRequests: Int
    public var waitingRequests: Int
    /// Prompt tokens queued for prefill, not yet computed.
    public var queuedPrefillTokens: Int
    public var kvBlocksUsed: Int
    public var kvBlocksTotal: Int
    /// Duration of the engine's latest iteration.
    public var stepLatencyMilliseconds: Double
    /// When the engine reported this.
    public var reportedAt: Milliseconds

    public init(
        runningRequests: Int = 0, waitingRequests: Int = 0, queuedPrefillTokens: Int = 0,
        kvBlocksUsed: Int = 0, kvBlocksTotal: Int = 0, stepLatencyMilliseconds: Double = 0,
        reportedAt: Milliseconds = 0
    ) {
        self.runningRequests = Bounds.count(runningRequests, Bounds.requests)
        self.waitingRequests = Bounds.count(waitingRequests, Bounds.requests)
        self.queuedPrefillTokens = Bounds.count(queuedPrefillTokens, Bounds.tokens)
        self.kvBlocksUsed = Bounds.count(kvBlocksUsed, Bounds.blocks)
        self.kvBlocksTotal = Bounds.count(kvBlocksTotal, Bounds.blocks)
        self.stepLatencyMilliseconds = Bounds.real(stepLatencyMilliseconds, Bounds.stepMilliseconds)
        self.reportedAt = reportedAt
    }

    /// KV-cache occupancy, 0…1 (0 when the engine reports no total).
    public var kvUsage: Double {
        kvBlocksTotal > 0 ? Double(kvBlocksUsed) / Double(kvBlocksTotal) : 0
    }
}

/// One inference worker as the cluster knows it.
public struct Worker: Sendable, Hashable {
    public var id: String
    public var model: String
    public var role: WorkerRole
    /// `host:port` of the engine's HTTP API.
    public var address: String
    /// Placement group or zone; multi-role requests can be kept inside one.
    public var group: String
    public var labels: [String: String]
    public var capacity: WorkerCapacity
    public var resources: WorkerResources
    public var location: GeoLocation?
    public var draining: Bool
    public var health: HealthVerdict
    public var circuit: CircuitState
    public var load: EngineLoad

    public init(
        id: String, model: String, role: WorkerRole, address: String, group: String = "",
        labels: [String: String] = [:], capacity: WorkerCapacity = WorkerCapacity(),
        resources: WorkerResources = WorkerResources(), location: GeoLocation? = nil,
        draining: Bool = false, health: HealthVerdict = .unknown, circuit: CircuitState = .closed,
        load: EngineLoad = EngineLoad()
    ) {
        self.id = id
        self.model = model
        self.role = role
        self.address = address
        self.group = group
        self.labels = labels
        self.capacity = capacity
        self.resources = resources
        self.location = location
        self.draining = draining
        self.health = health
        self.circuit = circuit
        self.load = load
    }

    /// Why this worker may not take a request right now, or nil when it may.
    public var exclusion: Exclusion? {
        if draining { return .draining }
        if health == .unhealthy { return .unhealthy }
        if circuit == .open { return .circuitOpen }
        return nil
    }

    public enum Exclusion: Sendable, Hashable {
        case draining, unhealthy, circuitOpen, overCapacity
    }

    /// The plain-value part that routing reads on every decision.
    func status(busyCore: Double) -> WorkerStatus {
        let idle = resources.coreLoads.filter { $0 < busyCore }
        return WorkerStatus(
            role: role, exclusion: exclusion, capacity: capacity, load: load,
            idleCores: idle.count, idleCoreIdleness: idle.reduce(0) { $0 + (1 - $1) },
            totalCores: resources.coreLoads.count, memoryFreeBytes: resources.memoryFreeBytes,
            memoryTotalBytes: resources.memoryTotalBytes, diskFreeBytes: resources.diskFreeBytes,
            gpuCount: resources.gpus.count
        )
    }
}

/// What routing reads of a worker on every decision, as plain values (no reference counting),
/// kept beside the registry and refreshed whenever a worker changes.
struct WorkerStatus: Sendable, Hashable {
    var role: WorkerRole
    var exclusion: Worker.Exclusion?
    var capacity: WorkerCapacity
    var load: EngineLoad
    var idleCores: Int
    /// Sum over idle cores of (1 − load).
    var idleCoreIdleness: Double
    var totalCores: Int
    var memoryFreeBytes: UInt64
    var memoryTotalBytes: UInt64
    var diskFreeBytes: UInt64
    var gpuCount: Int
}

