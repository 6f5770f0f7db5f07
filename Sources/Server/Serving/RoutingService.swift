import AsyncHTTPClient
import Balancer
import Cluster
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Serving

/// Routing decisions from any node. The leader decides on its own state with its router; a
/// follower forwards to the leader; with no reachable leader a follower either decides alone
/// on its replicated state (`fail_open`, marked degraded) or answers 503 with `Retry-After`.
struct RoutingService: Sendable {
    let link: LeaderLink
    let sync: StatusSync
    let settings: ServingSettings
    let metrics: ServerMetrics
    let logger: Logger

    var node: ClusterNode<BalancerMachine> { link.node }

    /// A decision made here, or the leader's answer relayed as it is.
    enum Placement: Sendable {
        case decided(RouteResponseBody)
        case relayed(LeaderLink.Answer)
    }

    private enum Attempt: Sendable {
        case decided(RoutingDecision, epoch: UInt32)
        case refused(BalancerError)
        case follower(leader: UInt64?, endpoint: String?)
    }

    func place(_ body: RouteRequestBody, headers: HTTPFields) async throws -> Placement {
        var body = body
        if body.requestId == nil { body.requestId = UUID().uuidString }
        let request = try body.routingRequest()
        let started = ContinuousClock.now
        // Without a reachable leader (an election, say) a follower waits up to leader_wait_ms
        // for one before failing open or answering 503: a request that reaches no worker
        // should not fail because of a few hundred milliseconds without a leader.
        let deadline = ContinuousClock.now + .milliseconds(settings.leaderWaitMilliseconds)
        var lastLeader: UInt64?
        while true {
            let attempt = await node.withMachine { machine, leadership -> Attempt in
                guard leadership.isLeader else {
                    return .follower(leader: leadership.leader, endpoint: leadership.leader.flatMap { machine.state.nodeEndpoints[$0] })
                }
                machine.prepareToRoute(asLeaderOf: leadership.term)
                do throws(BalancerError) {
                    return .decided(try machine.route(request), epoch: machine.routerEpoch)
                } catch {
                    return .refused(error)
                }
            }
            switch attempt {
            case .decided(let decision, let epoch):
                count(decision, duration: .now - started)
                return .decided(RouteResponseBody(decision, token: ReleaseToken(node: node.id, epoch: epoch, token: decision.releaseToken), degraded: false))
            case .refused(let error):
                metrics.routingError(model: request.model, code: error.code.rawValue)
                throw APIError(error)
            case .follower(let leader, let endpoint):
                if headers[.fulcrumForwarded] != nil {
                    throw APIError.noLeader("this node is not the leader any more (node \(leader.map(String.init) ?? "none") is)")
                }
                lastLeader = leader
                if let endpoint {
                    do {
                        let encoded = try JSONEncoder.snakeCase.encode(body)
                        let answer = try await link.forward(
                            to: endpoint, method: .post, path: "/v1/route", body: ByteBuffer(bytes: encoded), headers: headers
                        )
                        // A leader that stepped down in the meantime refuses before deciding
                        // anything, so asking the next leader cannot route the request twice.
                        guard answer.isNoLeader else { return .relayed(answer) }
                        logger.debug("the leader at \(endpoint) stepped down; waiting for the next one")
                    } catch {
                        metrics.forwardFailures.increment()
                        logger.warning("forwarding to the leader at \(endpoint) failed: \(error)")
                    }
                }
            }
            guard ContinuousClock.now < deadline else { break }
            try await Task.sleep(for: .milliseconds(25))
        }
        guard settings.failOpen else {
            throw APIError.noLeader(lastLeader == nil ? "no leader is known" : "the leader (node \(lastLeader!)) is not reachable")
        }
        return .decided(try await placeDegraded(request))
    }

    /// Decides on this follower's replicated state. Its prefixes and bindings are not proposed
    /// (a follower cannot); its router remembers them for its next degraded decisions.
    private func placeDegraded(_ request: RoutingRequest) async throws -> RouteResponseBody {
        let started = ContinuousClock.now
        let result = await node.withMachine { machine, _ -> Result<(RoutingDecision, UInt32), BalancerError> in
            do throws(BalancerError) {
                let decision = try machine.route(request)
                _ = machine.router.takePendingCommand()
                return .success((decision, machine.routerEpoch))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let (decision, epoch)):
            metrics.degradedRoutes.increment()
            count(decision, duration: .now - started)
            return RouteResponseBody(decision, token: ReleaseToken(node: node.id, epoch: epoch, token: decision.releaseToken), degraded: true)
        case .failure(let error):
            metrics.routingError(model: request.model, code: error.code.rawValue)
            throw APIError(error)
        }
    }

    private func count(_ decision: RoutingDecision, duration: Duration) {
        metrics.decisionDuration(model: decision.model, duration)
        for target in decision.targets {
            metrics.decision(model: decision.model, role: target.role.name, strategy: target.strategy.name, reason: target.reason.rawValue)
        }
    }

    /// Releases a decision's reservations and counts its outcome against the workers'
    /// circuits. Returns how many reservations were released.
    func release(_ body: ReleaseRequestBody, headers: HTTPFields) async throws -> Int {
        guard let token = ReleaseToken(body.releaseToken) else {
            throw APIError.badRequest(field: "release_token", "expected node.epoch.token as returned by /v1/route")
        }
        let outcome = try body.outcome.map { text in
            guard let outcome = UpstreamOutcome(rawValue: text) else {
                throw APIError.badRequest(field: "outcome", "one of \(UpstreamOutcome.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return outcome
        }
        if token.node == node.id {
            let (released, leadership) = await node.withMachine { machine, leadership in
                guard machine.routerEpoch == token.epoch else { return ([Reservation](), leadership) }
                return ((try? machine.router.release(token: token.token)) ?? [], leadership)
            }
            if leadership.isLeader, let outcome {
                let workers = body.workerId.map { [$0] } ?? released.map(\.workerID)
                for worker in Set(workers) { await sync.record(outcome, workerID: worker, term: leadership.term) }
            }
            guard !released.isEmpty else {
                throw APIError(.notFound, code: "unknown_reservation", "no reservation \(token) here (released already, expired, or from an earlier leadership)", field: "release_token")
            }
            return released.count
        }
        let (leadership, endpoint) = await link.leaderEndpoint()
        if leadership.isLeader || headers[.fulcrumForwarded] != nil {
            if leadership.isLeader, let outcome, let worker = body.workerId {
                await sync.record(outcome, workerID: worker, term: leadership.term)
            }
            throw APIError(.notFound, code: "unknown_reservation", "reservation \(token) was made by node \(token.node), not by the leader; it expires on its own", field: "release_token")
        }
        guard let endpoint else { throw APIError.noLeader() }
        let encoded = try JSONEncoder.snakeCase.encode(body)
        let response = try await link.forward(to: endpoint, method: .post, path: "/v1/release", body: ByteBuffer(bytes: encoded), headers: headers)
        let buffer = response.body
        guard response.status == .ok, let answer = try? JSONDecoder.snakeCase.decode(ReleaseResponseBody.self, from: Data(buffer.readableBytesView)) else {
            let detail = try? JSONDecoder.snakeCase.decode(APIError.Body.self, from: Data(buffer.readableBytesView))
            throw APIError(response.status, code: detail?.error.code ?? "release_failed", detail?.error.message ?? "the leader answered \(response.status.code)", field: detail?.error.field)
        }
        return answer.released
    }
}

extension JSONEncoder {
    static var snakeCase: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

extension JSONDecoder {
    static var snakeCase: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
