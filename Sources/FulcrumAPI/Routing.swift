/// `POST /v1/route` (schema in `Docs/api.md` and `Docs/openapi.yaml`).
public struct RouteRequest: Codable, Sendable, Hashable {
    public struct Location: Codable, Sendable, Hashable {
        public var latitude: Double
        public var longitude: Double

        public init(latitude: Double, longitude: Double) {
            self.latitude = latitude
            self.longitude = longitude
        }
    }

    public var model: String
    public var requestId: String?
    public var sessionId: String?
    /// The prompt as text, as token ids, or as chained block hashes: at most one of the three.
    public var prompt: String?
    public var tokenIds: [Int64]?
    public var blockHashes: [BlockHashValue]?
    public var promptTokens: Int?
    public var tokensPerBlock: Int?
    public var maxTokens: Int?
    public var roles: [String]?
    public var tier: String?
    public var priority: Int?
    public var location: Location?
    public var excludeWorkers: [String]?
    /// How long the reservation holds when nobody releases it (default `reservation_ttl_ms`).
    public var holdMs: UInt64?

    public init(
        model: String, requestId: String? = nil, sessionId: String? = nil, prompt: String? = nil, tokenIds: [Int64]? = nil,
        blockHashes: [BlockHashValue]? = nil, promptTokens: Int? = nil, tokensPerBlock: Int? = nil, maxTokens: Int? = nil,
        roles: [String]? = nil, tier: String? = nil, priority: Int? = nil, location: Location? = nil, excludeWorkers: [String]? = nil
    ) {
        self.model = model
        self.requestId = requestId
        self.sessionId = sessionId
        self.prompt = prompt
        self.tokenIds = tokenIds
        self.blockHashes = blockHashes
        self.promptTokens = promptTokens
        self.tokensPerBlock = tokensPerBlock
        self.maxTokens = maxTokens
        self.roles = roles
        self.tier = tier
        self.priority = priority
        self.location = location
        self.excludeWorkers = excludeWorkers
    }
}

/// A 64-bit block hash in JSON: unsigned, or signed (its bit pattern), as RTP-LLM sends
/// `int64` cache keys.
public struct BlockHashValue: Codable, Sendable, Hashable {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let unsigned = try? container.decode(UInt64.self) {
            value = unsigned
        } else {
            value = UInt64(bitPattern: try container.decode(Int64.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// The answer to `/v1/route`.
public struct RouteResponse: Codable, Sendable, Hashable {
    public struct Target: Codable, Sendable, Hashable {
        public var role: String
        public var workerId: String
        public var address: String
        public var group: String
        public var strategy: String
        public var reason: String
        public var matchedBlocks: Int
        public var estimatedTtftMs: Double?

        public init(
            role: String, workerId: String, address: String, group: String, strategy: String, reason: String,
            matchedBlocks: Int, estimatedTtftMs: Double?
        ) {
            self.role = role
            self.workerId = workerId
            self.address = address
            self.group = group
            self.strategy = strategy
            self.reason = reason
            self.matchedBlocks = matchedBlocks
            self.estimatedTtftMs = estimatedTtftMs
        }
    }

    public var requestId: String
    public var model: String
    public var targets: [Target]
    public var arm: String?
    public var estimatedTtftMs: Double
    /// Hands the reservations back: `POST /v1/release`.
    public var releaseToken: String
    public var promptBlocks: Int
    /// True when a follower decided alone because no leader was reachable (`fail_open`).
    public var degraded: Bool
    /// The node that decided.
    public var decidedBy: UInt64

    public init(
        requestId: String, model: String, targets: [Target], arm: String?, estimatedTtftMs: Double, releaseToken: String,
        promptBlocks: Int, degraded: Bool, decidedBy: UInt64
    ) {
        self.requestId = requestId
        self.model = model
        self.targets = targets
        self.arm = arm
        self.estimatedTtftMs = estimatedTtftMs
        self.releaseToken = releaseToken
        self.promptBlocks = promptBlocks
        self.degraded = degraded
        self.decidedBy = decidedBy
    }
}

/// `POST /v1/release`.
public struct ReleaseRequest: Codable, Sendable, Hashable {
    public var releaseToken: String
    /// How the request ended, for the workers' circuit breakers: ok, client_error (4xx),
    /// server_error (5xx), connect_error or timeout.
    public var outcome: String?
    /// The worker the outcome is about (default: every target of the decision).
    public var workerId: String?

    public init(releaseToken: String, outcome: String? = nil, workerId: String? = nil) {
        self.releaseToken = releaseToken
        self.outcome = outcome
        self.workerId = workerId
    }
}

public struct ReleaseResponse: Codable, Sendable, Hashable {
    public var released: Int

    public init(released: Int) { self.released = released }
}
