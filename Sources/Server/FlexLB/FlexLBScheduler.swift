import Balancer
import Foundation
import FulcrumAPI
import HTTPTypes
import Serving
import Synchronization

/// FlexLB's `Schedule`, whether it comes over HTTP (`/rtp_llm/schedule`) or gRPC
/// (`FlexlbService.Schedule`): a routing decision in FlexLB's DIRECT mode, answered with the chosen
/// servers. Followers go through ``LeaderLink``, so a schedule sent to any node is decided by
/// the leader.
struct FlexLBScheduler: Sendable {
    let link: LeaderLink
    let settings: ServingSettings
    /// Release tokens of the schedules this node answered, by request id, for `Cancel` and
    /// `GetRequestState`.
    let schedules: ScheduleBook

    /// FlexLB's error codes (`org.flexlb.dao.loadbalance.StrategyErrorType`).
    enum Code {
        static let ok = 200
        static let noAvailableWorker = 8400
        static let invalidRequest = 8406
        /// FlexLB's answer when a follower could not reach the master.
        static let masterUnreachable = 8511
        static let internalError = 500
    }

    /// What FlexLB's frontends send, either way.
    struct Request: Sendable {
        var requestID: String
        var model: String
        var blockCacheKeys: [Int64]
        var seqLen: Int64
        var generateTimeout: Int64
    }

    struct Decision: Sendable {
        var realMasterHost: String
        var servers: [ScheduleResponse.ServerStatus]
        var releaseToken: String
    }

    /// A failure as FlexLB reports it: a code and a message in the body.
    struct Failure: Error, Sendable {
        var code: Int
        var message: String
        var realMasterHost: String
    }

    /// Checks the request; an invalid one throws ``APIError`` naming the field.
    func validate(_ request: Request) throws -> RoutingRequest {
        // FlexLB refuses request id 0 (proto3's "unset").
        guard !request.requestID.isEmpty, request.requestID != "0" else {
            throw APIError.badRequest(field: "request_id", "required, and not 0")
        }
        guard request.generateTimeout >= 0 else {
            throw APIError.badRequest(field: "generate_timeout", "must not be negative, got \(request.generateTimeout)")
        }
        let keys = request.blockCacheKeys
        guard keys.count <= RoutingRequest.maxBlocks else {
            throw APIError.badRequest(field: "block_cache_keys", "at most \(RoutingRequest.maxBlocks) keys, got \(keys.count)")
        }
        guard (0...Int64(RoutingRequest.maxTokens)).contains(request.seqLen) else {
            throw APIError.badRequest(field: "seq_len", "must be in 0...\(RoutingRequest.maxTokens), got \(request.seqLen)")
        }
        let seqLen = Int(request.seqLen)
        let tokensPerBlock = keys.isEmpty ? 16 : max(1, (seqLen + keys.count - 1) / keys.count)
        var route = RoutingRequest(
            model: request.model, requestID: request.requestID, prompt: .blocks(keys.map { UInt64(bitPattern: $0) }),
            promptTokens: seqLen, tokensPerBlock: tokensPerBlock
        )
        // Frontends never release a schedule: its load counts for a short hold, not 10 minutes.
        route.holdMilliseconds = Milliseconds(settings.flexLBScheduleHoldMilliseconds)
        return route
    }

    /// Decides where the request goes. Invalid input throws ``APIError``; a request that cannot
    /// be scheduled throws ``Failure``.
    func schedule(_ request: Request, headers: HTTPFields) async throws -> Decision {
        var route = try validate(request)
        route.model = try await resolveModel(request.model)
        let (_, endpoint) = await link.leaderEndpoint()
        let master = endpoint.map(hostPort) ?? ""
        let answer: RouteResponse
        do {
            switch try await link.route(route, headers: headers) {
            case .decided(let decided): answer = decided
            case .relayed(let relayed):
                guard relayed.status == .ok else {
                    let detail = try? FulcrumJSON.decoder.decode(ErrorBody.self, from: Data(relayed.body.readableBytesView)).error
                    throw Failure(
                        code: Self.code(status: relayed.status.code, error: detail?.code), message: detail?.message ?? "status \(relayed.status.code)",
                        realMasterHost: master
                    )
                }
                answer = try FulcrumJSON.decoder.decode(RouteResponse.self, from: Data(relayed.body.readableBytesView))
            }
        } catch let error as APIError where error.status.code >= 500 || error.status == .notFound {
            throw Failure(code: Self.code(status: error.status.code, error: error.code), message: error.message, realMasterHost: master)
        }
        let labels = await link.node.withMachine { machine, _ in
            answer.targets.map { machine.state.worker(id: $0.workerId)?.labels ?? [:] }
        }
        let servers = zip(answer.targets, labels).map { target, labels in
            let (host, port) = splitHostPort(target.address)
            return ScheduleResponse.ServerStatus(
                role: target.role, serverIp: host, httpPort: port, grpcPort: labels["grpc_port"].flatMap(Int.init) ?? port + 1,
                prefillTime: Int64((target.estimatedTtftMs ?? 0).rounded()), group: target.group
            )
        }
        schedules.record(request.requestID, token: answer.releaseToken)
        return Decision(realMasterHost: master, servers: servers, releaseToken: answer.releaseToken)
    }

    /// Ends a schedule's reservation (a frontend's `Cancel`); nil when this node answered no
    /// such schedule.
    func cancel(requestID: String, headers: HTTPFields) async -> ScheduleBook.State? {
        guard let token = schedules.cancel(requestID) else { return schedules.state(of: requestID) }
        _ = try? await link.release(ReleaseRequest(releaseToken: token, outcome: UpstreamOutcome.ok.rawValue), headers: headers)
        return .cancelled
    }

    /// FlexLB's code for a Fulcrum refusal.
    static func code(status: Int, error: String?) -> Int {
        switch (status, error) {
        case (_, "no_leader"), (_, "forward_failed"): Code.masterUnreachable
        case (404, _), (503, _), (429, _): Code.noAvailableWorker
        case (400..<500, _): Code.invalidRequest
        default: Code.internalError
        }
    }

    /// The request's model; FlexLB deployments serve one model and frontends send
    /// `engine_service` (or nothing): then the replicated alias `engine_service` names it, else
    /// `default_model`, else the only model served. Other names route as named (aliases
    /// included).
    func resolveModel(_ named: String) async throws -> String {
        if !named.isEmpty && named != "engine_service" { return named }
        let defaultModel = settings.defaultModel
        // The list of models is built only when neither the alias nor the default names one.
        let (chosen, models) = await link.node.withMachine { machine, _ -> (String?, [String]) in
            if let model = machine.state.config.aliases["engine_service"] ?? defaultModel { return (model, []) }
            return (nil, machine.state.models)
        }
        if let chosen { return chosen }
        guard models.count == 1 else {
            throw APIError.badRequest(field: "model", "required: the cluster serves \(models.count) models (\(models.joined(separator: ", ")))")
        }
        return models[0]
    }
}

/// The schedules a node answered, by request id, with their state (bounded: the oldest are
/// forgotten first).
final class ScheduleBook: Sendable {
    enum State: Sendable, Equatable {
        case acknowledged
        case cancelled
        /// The engine of the request's last stage reported it finished (rtp-llm's
        /// `finished_task_list`; known on the leader, which polls the engines).
        case completed
    }

    private struct Book {
        var tokens: [String: (token: String, state: State)] = [:]
        var order: [String] = []
        var head = 0
    }

    private let book = Mutex(Book())
    let capacity: Int

    init(capacity: Int = 100_000) { self.capacity = capacity }

    func record(_ requestID: String, token: String) {
        book.withLock { book in
            if book.tokens.updateValue((token, .acknowledged), forKey: requestID) == nil { book.order.append(requestID) }
            while book.tokens.count > capacity, book.head < book.order.count {
                book.tokens[book.order[book.head]] = nil
                book.head += 1
            }
            if book.head > capacity {
                book.order.removeFirst(book.head)
                book.head = 0
            }
        }
    }

    /// Marks a schedule cancelled; its token when it was live.
    func cancel(_ requestID: String) -> String? {
        book.withLock { book in
            guard let entry = book.tokens[requestID], entry.state == .acknowledged else { return nil }
            book.tokens[requestID] = (entry.token, .cancelled)
            return entry.token
        }
    }

    func state(of requestID: String) -> State? { book.withLock { $0.tokens[requestID]?.state } }

    /// Marks acknowledged schedules completed; ids this node did not answer are ignored.
    func complete(_ requestIDs: [String]) {
        book.withLock { book in
            for id in requestIDs {
                guard let entry = book.tokens[id], entry.state == .acknowledged else { continue }
                book.tokens[id] = (entry.token, .completed)
            }
        }
    }
}
