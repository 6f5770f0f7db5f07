import Foundation
import HTTPTypes
import Hummingbird
import Serving
import FulcrumAPI

/// Runs first on every request: source allow-list, API key and scope, rate limit, body size
/// limit; then adds security headers (and CORS headers when origins are configured) to every
/// response, errors included.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = FulcrumRequestContext

    let settings: SecuritySettings
    let limiter: RateLimiter?
    let metrics: ServerMetrics
    /// Whether a request with `X-Fulcrum-Forwarded` comes from a cluster node (its rate limit
    /// was applied where the client connected).
    let isClusterNode: @Sendable (String) async -> Bool

    init(settings: SecuritySettings, metrics: ServerMetrics, isClusterNode: @escaping @Sendable (String) async -> Bool) {
        self.settings = settings
        self.metrics = metrics
        self.isClusterNode = isClusterNode
        limiter = settings.rateLimitPerSecond > 0
            ? RateLimiter(rate: settings.rateLimitPerSecond, burst: max(settings.rateLimitBurst, Int(settings.rateLimitPerSecond.rounded(.up))))
            : nil
    }

    static func isProbe(_ path: String) -> Bool { path == "/healthz" || path == "/readyz" }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await admit(request, context: context, next: next)
        } catch let error as any HTTPResponseError {
            // Rendered here so the security headers go on error answers too: in OpenAI's shape.
            response = try ErrorShapeMiddleware<Context>.shaped(error).response(from: request, context: context)
        }
        decorate(&response, request: request)
        return response
    }

    private func admit(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let address = context.remoteAddress?.ipAddress ?? ""
        // Liveness and readiness answer everyone, unthrottled: orchestrators probe them from
        // addresses an allow-list rarely names, and they reveal nothing.
        if Self.isProbe(request.uri.path) { return try await next(request, context) }
        if !settings.allowedNetworks.isEmpty && !settings.allowedNetworks.contains(where: { $0.contains(address) }) {
            metrics.authFailures.increment()
            throw APIError(.forbidden, code: "forbidden_source", "source address \(address) is not in allow_cidrs")
        }
        if request.method == .options && !settings.corsOrigins.isEmpty {
            return Response(status: .noContent)
        }
        // Who is calling is decided here, for every path; what the caller may do is decided by
        // the route that matched (``RequireScope`` on its group), never by the raw path.
        if !settings.apiKeys.isEmpty {
            guard let presented = Self.presentedKey(request) else {
                try throttleFailure(from: address)
                throw APIError(.unauthorized, code: "unauthorized", "an API key is required (Authorization: Bearer KEY)", field: "authorization")
            }
            guard let key = settings.key(presented) else {
                try throttleFailure(from: address)
                throw APIError(.unauthorized, code: "unauthorized", "the API key is not valid", field: "authorization")
            }
            context.apiKey = key.key
            context.grantedScopes = key.scopes
        }
        if let limiter {
            let forwarded = request.headers[.fulcrumForwarded] != nil
            let exempt = forwarded ? await isClusterNode(address) : false
            if !exempt, let wait = limiter.acquire(context.clientIdentity, now: RateLimiter.monotonicNow()) {
                metrics.rateLimited.increment()
                throw APIError(
                    .tooManyRequests, code: "rate_limited",
                    "more than \(settings.rateLimitPerSecond) requests per second", retryAfter: max(1, Int(wait.rounded(.up)))
                )
            }
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > settings.maxBodyBytes {
            throw APIError(.contentTooLarge, code: "body_too_large", "body of \(length) bytes exceeds \(settings.maxBodyBytes)", field: "body")
        }
        var request = request
        if request.method == .post || request.method == .put || request.method == .patch {
            // Buffer the body under the limit (a chunked body has no length to check up front).
            do {
                _ = try await request.collectBody(upTo: settings.maxBodyBytes)
            } catch let error as HTTPError where error.status == .contentTooLarge {
                throw APIError(.contentTooLarge, code: "body_too_large", "body exceeds \(settings.maxBodyBytes) bytes", field: "body")
            }
        }
        return try await next(request, context)
    }

    /// A failed authentication is counted and charged to the source address's bucket, so
    /// guessing keys is throttled like any other traffic (it used to cost nothing).
    private func throttleFailure(from address: String) throws {
        metrics.authFailures.increment()
        if let limiter, let wait = limiter.acquire("ip:" + address, now: RateLimiter.monotonicNow()) {
            metrics.rateLimited.increment()
            throw APIError(
                .tooManyRequests, code: "rate_limited", "too many failed authentications from \(address)",
                retryAfter: max(1, Int(wait.rounded(.up)))
            )
        }
    }

    static func presentedKey(_ request: Request) -> String? {
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2 && parts[0].lowercased() == "bearer" { return String(parts[1]) }
        }
        return request.headers[.xAPIKey]
    }

    private func decorate(_ response: inout Response, request: Request) {
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[.xFrameOptions] = "DENY"
        response.headers[.referrerPolicy] = "no-referrer"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        if settings.tlsCertificate != nil { response.headers[.strictTransportSecurity] = "max-age=31536000" }
        if let origin = request.headers[.origin], settings.corsOrigins.contains(origin) || settings.corsOrigins.contains("*") {
            response.headers[.accessControlAllowOrigin] = origin
            response.headers[.vary] = "Origin"
            response.headers[.accessControlAllowMethods] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
            response.headers[.accessControlAllowHeaders] = "Authorization, Content-Type, X-API-Key, X-Session-ID, X-Request-ID"
        }
    }
}

/// Admits a request to the routes of one group only when its key has the group's scope. It
/// runs after the router matched the request, so the scope is the matched route's: no spelling
/// of a path (`//admin`, `/./admin`, percent-encoding, a trailing slash) reaches an admin route
/// under another route's scope.
struct RequireScope: RouterMiddleware {
    typealias Context = FulcrumRequestContext
    let scope: SecuritySettings.Scope
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let granted = context.grantedScopes, !(granted.contains(.admin) || granted.contains(scope)) {
            metrics.authFailures.increment()
            throw APIError(.forbidden, code: "forbidden_scope", "the API key lacks the '\(scope.rawValue)' scope", field: "authorization")
        }
        return try await next(request, context)
    }
}

/// Counts requests and times them per route pattern.
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = FulcrumRequestContext
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let route = { context.endpointPath ?? "unmatched" }
        do {
            let response = try await next(request, context)
            metrics.httpRequest(route: route(), method: request.method.rawValue, status: response.status.code, duration: .now - start)
            return response
        } catch let error as any HTTPResponseError {
            metrics.httpRequest(route: route(), method: request.method.rawValue, status: error.status.code, duration: .now - start)
            throw error
        }
    }
}

extension HTTPField.Name {
    static let fulcrumForwarded = Self("X-Fulcrum-Forwarded")!
    static let fulcrumDegraded = Self("X-Fulcrum-Degraded")!
    static let fulcrumWorker = Self("X-Fulcrum-Worker")!
    static let fulcrumMatchedBlocks = Self("X-Fulcrum-Matched-Blocks")!
    static let fulcrumPromptBlocks = Self("X-Fulcrum-Prompt-Blocks")!
    static let xAPIKey = Self("X-API-Key")!
    static let xSessionID = Self("X-Session-ID")!
    static let xRequestID = Self("X-Request-ID")!
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let xFrameOptions = Self("X-Frame-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
}
