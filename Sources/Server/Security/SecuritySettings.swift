import Serving
import FulcrumAPI
/// Who may call what, how often, and how much: the HTTP listener's protections.
public struct SecuritySettings: Sendable, Equatable {
    /// What a key allows. `admin` allows everything.
    public enum Scope: String, Sendable, Hashable, CaseIterable {
        /// `/v1/route`, `/v1/release`, the OpenAI-compatible proxy, `/rtp_llm/*`.
        case route
        /// Worker register, heartbeat and deregister (what `fulcrum agent` does).
        case worker
        /// `/metrics`.
        case metrics
        /// `/admin/*` and everything above.
        case admin
    }

    public struct APIKey: Sendable, Equatable {
        public var key: String
        public var scopes: Set<Scope>

        public init(key: String, scopes: Set<Scope>) {
            self.key = key
            self.scopes = scopes
        }

        func allows(_ scope: Scope) -> Bool { scopes.contains(.admin) || scopes.contains(scope) }
    }

    /// No keys: every caller is allowed every scope (a development default; see the docs).
    public var apiKeys: [APIKey] = []
    /// Source networks allowed to connect; empty allows all.
    public var allowedNetworks: [CIDR] = []
    /// Networks a registered worker's address must lie in (an IP literal then, no host names),
    /// so a caller with the worker scope cannot point the balancer's polls and proxied traffic
    /// at arbitrary hosts; empty allows any address.
    public var workerNetworks: [CIDR] = []
    /// Requests per second per client (API key, else source address); 0 turns limiting off.
    public var rateLimitPerSecond: Double = 0
    public var rateLimitBurst = 0
    /// Larger bodies get 413. 64 MiB: a chat request with a few base64 images fits (SGLang's
    /// gateway allows 256 MB); the proxy holds a body once and forwards that same buffer.
    public var maxBodyBytes = 64 << 20
    /// A client must send a complete request head within this time of connecting or of its
    /// previous response; slow-header clients are cut off.
    public var headerTimeoutMilliseconds = 10_000
    /// Connections idle this long are closed.
    public var idleTimeoutMilliseconds = 60_000
    /// A request's body must arrive in full within this time of its head.
    public var bodyTimeoutMilliseconds = 30_000
    /// Open HTTP connections at once; one more is closed as it opens.
    public var maxConnections = 10_000
    /// TLS for the HTTP listener (PEM files); both or neither.
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Origins allowed by CORS; empty turns CORS off (the default).
    public var corsOrigins: [String] = []

    public init() {}

    /// The key presented, if it is known.
    func key(_ presented: String) -> APIKey? {
        // Compare every key in full, so the time taken does not tell how much of a key matched.
        var found: APIKey?
        for candidate in apiKeys where constantTimeEquals(candidate.key, presented) { found = candidate }
        return found
    }
}

private func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let left = Array(a.utf8), right = Array(b.utf8)
    var difference = UInt8(truncatingIfNeeded: left.count ^ right.count)
    for index in 0..<max(left.count, right.count) {
        let x = index < left.count ? left[index] : 0
        let y = index < right.count ? right[index] : 0
        difference |= x ^ y
    }
    return difference == 0
}
