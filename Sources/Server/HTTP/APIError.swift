import Balancer
import Cluster
import Foundation
public import Hummingbird
import Serving
import FulcrumAPI

/// An API error rendered in OpenAI's shape (``ErrorBody``) with a fitting status.
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
        let body = ErrorBody(error: .init(
            code: code, message: message, type: ErrorBody.Detail.type(forStatus: Int(status.code)), field: field,
            leaderId: leaderID, leaderPeerAddress: leaderPeerAddress
        ))
        var response = try context.responseEncoder.encode(body, from: request, context: context)
        response.status = status
        if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
        return response
    }
}

/// Every error leaves in OpenAI's shape: Hummingbird's own — an unknown path, a wrong method, a
/// body it could not read — are rewritten as ``APIError``; anything else becomes a 500 whose
/// message does not leak internals (the error is logged).
struct ErrorShapeMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any HTTPResponseError {
            throw Self.shaped(error)
        } catch is DecodingError {
            throw APIError(.badRequest, code: "invalid_request", "the body could not be decoded", field: "body")
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            throw APIError(.internalServerError, code: "internal_error", "internal error")
        }
    }

    /// Any error that renders itself, as an ``APIError`` (which renders in OpenAI's shape).
    static func shaped(_ error: any HTTPResponseError) -> APIError {
        switch error {
        case let error as APIError: error
        case let error as HTTPError: APIError(error.status, code: code(for: error.status), error.body ?? error.status.reasonPhrase)
        default: APIError(error.status, code: code(for: error.status), error.status.reasonPhrase)
        }
    }

    static func code(for status: HTTPResponse.Status) -> String {
        switch status.code {
        case 400: "invalid_request"
        case 401: "unauthorized"
        case 403: "forbidden"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 413: "body_too_large"
        case 429: "rate_limited"
        default: "http_\(status.code)"
        }
    }
}
