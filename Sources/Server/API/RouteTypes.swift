import Balancer
import Foundation
public import Hummingbird
import Serving
public import FulcrumAPI

extension RouteRequest {
    /// The balancer's request. Only the JSON's own shape is checked here (one prompt form,
    /// token ids, role names); the ranges are ``RoutingRequest/validate()``'s, checked where every
    /// entry point meets (``LeaderLink/route(_:headers:)``). Errors name the field.
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
        // Checked before a GeoLocation exists: it clamps what it is given.
        if let location, !((-90...90).contains(location.latitude) && (-180...180).contains(location.longitude)) {
            throw APIError.badRequest(field: "location", "latitude must be in [-90, 90] and longitude in [-180, 180]")
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
        request.holdMilliseconds = holdMs
        return request
    }

}

extension RouteRequest {
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
        holdMs = request.holdMilliseconds
    }
}

extension RouteResponse: ResponseEncodable {
    init(_ decision: RoutingDecision, token: ReleaseToken, degraded: Bool) {
        self.init(
            requestId: decision.requestID, model: decision.model, targets: [], arm: decision.arm,
            estimatedTtftMs: decision.estimatedTTFTMilliseconds, releaseToken: token.description,
            promptBlocks: decision.promptBlocks, degraded: degraded, decidedBy: token.node
        )
        targets = decision.targets.map {
            Target(
                role: $0.role.name, workerId: $0.workerID, address: $0.address, group: $0.group, strategy: $0.strategy.name,
                reason: $0.reason.rawValue, matchedBlocks: $0.matchedBlocks, estimatedTtftMs: $0.estimatedTTFTMilliseconds
            )
        }
    }
}

extension ReleaseResponse: ResponseEncodable {}
