import FlexLBProtocol
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTPTypes
import Logging
import ServiceLifecycle

/// rtp-llm's `FlexlbService` over gRPC, as current frontends call it
/// (`rtp_llm/server/master_client.py`: the master's HTTP port + 2). Every node serves it; a
/// follower's schedules are decided by the leader (through ``LeaderLink``, which waits for a
/// leader and retries where FlexLB would answer 8511 at once).
struct FlexLBGRPCService: FlexlbService.SimpleServiceProtocol {
    let scheduler: FlexLBScheduler
    let security: SecuritySettings

    /// With API keys set, the request's `api_key` must allow routing (the HTTP listener's
    /// access middleware does not see gRPC).
    private func admits(_ apiKey: String) -> Bool {
        security.apiKeys.isEmpty || security.key(apiKey)?.allows(.route) == true
    }

    func schedule(request: FlexlbScheduleRequestPB, context: ServerContext) async throws -> FlexlbScheduleResponsePB {
        var response = FlexlbScheduleResponsePB()
        let requestID = String(request.requestID)
        guard admits(request.apiKey) else {
            response.success = false
            response.code = 401
            response.errorMessage = "UNAUTHORIZED: api_key is missing or does not allow routing"
            return response
        }
        let input = FlexLBScheduler.Request(
            requestID: requestID, model: request.model, blockCacheKeys: request.blockCacheKeys, seqLen: request.seqLen,
            generateTimeout: request.generateTimeout
        )
        do {
            let decision = try await scheduler.schedule(input, headers: Self.headers(request.apiKey))
            response.success = true
            response.code = Int32(FlexLBScheduler.Code.ok)
            response.realMasterHost = decision.realMasterHost
            response.enqueuedByMaster = false
            response.serverStatus = decision.servers.map { server in
                var status = FlexlbServerStatusPB()
                status.role = server.role
                status.serverIp = server.serverIp
                status.httpPort = Int32(clamping: server.httpPort)
                status.grpcPort = Int32(clamping: server.grpcPort)
                return status
            }
            response.lifecycle = Self.lifecycle(request.requestID, .requestStateAcknowledged)
        } catch let failure as FlexLBScheduler.Failure {
            response.success = false
            response.code = Int32(failure.code)
            response.errorMessage = failure.message
            response.realMasterHost = failure.realMasterHost
            response.lifecycle = Self.lifecycle(request.requestID, .requestStateFailed)
        } catch let error as APIError {
            response.success = false
            response.code = Int32(FlexLBScheduler.Code.invalidRequest)
            response.errorMessage = "INVALID_REQUEST: \(error.field.map { "\($0): " } ?? "")\(error.message)"
        }
        return response
    }

    /// Ends the reservation of a schedule this node answered (upstream main leaves `Cancel`
    /// unimplemented; this follows the feature branch's `{found, lifecycle}`).
    func cancel(request: FlexlbCancelRequestPB, context: ServerContext) async throws -> FlexlbCancelResponsePB {
        var response = FlexlbCancelResponsePB()
        guard let state = await scheduler.cancel(requestID: String(request.requestID), headers: [:]) else { return response }
        response.found = true
        response.lifecycle = Self.lifecycle(request.requestID, Self.requestState(state))
        return response
    }

    func getRequestState(request: GetRequestStateRequestPB, context: ServerContext) async throws -> GetRequestStateResponsePB {
        var response = GetRequestStateResponsePB()
        guard let state = scheduler.schedules.state(of: String(request.requestID)) else { return response }
        response.found = true
        response.lifecycle = Self.lifecycle(request.requestID, Self.requestState(state))
        return response
    }

    static func requestState(_ state: ScheduleBook.State) -> RequestStatePB {
        switch state {
        case .acknowledged: .requestStateAcknowledged
        case .cancelled: .requestStateCancelled
        case .completed: .requestStateCompleted
        }
    }

    static func lifecycle(_ requestID: Int64, _ state: RequestStatePB) -> RequestLifecyclePB {
        var lifecycle = RequestLifecyclePB()
        lifecycle.requestID = requestID
        lifecycle.state = state
        return lifecycle
    }

    /// The request's `api_key` as the HTTP API's bearer key, so forwarding keeps it.
    static func headers(_ apiKey: String) -> HTTPFields {
        var headers = HTTPFields()
        if !apiKey.isEmpty { headers[.authorization] = "Bearer \(apiKey)" }
        return headers
    }
}

/// The gRPC listener as a service of the node.
struct FlexLBGRPCServer: Service {
    let host: String
    let port: Int
    let service: FlexLBGRPCService
    let logger: Logger

    func run() async throws {
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: host, port: port), transportSecurity: .plaintext),
            services: [service]
        )
        logger.info("FlexLB gRPC (FlexlbService) on \(host):\(port)")
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}
