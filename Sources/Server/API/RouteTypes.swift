import Balancer
import Foundation
import Hummingbird
import Serving

/// `POST /v1/route` (schema in `Docs/api.md` and `Docs/openapi.yaml`).
struct RouteRequestBody: Codable, Sendable {
    struct Location: Codable, Sendable {
        var latitude: Double
        var longitude: Double
    }

    var model: String
    var requestId: String?
    var sessionId: String?
    /// The prompt as text, as token ids, or as chained block hashes: at most one of the three.
    var prompt: String?
    var tokenIds: [Int64]?
    var blockHashes: [BlockHashValue]?
    var promptTokens: Int?
    var tokensPerBlock: Int?
    var maxTokens: Int?
    var roles: [String]?
    var tier: String?
    var priority: Int?
    var location: Location?
    var excludeWorkers: [String]?

    /// The balancer's request. Only the JSON's own shape is checked here (one prompt form,
    /// token ids, role names); the ranges are ``RoutingRequest/validate()``'s. Errors name the field.
    func routingRequest() throws -> RoutingRequest {
        let given = [prompt != nil, tokenIds != nil, blockHashes != nil].filter { $0 }.count
        guard given <= 1 else { throw APIError.badRequest(field: "prompt", "give at most one of prompt, token_ids and block_hashes") }
        var roleList: [WorkerRole] = []
        for (index, name) in (roles ?? []).enumerated() {
            guard let role = WorkerRole(name: name) else {
                throw APIError.badRequest(field: "roles[\(index)]", "unknown role '\(name)'; one of VIT, PREFILL, DECODE, PDFUSION")
            }
            roleList.append(role)
        }
        if let tokenIds, let index = tokenIds.firstIndex(where: { $0 < 0 || $0 > Int64(UInt32.max) }) {
            throw APIError.badRequest(field: "token_ids[\(index)]", "token ids are in 0...\(UInt32.max), got \(tokenIds[index])")
        }
        let promptValue: Prompt = if let prompt { .text(prompt) }
            else if let tokenIds { .tokens(tokenIds.map { UInt32($0) }) }
            else if let blockHashes { .blocks(blockHashes.map(\.value)) }
            else { .none }
        var request = RoutingRequest(
            model: model, requestID: requestId ?? UUID().uuidString, sessionKey: sessionId, prompt: promptValue,
            promptTokens: promptTokens ?? 0, tokensPerBlock: tokensPerBlock ?? 16, expectedOutputTokens: maxTokens ?? 0,
            roles: roleList, tier: tier, priority: priority ?? 0,
            location: location.map { GeoLocation(latitude: $0.latitude, longitude: $0.longitude) }
        )
        request.excludedWorkers = Set(excludeWorkers ?? [])
        do {
            try request.validate()
        } catch {
            throw APIError(error)
        }
        return request
    }

}

extension RouteRequestBody {
    /// The body that asks the leader for the same decision (forwarding).
    init(_ request: RoutingRequest) {
        self.init(model: request.model)
        model = request.model
        requestId = request.requestID
        sessionId = request.sessionKey
        switch request.prompt {
        case .none: break
        case .text(let text): prompt = text
        case .tokens(let tokens): tokenIds = tokens.map(Int64.init)
        case .blocks(let blocks): blockHashes = blocks.map(BlockHashValue.init)
        }
        promptTokens = request.promptTokens
        tokensPerBlock = request.tokensPerBlock
        maxTokens = request.expectedOutputTokens
        roles = request.roles.isEmpty ? nil : request.roles.map(\.name)
        tier = request.tier
        priority = request.priority
        location = request.location.map { Location(latitude: $0.latitude, longitude: $0.longitude) }
        excludeWorkers = request.excludedWorkers.isEmpty ? nil : request.excludedWorkers.sorted()
    }
}

/// A 64-bit block hash in JSON: unsigned, or signed (its bit pattern), as RTP-LLM sends
/// `int64` cache keys.
struct BlockHashValue: Codable, Sendable, Hashable {
    var value: UInt64

    init(_ value: UInt64) { self.value = value }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let unsigned = try? container.decode(UInt64.self) {
            value = unsigned
        } else {
            value = UInt64(bitPattern: try container.decode(Int64.self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// The answer to `/v1/route`.
struct RouteResponseBody: Codable, Sendable {
    struct Target: Codable, Sendable {
        var role: String
        var workerId: String
        var address: String
        var group: String
        var strategy: String
        var reason: String
        var matchedBlocks: Int
        var estimatedTtftMs: Double?
    }

    var requestId: String
    var model: String
    var targets: [Target]
    var arm: String?
    var estimatedTtftMs: Double
    /// Hands the reservations back: `POST /v1/release`.
    var releaseToken: String
    var promptBlocks: Int
    /// True when a follower decided alone because no leader was reachable (`fail_open`).
    var degraded: Bool
    /// The node that decided.
    var decidedBy: UInt64

    init(_ decision: RoutingDecision, token: ReleaseToken, degraded: Bool) {
        requestId = decision.requestID
        model = decision.model
        targets = decision.targets.map {
            Target(
                role: $0.role.name, workerId: $0.workerID, address: $0.address, group: $0.group, strategy: $0.strategy.name,
                reason: $0.reason.rawValue, matchedBlocks: $0.matchedBlocks, estimatedTtftMs: $0.estimatedTTFTMilliseconds
            )
        }
        arm = decision.arm
        estimatedTtftMs = decision.estimatedTTFTMilliseconds
        releaseToken = token.description
        promptBlocks = decision.promptBlocks
        self.degraded = degraded
        decidedBy = token.node
    }
}

/// `POST /v1/release`.
struct ReleaseRequestBody: Codable, Sendable {
    var releaseToken: String
    /// How the request ended, for the workers' circuit breakers: ok, client_error (4xx),
    /// server_error (5xx), connect_error or timeout.
    var outcome: String?
    /// The worker the outcome is about (default: every target of the decision).
    var workerId: String?
}

struct ReleaseResponseBody: Codable, Sendable, ResponseEncodable {
    var released: Int
}
