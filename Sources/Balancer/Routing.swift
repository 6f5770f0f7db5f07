/// The prompt as the caller knows it.
public enum Prompt: Sendable, Hashable {
    /// Chained block hashes computed by the caller (see ``BlockHasher``).
    case blocks([BlockHash])
    case tokens([UInt32])
    case text(String)
    case none
}

/// One request to place.
public struct RoutingRequest: Sendable, Hashable {
    public var model: String
    /// Unique per request; also decides the A/B arm, deterministically.
    public var requestID: String
    public var sessionKey: String?
    public var prompt: Prompt
    /// Prompt length in tokens (derived from `prompt` when 0 and tokens or text are given).
    public var promptTokens: Int
    /// Tokens each prompt block stands for, when `prompt` is `.blocks`.
    public var tokensPerBlock: Int
    public var expectedOutputTokens: Int
    /// Roles to pick, in any order; empty lets the pools decide (PDFUSION when the model has
    /// it, else PREFILL then DECODE, else DECODE).
    public var roles: [WorkerRole]
    /// Resource tier name (see the configuration's tiers).
    public var tier: String?
    /// Higher is more important. Carried for the serving layer's admission and queueing;
    /// placement itself does not use it.
    public var priority: Int
    /// Where the request comes from, for distance-aware placement.
    public var location: GeoLocation?
    /// Workers not to pick (a retry after a failed connection excludes the worker that failed).
    public var excludedWorkers: Set<String> = []
    /// How long the decision's reservation holds when nobody releases it; nil: the configured
    /// `reservation_ttl_ms`. For callers that never release (rtp-llm frontends).
    public var holdMilliseconds: Milliseconds?
    /// Set by admission control when it dispatches the request under a class's ceiling: the
    /// prefilling pick is made among workers whose predicted queueing is under it.
    public var admissionCeiling: AdmissionCeiling?

    public init(
        model: String, requestID: String, sessionKey: String? = nil, prompt: Prompt = .none,
        promptTokens: Int = 0, tokensPerBlock: Int = 16, expectedOutputTokens: Int = 0,
        roles: [WorkerRole] = [], tier: String? = nil, priority: Int = 0, location: GeoLocation? = nil
    ) {
        self.model = model
        self.requestID = requestID
        self.sessionKey = sessionKey
        self.prompt = prompt
        self.promptTokens = promptTokens
        self.tokensPerBlock = tokensPerBlock
        self.expectedOutputTokens = expectedOutputTokens
        self.roles = roles
        self.tier = tier
        self.priority = priority
        self.location = location
    }

    /// Prompts longer than this many blocks are refused (1M tokens at 16 per block).
    public static let maxBlocks = 65_536
    /// Bounds on token counts and block sizes: far above any model's context, and low enough
    /// that no arithmetic on them can overflow.
    public static let maxTokens = 1 << 30
    public static let maxTokensPerBlock = 1 << 20
    /// Longest model name, request id and session key, in bytes.
    public static let maxNameBytes = 256
    public static let maxExcludedWorkers = 256
    /// Longest hold a request may ask for: a day, as `reservation_ttl_ms`.
    public static let maxHoldMilliseconds: Milliseconds = 86_400_000

    /// The checks that need no state, in one place: the HTTP API, the OpenAI proxy and the
    /// FlexLB API call it where a request enters, and the router again before deciding.
    /// Errors name the field.
    public func validate() throws(BalancerError) {
        let maxName = Self.maxNameBytes
        if model.isEmpty || model.utf8.count > maxName { throw .invalidRequest(field: "model", "must be 1 to \(maxName) bytes") }
        if requestID.isEmpty || requestID.utf8.count > maxName {
            throw .invalidRequest(field: "request_id", "must be 1 to \(maxName) bytes")
        }
        if let sessionKey, sessionKey.utf8.count > maxName {
            throw .invalidRequest(field: "session_id", "at most \(maxName) bytes")
        }
        let maxTokens = Self.maxTokens
        if !(0...maxTokens).contains(promptTokens) {
            throw .invalidRequest(field: "prompt_tokens", "must be in 0...\(maxTokens), got \(promptTokens)")
        }
        if !(0...maxTokens).contains(expectedOutputTokens) {
            throw .invalidRequest(field: "max_tokens", "must be in 0...\(maxTokens), got \(expectedOutputTokens)")
        }
        if !(1...Self.maxTokensPerBlock).contains(tokensPerBlock) {
            throw .invalidRequest(field: "tokens_per_block", "must be in 1...\(Self.maxTokensPerBlock), got \(tokensPerBlock)")
        }
        if case .blocks(let blocks) = prompt, blocks.count > Self.maxBlocks {
            throw .invalidRequest(field: "block_hashes", "at most \(Self.maxBlocks) blocks, got \(blocks.count)")
        }
        if excludedWorkers.count > Self.maxExcludedWorkers {
            throw .invalidRequest(field: "exclude_workers", "at most \(Self.maxExcludedWorkers) workers, got \(excludedWorkers.count)")
        }
        if let hold = holdMilliseconds, !(1...Self.maxHoldMilliseconds).contains(hold) {
            throw .invalidRequest(field: "hold_ms", "must be in 1...\(Self.maxHoldMilliseconds), got \(hold)")
        }
        if let location, !((-90...90).contains(location.latitude) && (-180...180).contains(location.longitude)) {
            throw .invalidRequest(field: "location", "latitude must be in [-90, 90] and longitude in [-180, 180]")
        }
    }
}

/// The ceiling a request was admitted under (``AdmissionClass/dispatchBelowMilliseconds``, or
/// the highest class's for an aged request), with the policy's measures of saturation.
public struct AdmissionCeiling: Sendable, Hashable {
    public var milliseconds: Double
    public var policy: AdmissionPolicy

    public init(milliseconds: Double, policy: AdmissionPolicy) {
        self.milliseconds = milliseconds
        self.policy = policy
    }
}

/// Why a worker was chosen.
public enum RoutingReason: String, Sendable, Hashable {
    case random
    case roundRobin = "round_robin"
    case leastLoad = "least_load"
    case powerOfTwo = "power_of_two"
    /// Cache-aware: the longest prefix match won.
    case cacheHit = "hit"
    /// Cache-aware: no useful match; least load.
    case cacheMiss = "miss"
    /// Cache-aware: load too uneven, least load instead of the match.
    case imbalanceFallback = "imbalance_fallback"
    case shortestTTFT = "shortest_ttft"
    case kvHeadroom = "kv_headroom"
    /// Every decode worker was above the KV watermark; the least full was taken.
    case kvPressureFallback = "kv_pressure_fallback"
    case consistentHash = "consistent_hash"
    /// Consistent hashing skipped the key's own worker because it was over its load bound.
    case boundedLoadSpill = "bounded_load_spill"
    case resourceFit = "resource_fit"
    /// The session's binding was used.
    case sticky
    /// The session had a binding on another tier, and that worker serves this one too.
    case stickyAffinity = "sticky_affinity"
    /// The session's worker was unusable (or there was none): the fallback picked and rebound.
    case stickyFallback = "sticky_fallback"
}

/// One pick of a decision.
public struct RoutingTarget: Sendable, Hashable {
    public var role: WorkerRole
    public var workerID: String
    public var address: String
    public var group: String
    public var strategy: StrategyKind
    public var reason: RoutingReason
    /// Leading prompt blocks the worker is believed to hold.
    public var matchedBlocks: Int
    /// The cost model's estimate for this worker, when a prefilling role.
    public var estimatedTTFTMilliseconds: Double?
}

/// The answer to ``RoutingRequest``: one target per role, in execution order.
public struct RoutingDecision: Sendable, Hashable {
    public var requestID: String
    public var model: String
    public var targets: [RoutingTarget]
    /// The A/B arm drawn, when the model's policy has a split.
    public var arm: String?
    /// Estimated time to first token on the prefilling target.
    public var estimatedTTFTMilliseconds: Double
    /// Hands the reservations back (``Router/release(token:)``).
    public var releaseToken: UInt64
    public var promptBlocks: Int
}
