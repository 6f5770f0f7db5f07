import Balancer
import Cluster
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Serving
import FulcrumAPI

/// `/v1/route`, `/v1/release`, and the FlexLB-compatible `/rtp_llm/schedule` and
/// `/rtp_llm/master/info`.
struct RouteAPI: Sendable {
    let link: LeaderLink
    let settings: ServingSettings

    func addRoutes(to router: RouterGroup<FulcrumRequestContext>) {
        router.post("v1/route") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(RouteRequest.self, context: context)
            switch try await link.route(try body.routingRequest(), headers: request.headers) {
            case .decided(let answer):
                var response = try context.responseEncoder.encode(answer, from: request, context: context)
                if answer.degraded { response.headers[.fulcrumDegraded] = "1" }
                return response
            case .relayed(let answer):
                return answer.response
            }
        }
        router.post("v1/release") { request, context -> ReleaseResponse in
            var request = request
            let body = try await request.decodeJSON(ReleaseRequest.self, context: context)
            return ReleaseResponse(released: try await link.release(body, headers: request.headers))
        }
        router.post("rtp_llm/schedule") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(ScheduleRequest.self, context: context)
            return try await schedule(body, request: request, context: context)
        }
        // Frontends POST `{}` (host_service.py); GET is kept for people with curl.
        router.post("rtp_llm/master/info") { _, _ in try await masterInfo() }
        router.get("rtp_llm/master/info") { _, _ in try await masterInfo() }
    }

    // MARK: FlexLB compatibility

    /// FlexLB's master info, in its wire names (``FulcrumJSON/verbatimEncoder``).
    private func masterInfo() async throws -> Response {
        let (leadership, endpoint) = await link.leaderEndpoint()
        let summary = await link.node.withMachine { machine, _ in
            var summary: [String: MasterInfo.RoleSummary] = [:]
            for worker in machine.state.workers {
                summary[worker.role.name, default: .init(discovered: 0, alive: 0)].discovered += 1
                if worker.health != .unhealthy { summary[worker.role.name]!.alive += 1 }
            }
            return summary
        }
        let lag = leadership.commitIndex - min(leadership.commitIndex, leadership.appliedIndex)
        let info = MasterInfo(
            realMasterHost: endpoint.map(hostPort) ?? "", workerSummary: summary.isEmpty ? nil : summary,
            ready: leadership.leader != nil && endpoint != nil && lag <= AdminAPI.maxReadyLag, leaderId: leadership.leader ?? 0,
            term: leadership.term, isMaster: leadership.isLeader, nodeId: link.node.id
        )
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(data: try FulcrumJSON.verbatimEncoder.encode(info)))
        )
    }

    /// RTP-LLM frontends' schedule request. `request_id` may be a number or a string.
    struct ScheduleRequest: Decodable {
        var requestId: FlexibleID
        var model: String?
        var blockCacheKeys: [Int64]?
        var seqLen: Int
        var generateTimeout: Int?
        var requestTimeMs: Int64?
    }

    struct FlexibleID: Decodable {
        var text: String
        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let number = try? container.decode(Int64.self) { text = String(number) }
            else { text = try container.decode(String.self) }
        }
    }

    private func schedule(_ body: ScheduleRequest, request: Request, context: FulcrumRequestContext) async throws -> Response {
        if let timeout = body.generateTimeout, timeout < 0 {
            throw APIError.badRequest(field: "generate_timeout", "must not be negative, got \(timeout)")
        }
        let keys = body.blockCacheKeys ?? []
        guard keys.count <= RoutingRequest.maxBlocks else {
            throw APIError.badRequest(field: "block_cache_keys", "at most \(RoutingRequest.maxBlocks) keys, got \(keys.count)")
        }
        guard (0...RoutingRequest.maxTokens).contains(body.seqLen) else {
            throw APIError.badRequest(field: "seq_len", "must be in 0...\(RoutingRequest.maxTokens), got \(body.seqLen)")
        }
        let model = try await resolveModel(body.model)
        let tokensPerBlock = keys.isEmpty ? 16 : max(1, (body.seqLen + keys.count - 1) / keys.count)
        let route = RoutingRequest(
            model: model, requestID: body.requestId.text, prompt: .blocks(keys.map { UInt64(bitPattern: $0) }),
            promptTokens: body.seqLen, tokensPerBlock: tokensPerBlock
        )
        let (_, endpoint) = await link.leaderEndpoint()
        let master = endpoint.map(hostPort) ?? ""
        let answer: RouteResponse
        do {
            switch try await link.route(route, headers: request.headers) {
            case .decided(let decided): answer = decided
            case .relayed(let relayed):
                guard relayed.status == .ok else { return relayed.response }
                answer = try FulcrumJSON.decoder.decode(RouteResponse.self, from: Data(relayed.body.readableBytesView))
            }
        } catch let error as APIError where error.status.code >= 500 || error.status == .notFound {
            // FlexLB answers scheduling failures in the body.
            let failure = ScheduleResponse(
                success: false, code: error.status.code, errorMessage: error.message, realMasterHost: master, serverStatus: []
            )
            var response = try context.responseEncoder.encode(failure, from: request, context: context)
            response.status = .ok
            return response
        }
        let workers = await link.node.withMachine { machine, _ in
            answer.targets.map { machine.state.worker(id: $0.workerId)?.labels ?? [:] }
        }
        let status = zip(answer.targets, workers).map { target, labels in
            let (host, port) = splitHostPort(target.address)
            return ScheduleResponse.ServerStatus(
                role: target.role, serverIp: host, httpPort: port, grpcPort: labels["grpc_port"].flatMap(Int.init) ?? port + 1,
                prefillTime: Int64((target.estimatedTtftMs ?? 0).rounded()), group: target.group
            )
        }
        let response = ScheduleResponse(
            success: true, code: 200, errorMessage: "", realMasterHost: master, serverStatus: status, releaseToken: answer.releaseToken
        )
        return try context.responseEncoder.encode(response, from: request, context: context)
    }

    /// The request's model, else `default_model`, else the only model served.
    private func resolveModel(_ named: String?) async throws -> String {
        if let named, !named.isEmpty { return named }
        if let model = settings.defaultModel { return model }
        let models = await link.node.withMachine { machine, _ in machine.state.models }
        guard models.count == 1 else {
            throw APIError.badRequest(field: "model", "required: the cluster serves \(models.count) models (\(models.joined(separator: ", ")))")
        }
        return models[0]
    }
}

/// `http://host:port` → `host:port`.
func hostPort(_ url: String) -> String {
    url.replacingOccurrences(of: "https://", with: "").replacingOccurrences(of: "http://", with: "")
}

/// `host:port` → (host, port); IPv6 hosts may be bracketed.
func splitHostPort(_ address: String) -> (String, Int) {
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else { return (address, 0) }
    var host = String(address[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port)
}
