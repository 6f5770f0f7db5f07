import Balancer
import Cluster
import Foundation
public import Hummingbird
import Serving
import FulcrumAPI

/// An API error rendered as `{"error": {"code", "message", "field", …}}` with a fitting status.
public struct APIError: Error, HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public let field: String?
    public let leaderID: UInt64?
    public let leaderPeerAddress: String?
    /// Seconds, sent as `Retry-After`.
    public let retryAfter: Int?

    init(
        _ status: HTTPResponse.Status, code: String, _ message: String, field: String? = nil,
        leaderID: UInt64? = nil, leaderPeerAddress: String? = nil, retryAfter: Int? = nil
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.leaderID = leaderID
        self.leaderPeerAddress = leaderPeerAddress
        self.retryAfter = retryAfter
    }

    public static func badRequest(field: String, _ message: String) -> APIError {
        APIError(.badRequest, code: "invalid_request", "\(field): \(message)", field: field)
    }

    static func noLeader(_ message: String = "no leader is known") -> APIError {
        APIError(.serviceUnavailable, code: "no_leader", message, retryAfter: 1)
    }

    init(_ error: ClusterError) {
        let status: HTTPResponse.Status = switch error.code {
        case .notLeader: .misdirectedRequest
        case .timeout: .gatewayTimeout
        case .dropped: .conflict
        case .rejected: .badRequest
        case .stopped: .serviceUnavailable
        }
        self.init(
            status, code: error.code.rawValue, error.message, leaderID: error.leader,
            leaderPeerAddress: error.leaderAddress?.description, retryAfter: error.code == .stopped ? 1 : nil
        )
    }

    init(_ error: ServingError) {
        switch error {
        case .refused(let refusal): self.init(refusal)
        case .noLeader(let message): self = .noLeader(message)
        }
    }

    /// A routing refusal: bad requests are 400, unknown things 404, no capacity 503.
    init(_ error: BalancerError) {
        let status: HTTPResponse.Status
        var retryAfter: Int?
        switch error.code {
        case .invalidRequest, .invalidConfig: status = .badRequest
        case .unknownModel, .unknownWorker, .unknownReservation: status = .notFound
        case .noWorkerForRole, .allUnhealthy, .allDraining, .allOverCapacity, .noResourceFit:
            status = .serviceUnavailable
            retryAfter = 1
        }
        self.init(status, code: error.code.rawValue, error.message, field: error.field, retryAfter: retryAfter)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = ErrorBody(error: .init(code: code, message: message, field: field, leaderId: leaderID, leaderPeerAddress: leaderPeerAddress))
        var response = try context.responseEncoder.encode(body, from: request, context: context)
        response.status = status
        if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
        return response
    }
}
