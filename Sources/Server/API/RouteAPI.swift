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
    let scheduler: FlexLBScheduler

    func addRoutes(to router: RouterGroup<FulcrumRequestContext>) {
        router.post("v1/route") { request, context -> Response in
            var request = request
            let body = try await request.decodeJSON(RouteRequest.self, context: context)
            // A follower forwards the client's bytes as they came (already buffered): the
            // leader validates them again, and re-encoding cost every forwarded request.
            let original = try await request.collectBody(upTo: context.maxUploadSize)
            switch try await link.route(try body.routingRequest(), headers: request.headers, original: original) {
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
        let info = MasterInfo(
            realMasterHost: endpoint.map(hostPort) ?? "", workerSummary: summary.isEmpty ? nil : summary,
            ready: endpoint != nil && AdminAPI.unreadiness(leadership, leaderEndpoint: endpoint) == nil, leaderId: leadership.leader ?? 0,
            term: leadership.term, isMaster: leadership.isLeader, nodeId: link.node.id
        )
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(data: try FulcrumJSON.verbatimEncoder.encode(info)))
        )
    }

    /// RTP-LLM frontends' HTTP-era schedule request. `request_id` may be a number or a string.
    struct ScheduleRequest: Decodable {
        var requestId: FlexibleID
        var model: String?
        var blockCacheKeys: [Int64]?
        var seqLen: Int64
        var generateTimeout: Int64?
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

    /// FlexLB's HTTP-era answer: a decision with 200, a scheduling failure with HTTP 500 and
    /// the code in FlexLB's `Response` body.
    private func schedule(_ body: ScheduleRequest, request: Request, context: FulcrumRequestContext) async throws -> Response {
        let scheduling = FlexLBScheduler.Request(
            requestID: body.requestId.text, model: body.model ?? "", blockCacheKeys: body.blockCacheKeys ?? [], seqLen: body.seqLen,
            generateTimeout: body.generateTimeout ?? 0
        )
        do {
            let decision = try await scheduler.schedule(scheduling, headers: request.headers)
            let response = ScheduleResponse(
                success: true, code: FlexLBScheduler.Code.ok, errorMessage: "", realMasterHost: decision.realMasterHost,
                serverStatus: decision.servers, releaseToken: decision.releaseToken
            )
            return try context.responseEncoder.encode(response, from: request, context: context)
        } catch let failure as FlexLBScheduler.Failure {
            let refusal = ScheduleResponse(
                success: false, code: failure.code, errorMessage: failure.message, realMasterHost: failure.realMasterHost, serverStatus: []
            )
            var response = try context.responseEncoder.encode(refusal, from: request, context: context)
            response.status = .internalServerError
            return response
        }
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
