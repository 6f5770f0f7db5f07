import AsyncHTTPClient
import Balancer
import Cluster

import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Serving
import FulcrumAPI

/// How a follower reaches the leader's HTTP API — the one place requests are forwarded: the
/// leader's endpoint comes from the replicated state (each leader announces its own), requests
/// go over the shared client's kept-alive connections and carry `X-Fulcrum-Forwarded`, so a
/// node never forwards twice.
struct LeaderLink: Sendable {
    let routing: RoutingService
    let client: HTTPClient
    let settings: ServingSettings
    let metrics: ServerMetrics

    var node: ClusterNode<BalancerMachine> { routing.node }

    /// The leader's id and HTTP endpoint, when known.
    func leaderEndpoint() async -> (leadership: Leadership, endpoint: String?) {
        await routing.leaderEndpoint()
    }

    /// A routing decision taken here, or the leader's answer relayed as it is.
    enum Routed: Sendable {
        case decided(RouteResponse)
        case relayed(Answer)
    }

    /// Routes `request` here when this node leads (or fails open), else through the leader.
    /// A leader that stepped down before deciding answers `no_leader`, so asking the next one
    /// cannot route the request twice.
    func route(_ request: RoutingRequest, headers: HTTPFields, original: ByteBuffer? = nil) async throws -> Routed {
        do {
            try request.validate()
        } catch {
            throw APIError(error)
        }
        let forwarded = headers[.fulcrumForwarded] != nil
        let deadline = ContinuousClock.now + .milliseconds(settings.leaderWaitMilliseconds)
        var failedLeader: UInt64?
        while true {
            let placement: RoutingService.Placement
            do {
                placement = try await routing.place(request, forwarded: forwarded, deadline: deadline, failedLeader: failedLeader)
            } catch {
                throw APIError(error)
            }
            switch placement {
            case .decided(let decided):
                return .decided(RouteResponse(decided.decision, token: decided.token, degraded: decided.degraded))
            case .forward(let endpoint, let leader):
                do {
                    let body = try original ?? ByteBuffer(bytes: FulcrumJSON.encoder.encode(RouteRequest(request)))
                    let answer = try await forward(to: endpoint, method: .post, path: "/v1/route", body: body, headers: headers)
                    guard answer.isNoLeader else { return .relayed(answer) }
                    routing.logger.debug("the leader at \(endpoint) stepped down; waiting for the next one")
                } catch {
                    metrics.forwardFailures.increment()
                    routing.logger.warning("forwarding to the leader at \(endpoint) failed: \(error)")
                }
                failedLeader = leader
            }
        }
    }

    /// Hands a decision's reservations back, here or through the leader; returns how many.
    func release(_ body: ReleaseRequest, headers: HTTPFields) async throws -> Int {
        guard let token = ReleaseToken(body.releaseToken) else {
            throw APIError.badRequest(field: "release_token", "expected node.epoch.token as returned by /v1/route")
        }
        let outcome = try body.outcome.map { text in
            guard let outcome = UpstreamOutcome(rawValue: text) else {
                throw APIError.badRequest(field: "outcome", "one of \(UpstreamOutcome.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return outcome
        }
        switch await routing.release(token, outcome: outcome, workerID: body.workerId, forwarded: headers[.fulcrumForwarded] != nil) {
        case .released(let count):
            return count
        case .unknown(let message):
            throw APIError(.notFound, code: "unknown_reservation", message, field: "release_token")
        case .noLeader:
            throw APIError.noLeader()
        case .forward(let endpoint):
            let encoded = try FulcrumJSON.encoder.encode(body)
            let response = try await forward(to: endpoint, method: .post, path: "/v1/release", body: ByteBuffer(bytes: encoded), headers: headers)
            let buffer = response.body
            guard response.status == .ok, let answer = try? FulcrumJSON.decoder.decode(ReleaseResponse.self, from: Data(buffer.readableBytesView)) else {
                let detail = try? FulcrumJSON.decoder.decode(ErrorBody.self, from: Data(buffer.readableBytesView))
                throw APIError(response.status, code: detail?.error.code ?? "release_failed", detail?.error.message ?? "the leader answered \(response.status.code)", field: detail?.error.field)
            }
            return answer.released
        }
    }

    /// The leader's answer to a forwarded request, as it came.
    struct Answer: Sendable {
        var status: HTTPResponse.Status
        var headers: HTTPFields
        var body: ByteBuffer

        var response: Response { Response(status: status, headers: headers, body: .init(byteBuffer: body)) }

        /// The node asked is not (or no longer) the leader and refused before doing anything.
        var isNoLeader: Bool {
            status == .serviceUnavailable && body.readableBytesView.firstRange(of: Array(#""code":"no_leader""#.utf8)) != nil
        }
    }

    /// Sends the request to `endpoint` and returns the leader's answer as it is.
    func forward(
        to endpoint: String, method: HTTPRequest.Method, path: String, body: ByteBuffer?, headers: HTTPFields
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = HTTPMethod(rawValue: method.rawValue)
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: HTTPField.Name.fulcrumForwarded.rawName, value: String(node.id))
        for name in [HTTPField.Name.authorization, .xAPIKey, .xRequestID, .xSessionID] {
            if let value = headers[name] { request.headers.add(name: name.rawName, value: value) }
        }
        if let body { request.body = .bytes(body) }
        metrics.forwarded.increment()
        let response = try await client.execute(request, timeout: .milliseconds(Int64(settings.forwardTimeoutMilliseconds)))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        var fields = HTTPFields()
        if let type = response.headers.first(name: "Content-Type") { fields[.contentType] = type }
        if let retry = response.headers.first(name: "Retry-After") { fields[.retryAfter] = retry }
        return Answer(
            status: .init(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase),
            headers: fields, body: bytes
        )
    }

    /// Runs `local` on the leader; on a follower forwards the request to the leader instead.
    /// With no reachable leader: 503 with `Retry-After`.
    func leaderOrForward(
        _ request: Request, body: ByteBuffer?, local: () async throws -> Response
    ) async throws -> Response {
        let (leadership, endpoint) = await leaderEndpoint()
        if leadership.isLeader { return try await local() }
        if request.headers[.fulcrumForwarded] != nil {
            throw APIError.noLeader("this node is not the leader any more (node \(leadership.leader.map(String.init) ?? "none") is)")
        }
        guard let endpoint else {
            metrics.forwardFailures.increment()
            throw APIError.noLeader(leadership.leader == nil ? "no leader is known" : "the leader's endpoint is not known yet")
        }
        do {
            return try await forward(to: endpoint, method: request.method, path: request.uri.description, body: body, headers: request.headers).response
        } catch {
            metrics.forwardFailures.increment()
            throw APIError.noLeader("the leader at \(endpoint) is not reachable: \(error)")
        }
    }
}

extension HTTPClient {
    /// The node's client for workers and the leader: kept-alive pooled connections, no
    /// redirects, no decompression.
    static func makeServingClient(settings: ServingSettings) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .milliseconds(Int64(settings.upstreamConnectTimeoutMilliseconds))),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 4_096)
        )
        configuration.decompression = .disabled
        // A refused connection fails at once, so the proxy can retry on another worker.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}
