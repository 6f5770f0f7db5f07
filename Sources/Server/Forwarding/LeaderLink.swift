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

/// How a follower reaches the leader's HTTP API: the leader's endpoint comes from the
/// replicated state (each leader announces its own), requests go over the shared client's
/// kept-alive connections and carry `X-Fulcrum-Forwarded`, so a node never forwards twice.
struct LeaderLink: Sendable {
    let node: ClusterNode<BalancerMachine>
    let client: HTTPClient
    let settings: ServingSettings
    let metrics: ServerMetrics

    /// The leader's id and HTTP endpoint, when known.
    func leaderEndpoint() async -> (leadership: Leadership, endpoint: String?) {
        let own = settings.advertisedURL
        return await node.withMachine { machine, leadership in
            (leadership, leadership.isLeader ? own : leadership.leader.flatMap { machine.state.nodeEndpoints[$0] })
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
