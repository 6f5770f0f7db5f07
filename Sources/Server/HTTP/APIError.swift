public import Cluster
import Foundation
public import Hummingbird

/// An API error rendered as `{"error": {"code", "message", …}}` with a fitting status.
public struct APIError: Error, HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public let field: String?
    public let leaderID: UInt64?
    public let leaderPeerAddress: String?

    init(
        _ status: HTTPResponse.Status, code: String, _ message: String, field: String? = nil,
        leaderID: UInt64? = nil, leaderPeerAddress: String? = nil
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.leaderID = leaderID
        self.leaderPeerAddress = leaderPeerAddress
    }

    static func badRequest(field: String, _ message: String) -> APIError {
        APIError(.badRequest, code: "invalid_request", "\(field): \(message)", field: field)
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
            leaderPeerAddress: error.leaderAddress?.description
        )
    }

    struct Body: Encodable {
        struct Detail: Encodable {
            var code: String
            var message: String
            var field: String?
            var leaderId: UInt64?
            var leaderPeerAddress: String?
        }

        var error: Detail
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = Body(error: .init(code: code, message: message, field: field, leaderId: leaderID, leaderPeerAddress: leaderPeerAddress))
        var response = try context.responseEncoder.encode(body, from: request, context: context)
        response.status = status
        return response
    }
}
