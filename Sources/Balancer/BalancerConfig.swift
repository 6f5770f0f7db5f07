/// A routing strategy: how one worker is picked among the eligible workers of a role.
public enum StrategyKind: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case random = 0
    case roundRobin = 1
    case leastLoad = 2
    case powerOfTwo = 3
    /// Longest prefix-block match, guarded against load imbalance.
    case cacheAware = 4
    /// Lowest estimated time to first token (queue + uncached prefill + decode load).
    case shortestTTFT = 5
    /// Decode placement that avoids workers above the KV-cache watermark.
    case kvPressure = 6
    /// Consistent hashing with bounded load.
    case consistentHash = 7
    /// Fits the request's resource tier, then scores free cores, memory, GPU and distance.
    case resourceAware = 8
    /// Session affinity, falling back to the policy's `stickyFallback`.
    case sticky = 9

    /// The name used in configuration and APIs (`cache_aware`, …).
    public var name: String {
        switch self {
        case .random: "random"
        case .roundRobin: "round_robin"
        case .leastLoad: "least_load"
        case .powerOfTwo: "power_of_two"
        case .cacheAware: "cache_aware"
        case .shortestTTFT: "shortest_ttft"
        case .kvPressure: "kv_pressure"
        case .consistentHash: "consistent_hash"
        case .resourceAware: "resource_aware"
        case .sticky: "sticky"
        }
    }

    public var description: String { name }

    public init?(name: String) {
        guard let kind = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = kind
    }
}

/// One arm of a weighted A/B split between strategies.
public struct StrategyArm: Sendable, Hashable {
    public var name: String
    public var strategy: StrategyKind
    public var weight: Int

    public init(name: String, strategy: StrategyKind, weight: Int) {
        self.name = name
        self.strategy = strategy
        self.weight = weight
    }
}

/// How one model's requests are routed.
public struct ModelPolicy: Sendable, Hashable {
    /// Strategy per role; roles not listed use ``defaultStrategy(for:)``.
    public var strategies: [WorkerRole: StrategyKind]
    /// When not empty, each request draws an arm (deterministically from its id, by weight) whose
    /// strategy replaces the configured one for the prompt-prefilling roles (PREFILL, PDFUSION).
    public var split: [StrategyArm]
    /// What `sticky` uses when a session has no usable binding.
    public var stickyFallback: StrategyKind
    /// Later picks of a multi-role request stay in the group of the first pick.
    public var sameGroup: Bool

    public init(
        strategies: [WorkerRole: StrategyKind] = [:], split: [StrategyArm] = [],
        stickyFallback: StrategyKind = .cacheAware, sameGroup: Bool = false
    ) {
        self.strategies = strategies
        self.split = split
        self.stickyFallback = stickyFallback
        self.sameGroup = sameGroup
    }

    public static func defaultStrategy(for role: WorkerRole) -> StrategyKind {
        switch role {
        case .prefill, .pdfusion: .cacheAware
        case .decode: .kvPressure
        case .vit: .leastLoad
        }
    }

    public func strategy(for role: WorkerRole) -> StrategyKind {
        strategies[role] ?? Self.defaultStrategy(for: role)
    }

    /// Largest weight of one A/B arm (so their sum cannot overflow).
    public static let maxArmWeight = 1_000_000
    public static let maxArms = 64

    /// Checks the policy; the error names the offending field.
    public func validate() throws(BalancerError) {
        if split.count > Self.maxArms { throw .invalidConfig(field: "split", "at most \(Self.maxArms) arms") }
        if stickyFallback == .sticky { throw .invalidConfig(field: "sticky_fallback", "must not be sticky itself") }
        var names = Set<String>()
        for arm in split {
            if arm.weight <= 0 || arm.weight > Self.maxArmWeight {
                throw .invalidConfig(field: "split.\(arm.name).weight", "must be in 1...\(Self.maxArmWeight), got \(arm.weight)")
            }
            if arm.name.isEmpty { throw .invalidConfig(field: "split.name", "must not be empty") }
            if !names.insert(arm.name).inserted { throw .invalidConfig(field: "split.\(arm.name)", "arm names must be unique") }
        }
    }
}

/// Resources a request of a tier needs on one worker host.
public struct ResourceTier: Sendable, Hashable {
    public var vCPUs: Int
    public var memoryBytes: UInt64
    public var diskBytes: UInt64
    public var gpus: Int
    /// Free GPU memory needed on each of those GPUs.
    public var gpuMemoryBytes: UInt64

    public init(vCPUs: Int = 0, memoryBytes: UInt64 = 0, diskBytes: UInt64 = 0, gpus: Int = 0, gpuMemoryBytes: UInt64 = 0) {
        self.vCPUs = vCPUs
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
        self.gpus = gpus
        self.gpuMemoryBytes = gpuMemoryBytes
    }

    public func validate(name: String) throws(BalancerError) {
        if name.isEmpty || name.utf8.count > RoutingRequest.maxNameBytes {
            throw .invalidConfig(field: "tiers.name", "must be 1 to \(RoutingRequest.maxNameBytes) bytes")
        }
        if !(0...Bounds.requests).contains(vCPUs) { throw .invalidConfig(field: "tiers.\(name).vcpus", "must be in 0...\(Bounds.requests)") }
        if !(0...Bounds.requests).contains(gpus) { throw .invalidConfig(field: "tiers.\(name).gpus", "must be in 0...\(Bounds.requests)") }
        if memoryBytes > Bounds.bytes || diskBytes > Bounds.bytes || gpuMemoryBytes > Bounds.bytes {
            throw .invalidConfig(field: "tiers.\(name)", "byte sizes must be at most \(Bounds.bytes)")
        }
    }
}

/// Thresholds and limits of the strategies, cluster-wide.
public struct RoutingSettings: Sendable, Hashable {
    /// Cache-aware falls back to least load when the busiest and idlest candidates differ by more
    /// than this many requests ...
    public var balanceAbsoluteThreshold: Int = 32
    /// ... and the busiest carries more than this multiple of the idlest's load.
    public var balanceRelativeThreshold: Double = 1.5
    /// Cache-aware follows a prefix match only when it covers at least this share of the
    /// prompt's blocks; shorter matches go to the least loaded worker.
    public var cacheHitThreshold: Double = 0.2
    /// A decode worker above this KV usage takes no new request ...
    public var kvHighWatermark: Double = 0.92
    /// ... until it is back below this one (hysteresis).
    public var kvLowWatermark: Double = 0.85
    /// Consistent hashing skips a worker whose load exceeds this multiple of the mean (≥ 1).
    public var boundedLoadFactor: Double = 1.25
    public var virtualNodesPerWorker: Int = 64
    /// Shortest-TTFT values a cached prefix beyond what it saves this request: a candidate's
    /// score is its estimated TTFT less this many times the prefill time its cached prefix
    /// saves (the conversation's later turns reuse it there). 0 is plain shortest TTFT.
    public var cacheAffinity: Double = 20
    /// Shortest-TTFT picks among candidates whose score is within this fraction of the best
    /// estimated TTFT ...
    public var nearBestFraction: Double = 0.1
    /// ... or within this many milliseconds of it, whichever is wider.
    public var nearBestMilliseconds: Double = 2
    /// Estimated decode slowdown per running request on a worker, added to its TTFT.
    public var decodeMillisecondsPerRunningRequest: Double = 0.25
    /// A sticky session moves when its worker carries more than this multiple of the mean load
    /// plus `stickyOverloadSlack` requests.
    public var stickyOverloadFactor: Double = 2
    public var stickyOverloadSlack: Int = 8
    /// How long a session binding lives after its last use.
    public var stickyTTLMilliseconds: Milliseconds = 3_600_000
    /// A reservation that is never released is dropped after this long.
    public var reservationTTLMilliseconds: Milliseconds = 600_000
    /// Prefix-index cap per worker, in blocks (LRU beyond).
    public var prefixBlocksPerWorker: Int = 200_000
    /// A CPU core busier than this does not count as free.
    public var busyCoreThreshold: Double = 0.8
    /// Resource-aware score weights.
    public var cpuWeight: Double = 1
    public var memoryWeight: Double = 1
    public var gpuWeight: Double = 3
    /// Score lost per 1,000 km between the request's location and the worker.
    public var distanceWeightPer1000Kilometres: Double = 0.5

    public init() {}

    public func validate() throws(BalancerError) {
        func check(_ condition: Bool, _ field: String, _ message: String) throws(BalancerError) {
            if !condition { throw .invalidConfig(field: field, message) }
        }
        // Every value finite and bounded above too: settings reach every replica, and a factor
        // of infinity or a TTL near UInt64.max would overflow the arithmetic that uses it.
        let big = 1e6
        func within(_ value: Double, _ range: ClosedRange<Double>) -> Bool { value.isFinite && range.contains(value) }
        let day: UInt64 = 86_400_000
        try check((0...Bounds.requests).contains(balanceAbsoluteThreshold), "balance_abs_threshold", "must be in 0...\(Bounds.requests)")
        try check(within(balanceRelativeThreshold, 1...big), "balance_rel_threshold", "must be in [1, \(big)]")
        try check(within(cacheHitThreshold, 0...1), "cache_hit_threshold", "must be in [0, 1]")
        try check(kvHighWatermark > 0 && kvHighWatermark <= 1, "kv_high_watermark", "must be in (0, 1]")
        try check(kvLowWatermark > 0 && kvLowWatermark <= kvHighWatermark, "kv_low_watermark", "must be in (0, kv_high_watermark]")
        try check(within(boundedLoadFactor, 1...big), "bounded_load_factor", "must be in [1, \(big)]")
        try check((1...1024).contains(virtualNodesPerWorker), "virtual_nodes_per_worker", "must be in 1...1024")
        try check(within(cacheAffinity, 0...1_000), "cache_affinity", "must be in [0, 1000]")
        try check(within(nearBestFraction, 0...big), "near_best_fraction", "must be in [0, \(big)]")
        try check(within(nearBestMilliseconds, 0...Bounds.stepMilliseconds), "near_best_ms", "must be in [0, \(Bounds.stepMilliseconds)]")
        try check(within(decodeMillisecondsPerRunningRequest, 0...Bounds.stepMilliseconds), "decode_ms_per_running_request", "must be in [0, \(Bounds.stepMilliseconds)]")
        try check(within(stickyOverloadFactor, 1...big), "sticky_overload_factor", "must be in [1, \(big)]")
        try check((0...Bounds.requests).contains(stickyOverloadSlack), "sticky_overload_slack", "must be in 0...\(Bounds.requests)")
        try check(stickyTTLMilliseconds > 0 && stickyTTLMilliseconds <= 365 * day, "sticky_ttl_ms", "must be in 1...\(365 * day) (a year)")
        try check(reservationTTLMilliseconds > 0 && reservationTTLMilliseconds <= day, "reservation_ttl_ms", "must be in 1...\(day) (a day)")
        try check((0...Bounds.blocks).contains(prefixBlocksPerWorker), "prefix_blocks_per_worker", "must be in 0...\(Bounds.blocks)")
        try check(busyCoreThreshold > 0 && busyCoreThreshold <= 1, "busy_core_threshold", "must be in (0, 1]")
        try check(within(cpuWeight, 0...big) && within(memoryWeight, 0...big) && within(gpuWeight, 0...big), "weights", "must be in [0, \(big)]")
        try check(within(distanceWeightPer1000Kilometres, 0...big), "distance_weight", "must be in [0, \(big)]")
    }
}

/// Everything about routing that operators change at run time; replicated.
public struct BalancerConfig: Sendable, Hashable {
    public var settings = RoutingSettings()
    /// Used for models without a policy of their own.
    public var defaultPolicy = ModelPolicy()
    public var policies: [String: ModelPolicy] = [:]
    public var tiers: [String: ResourceTier] = [:]
    /// Other names of models: alias → model.
    public var aliases: [String: String] = [:]

    public init() {}

    public func policy(for model: String) -> ModelPolicy { policies[model] ?? defaultPolicy }

    /// At most this many aliases, each name at most 256 bytes.
    public static let maxAliases = 1_024

    /// Checks that `alias` → `model` can be added to `existing`; the error names the field.
    public static func validateAlias(_ alias: String, model: String, existing: [String: String]) throws(BalancerError) {
        if alias.isEmpty || alias.utf8.count > 256 { throw .invalidConfig(field: "alias", "must be 1 to 256 bytes") }
        if model.isEmpty || model.utf8.count > 256 { throw .invalidConfig(field: "model", "must be 1 to 256 bytes") }
        if alias == model { throw .invalidConfig(field: "model", "an alias cannot name itself") }
        if existing[alias] == nil && existing.count >= maxAliases { throw .invalidConfig(field: "alias", "at most \(maxAliases) aliases") }
    }
}
