/// The balancer's replicated configuration as `GET /admin/config` answers it, and its parts as
/// the `PUT`/`PATCH` routes under `/admin/config` take them.
public struct PolicyConfig: Codable, Sendable {
    public struct Arm: Codable, Sendable {
        public var name: String
        public var strategy: String
        public var weight: Int

        public init(name: String, strategy: String, weight: Int) {
            self.name = name
            self.strategy = strategy
            self.weight = weight
        }
    }

    public var strategies: [String: String]?
    public var split: [Arm]?
    public var stickyFallback: String?
    public var sameGroup: Bool?

    public init(strategies: [String: String]? = nil, split: [Arm]? = nil, stickyFallback: String? = nil, sameGroup: Bool? = nil) {
        self.strategies = strategies
        self.split = split
        self.stickyFallback = stickyFallback
        self.sameGroup = sameGroup
    }
}

public struct TierConfig: Codable, Sendable {
    public var vcpus: Int?
    public var memoryBytes: Int64?
    public var diskBytes: Int64?
    public var gpus: Int?
    public var gpuMemoryBytes: Int64?

    public init(vcpus: Int? = nil, memoryBytes: Int64? = nil, diskBytes: Int64? = nil, gpus: Int? = nil, gpuMemoryBytes: Int64? = nil) {
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
        self.gpus = gpus
        self.gpuMemoryBytes = gpuMemoryBytes
    }
}

/// Every routing setting; a PATCH sets those present and keeps the rest.
public struct RoutingSettingsConfig: Codable, Sendable {
    public var balanceAbsThreshold: Int?
    public var balanceRelThreshold: Double?
    public var cacheHitThreshold: Double?
    public var kvHighWatermark: Double?
    public var kvLowWatermark: Double?
    public var boundedLoadFactor: Double?
    public var virtualNodesPerWorker: Int?
    public var cacheAffinity: Double?
    public var nearBestFraction: Double?
    public var nearBestMs: Double?
    public var decodeMsPerRunningRequest: Double?
    public var stickyOverloadFactor: Double?
    public var stickyOverloadSlack: Int?
    public var stickyTtlMs: Int64?
    public var reservationTtlMs: Int64?
    public var prefixBlocksPerWorker: Int?
    public var busyCoreThreshold: Double?
    public var cpuWeight: Double?
    public var memoryWeight: Double?
    public var gpuWeight: Double?
    public var distanceWeight: Double?

    public static let keys: Set<String> = [
        "balance_abs_threshold", "balance_rel_threshold", "cache_hit_threshold", "kv_high_watermark", "kv_low_watermark",
        "bounded_load_factor", "virtual_nodes_per_worker", "cache_affinity", "near_best_fraction", "near_best_ms", "decode_ms_per_running_request",
        "sticky_overload_factor", "sticky_overload_slack", "sticky_ttl_ms", "reservation_ttl_ms", "prefix_blocks_per_worker",
        "busy_core_threshold", "cpu_weight", "memory_weight", "gpu_weight", "distance_weight",
    ]


    public init(balanceAbsThreshold: Int? = nil, balanceRelThreshold: Double? = nil, cacheHitThreshold: Double? = nil, kvHighWatermark: Double? = nil, kvLowWatermark: Double? = nil, boundedLoadFactor: Double? = nil, virtualNodesPerWorker: Int? = nil, cacheAffinity: Double? = nil, nearBestFraction: Double? = nil, nearBestMs: Double? = nil, decodeMsPerRunningRequest: Double? = nil, stickyOverloadFactor: Double? = nil, stickyOverloadSlack: Int? = nil, stickyTtlMs: Int64? = nil, reservationTtlMs: Int64? = nil, prefixBlocksPerWorker: Int? = nil, busyCoreThreshold: Double? = nil, cpuWeight: Double? = nil, memoryWeight: Double? = nil, gpuWeight: Double? = nil, distanceWeight: Double? = nil) {
        self.balanceAbsThreshold = balanceAbsThreshold
        self.balanceRelThreshold = balanceRelThreshold
        self.cacheHitThreshold = cacheHitThreshold
        self.kvHighWatermark = kvHighWatermark
        self.kvLowWatermark = kvLowWatermark
        self.boundedLoadFactor = boundedLoadFactor
        self.virtualNodesPerWorker = virtualNodesPerWorker
        self.cacheAffinity = cacheAffinity
        self.nearBestFraction = nearBestFraction
        self.nearBestMs = nearBestMs
        self.decodeMsPerRunningRequest = decodeMsPerRunningRequest
        self.stickyOverloadFactor = stickyOverloadFactor
        self.stickyOverloadSlack = stickyOverloadSlack
        self.stickyTtlMs = stickyTtlMs
        self.reservationTtlMs = reservationTtlMs
        self.prefixBlocksPerWorker = prefixBlocksPerWorker
        self.busyCoreThreshold = busyCoreThreshold
        self.cpuWeight = cpuWeight
        self.memoryWeight = memoryWeight
        self.gpuWeight = gpuWeight
        self.distanceWeight = distanceWeight
    }
}

public struct BalancerConfiguration: Codable, Sendable {
    public var defaultPolicy: PolicyConfig
    public var policies: [String: PolicyConfig]
    public var tiers: [String: TierConfig]
    public var settings: RoutingSettingsConfig
    /// Other names of models: alias → model (`PUT /admin/config/aliases/{alias}`).
    public var aliases: [String: String]?

    public init(
        defaultPolicy: PolicyConfig, policies: [String: PolicyConfig], tiers: [String: TierConfig], settings: RoutingSettingsConfig,
        aliases: [String: String]? = nil
    ) {
        self.defaultPolicy = defaultPolicy
        self.policies = policies
        self.tiers = tiers
        self.settings = settings
        self.aliases = aliases
    }
}

/// `PUT /admin/config/aliases/{alias}`: the model the alias names.
public struct ModelAlias: Codable, Sendable, Hashable {
    public var model: String

    public init(model: String) { self.model = model }
}
