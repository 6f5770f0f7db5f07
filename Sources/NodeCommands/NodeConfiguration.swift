public import Cluster
import Foundation
public import Raft
public import RaftTransport
import Yams
public import Serving
public import Server
import FulcrumAPI

/// What `fulcrum serve` reads from its YAML file, then from flags and the environment. Every key
/// is checked: an unknown or invalid one stops start-up with an error naming it.
public struct NodeConfiguration: Sendable, Equatable {
    public var clusterID = "fulcrum"
    public var nodeID: NodeID?
    public var dataDirectory = "./data"
    public var peerListen = PeerAddress(host: "127.0.0.1", port: 7100)
    public var peerAdvertise: PeerAddress?
    public var httpListen = PeerAddress(host: "127.0.0.1", port: 8100)
    /// rtp-llm's gRPC `FlexlbService`: `host:port`, or `off`; unset, the HTTP host and port + 2
    /// (where rtp-llm frontends look for it).
    public var flexLBGRPCListen: String?
    /// Founding members; empty for a node that joins an existing cluster.
    public var bootstrap: [NodeID: PeerAddress] = [:]
    public var tickMilliseconds = 20
    public var electionTicks = 10
    public var heartbeatTicks = 2
    public var snapshotEntries = 10_000
    /// The most a node buffers of inbound chunked transfers (large snapshots), all peers together.
    public var peerMaxTransferBytes = 1 << 30
    public var durability = "full"
    /// Mutual TLS between peers: this node's certificate chain, its key, and the cluster's CA.
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var tlsCA: String?
    /// The cluster's shared peer secret (for the HMAC challenge when there is no mutual TLS),
    /// given inline (meant for `FULCRUM_PEER_SECRET`) or as a file.
    public var peerSecret: String?
    public var peerSecretFile: String?
    /// Accept unauthenticated peers on a non-loopback address (a start-up warning says so).
    public var insecurePeers = false
    /// Base URL of this node's HTTP API for other nodes and clients; from `http_listen` when unset.
    public var httpAdvertise: String?
    public var serving = ServingSettings()
    public var security = SecuritySettings()
    /// File of API keys, one per line: `KEY scope[,scope…]` (`#` starts a comment).
    public var apiKeyFile: String?
    /// The keys Fulcrum presents to engines (`labels.api_key_ref` names one): a file of
    /// `NAME KEY` lines, or a directory with a file per name (a mounted Kubernetes Secret).
    public var engineKeysFile: String?
    public var logLevel = "info"

    public init() {}

    public static let keys: Set<String> = [
        "cluster_id", "node_id", "data_dir", "peer_listen", "peer_advertise", "http_listen", "bootstrap",
        "tick_ms", "election_ticks", "heartbeat_ticks", "snapshot_entries", "peer_max_transfer_bytes", "durability", "tls_cert", "tls_key", "tls_ca",
        "peer_secret", "peer_secret_file", "insecure_peers", "flexlb_grpc_listen",
        "http_advertise", "fail_open", "status_interval_ms", "status_timeout_ms", "flush_interval_ms", "healthy_successes",
        "unhealthy_failures", "circuit_failures", "circuit_open_ms", "forward_timeout_ms", "leader_wait_ms", "upstream_connect_timeout_ms",
        "upstream_retries", "upstream_timeout_ms", "default_model", "flexlb_schedule_hold_ms", "engine_cache_interval_ms", "api_keys", "api_key_file", "engine_keys_file", "tokenizers", "tokenizer_timeout_ms", "allow_cidrs", "worker_cidrs", "rate_limit_rps",
        "rate_limit_burst", "max_body_bytes", "header_timeout_ms", "idle_timeout_ms", "body_timeout_ms", "max_connections", "http_tls_cert", "http_tls_key",
        "cors_origins", "log_level", "fault_injection",
    ]

    /// Reads a YAML file of the keys above.
    public static func load(yaml text: String, source: String) throws -> NodeConfiguration {
        var configuration = NodeConfiguration()
        guard let node = try Yams.load(yaml: text) else { return configuration }
        guard let map = node as? [String: Any] else { throw ConfigurationError(source: source, key: "(top level)", "must be a mapping") }
        for key in map.keys.sorted() {
            guard keys.contains(key) else {
                throw ConfigurationError(source: source, key: key, "unknown key; known keys: \(keys.sorted().joined(separator: ", "))")
            }
            try configuration.set(key, value: map[key]!, source: source)
        }
        return configuration
    }

    /// Sets one key from a YAML value, a flag or an environment variable (strings are parsed).
    public mutating func set(_ key: String, value: Any, source: String) throws {
        func fail(_ message: String) -> ConfigurationError { ConfigurationError(source: source, key: key, message) }
        func integer(_ range: ClosedRange<Int>) throws -> Int {
            let parsed = (value as? Int) ?? (value as? String).flatMap { Int($0) }
            guard let parsed, range.contains(parsed) else { throw fail("expected an integer in \(range), got \(value)") }
            return parsed
        }
        func address() throws -> PeerAddress {
            guard let text = value as? String, let parsed = PeerAddress(text) else {
                throw fail("expected host:port, got \(value)")
            }
            return parsed
        }
        func string() throws -> String {
            guard let text = value as? String, !text.isEmpty else { throw fail("expected a non-empty string") }
            return text
        }
        func boolean() throws -> Bool {
            if let flag = value as? Bool { return flag }
            switch (value as? String)?.lowercased() {
            case "true", "yes", "1": return true
            case "false", "no", "0": return false
            default: throw fail("expected true or false, got \(value)")
            }
        }
        func number(_ range: ClosedRange<Double>) throws -> Double {
            let parsed = (value as? Double) ?? (value as? Int).map(Double.init) ?? (value as? String).flatMap { Double($0) }
            guard let parsed, range.contains(parsed) else { throw fail("expected a number in \(range), got \(value)") }
            return parsed
        }
        /// A YAML list, or a comma-separated string from a flag or the environment.
        func list() throws -> [String] {
            if let items = value as? [Any] {
                return try items.map { item in
                    guard let text = item as? String, !text.isEmpty else { throw fail("expected a list of strings, got \(item)") }
                    return text
                }
            }
            guard let text = value as? String else { throw fail("expected a list or a comma-separated string") }
            return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        }
        func networks() throws -> [CIDR] {
            try list().map { text in
                guard let network = CIDR(text) else { throw fail("'\(text)' is not an address or network such as 10.0.0.0/8") }
                return network
            }
        }
        switch key {
        case "cluster_id": clusterID = try string()
        case "node_id": nodeID = NodeID(try integer(1...Int.max))
        case "data_dir": dataDirectory = try string()
        case "peer_listen": peerListen = try address()
        case "peer_advertise": peerAdvertise = try address()
        case "tls_cert": tlsCertificate = try string()
        case "tls_key": tlsKey = try string()
        case "tls_ca": tlsCA = try string()
        case "peer_secret": peerSecret = try string()
        case "peer_secret_file": peerSecretFile = try string()
        case "insecure_peers": insecurePeers = try boolean()
        case "http_listen": httpListen = try address()
        case "flexlb_grpc_listen":
            let text = try string()
            guard text == "off" || PeerAddress(text) != nil else { throw fail("expected host:port or off, got \(text)") }
            flexLBGRPCListen = text
        case "tick_ms": tickMilliseconds = try integer(1...10_000)
        case "election_ticks": electionTicks = try integer(2...10_000)
        case "heartbeat_ticks": heartbeatTicks = try integer(1...10_000)
        case "snapshot_entries": snapshotEntries = try integer(1...100_000_000)
        case "peer_max_transfer_bytes": peerMaxTransferBytes = try integer((1 << 20)...(16 << 30))
        case "http_advertise":
            let text = try string()
            guard text.hasPrefix("http://") || text.hasPrefix("https://"), URL(string: text)?.host != nil else {
                throw fail("expected a base URL such as http://10.0.0.1:8100, got \(text)")
            }
            httpAdvertise = text.hasSuffix("/") ? String(text.dropLast()) : text
        case "fail_open": serving.failOpen = try boolean()
        case "fault_injection": serving.faultInjection = try boolean()
        case "status_interval_ms": serving.statusIntervalMilliseconds = try integer(5...600_000)
        case "status_timeout_ms": serving.statusTimeoutMilliseconds = try integer(1...600_000)
        case "flush_interval_ms": serving.flushIntervalMilliseconds = try integer(5...600_000)
        case "healthy_successes": serving.healthySuccesses = try integer(1...1_000)
        case "unhealthy_failures": serving.unhealthyFailures = try integer(1...1_000)
        case "circuit_failures": serving.circuitFailures = try integer(1...1_000)
        case "circuit_open_ms": serving.circuitOpenMilliseconds = try integer(1...3_600_000)
        case "forward_timeout_ms": serving.forwardTimeoutMilliseconds = try integer(1...600_000)
        case "leader_wait_ms": serving.leaderWaitMilliseconds = try integer(0...600_000)
        case "upstream_connect_timeout_ms": serving.upstreamConnectTimeoutMilliseconds = try integer(1...600_000)
        case "upstream_retries": serving.upstreamRetries = try integer(0...10)
        case "upstream_timeout_ms": serving.upstreamTimeoutMilliseconds = try integer(1...86_400_000)
        case "default_model": serving.defaultModel = try string()
        case "flexlb_schedule_hold_ms": serving.flexLBScheduleHoldMilliseconds = try integer(1...86_400_000)
        case "engine_cache_interval_ms": serving.engineCacheIntervalMilliseconds = try integer(10...600_000)
        case "api_keys":
            security.apiKeys = try apiKeys(value, fail: fail)
        case "api_key_file": apiKeyFile = try string()
        case "engine_keys_file": engineKeysFile = try string()
        case "tokenizer_timeout_ms": serving.tokenizerTimeoutMilliseconds = try integer(1...60_000)
        case "tokenizers":
            // model: URL of its tokenizer (YAML mapping), or model=URL,… from a flag or the environment.
            var urls: [String: String] = [:]
            if let map = value as? [String: Any] {
                for (model, url) in map {
                    guard let url = url as? String else { throw fail("\(model): expected a URL") }
                    urls[model] = url
                }
            } else {
                for item in try list() {
                    let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
                    guard parts.count == 2 else { throw fail("expected model=URL, got \(item)") }
                    urls[parts[0]] = parts[1]
                }
            }
            for (model, url) in urls {
                guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil,
                      url.hasSuffix("/tokenize") else {
                    throw fail("\(model): expected http(s)://HOST:PORT/tokenize (vLLM) or …/v1/tokenize (SGLang), got \(url)")
                }
            }
            serving.tokenizerURLs = urls
        case "allow_cidrs": security.allowedNetworks = try networks()
        case "worker_cidrs": security.workerNetworks = try networks()
        case "rate_limit_rps": security.rateLimitPerSecond = try number(0...1_000_000)
        case "rate_limit_burst": security.rateLimitBurst = try integer(0...10_000_000)
        case "max_body_bytes": security.maxBodyBytes = try integer(1_024...FulcrumRequestContext.maxBodyBytesCeiling)
        case "header_timeout_ms": security.headerTimeoutMilliseconds = try integer(100...600_000)
        case "idle_timeout_ms": security.idleTimeoutMilliseconds = try integer(100...86_400_000)
        case "body_timeout_ms": security.bodyTimeoutMilliseconds = try integer(100...3_600_000)
        case "max_connections": security.maxConnections = try integer(1...1_000_000)
        case "http_tls_cert": security.tlsCertificate = try string()
        case "http_tls_key": security.tlsKey = try string()
        case "cors_origins": security.corsOrigins = try list()
        case "log_level":
            let text = try string()
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(text) else {
                throw fail("expected trace, debug, info, notice, warning, error or critical, got \(text)")
            }
            logLevel = text
        case "durability":
            let text = try string()
            guard text == "full" || text == "normal" else { throw fail("expected full or normal, got \(text)") }
            durability = text
        case "bootstrap":
            bootstrap = [:]
            if let map = value as? [AnyHashable: Any] {
                for (rawID, rawAddress) in map {
                    guard let id = (rawID as? Int).map(NodeID.init) ?? (rawID as? String).flatMap({ NodeID($0) }), id > 0 else {
                        throw fail("member ids must be positive integers, got \(rawID)")
                    }
                    guard let text = rawAddress as? String, let parsed = PeerAddress(text) else {
                        throw fail("member \(id): expected host:port, got \(rawAddress)")
                    }
                    bootstrap[id] = parsed
                }
            } else if let text = value as? String {
                // Flag and environment form: 1=host:port,2=host:port
                for item in text.split(separator: ",") where !item.isEmpty {
                    let parts = item.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2, let id = NodeID(parts[0]), id > 0, let parsed = PeerAddress(String(parts[1])) else {
                        throw fail("expected id=host:port[,id=host:port…], got '\(item)'")
                    }
                    bootstrap[id] = parsed
                }
            } else {
                throw fail("expected a mapping of member id to host:port")
            }
        default:
            throw fail("unknown key")
        }
    }

    /// Checks the combination of keys.
    public func validate() throws {
        if !bootstrap.isEmpty {
            guard let nodeID else {
                throw ConfigurationError(source: "configuration", key: "node_id", "required for a founding member (bootstrap is set)")
            }
            guard bootstrap[nodeID] != nil else {
                throw ConfigurationError(source: "configuration", key: "bootstrap", "does not list this node (\(nodeID))")
            }
        }
        let tlsKeys = [tlsCertificate, tlsKey, tlsCA].filter { $0 != nil }.count
        guard tlsKeys == 0 || tlsKeys == 3 else {
            throw ConfigurationError(source: "configuration", key: "tls_cert", "tls_cert, tls_key and tls_ca go together")
        }
        guard peerSecret == nil || peerSecretFile == nil else {
            throw ConfigurationError(source: "configuration", key: "peer_secret", "give peer_secret or peer_secret_file, not both")
        }
        let authenticated = tlsKeys == 3 || peerSecret != nil || peerSecretFile != nil
        guard authenticated || insecurePeers || Self.isLoopback(peerListen.host) else {
            throw ConfigurationError(
                source: "configuration", key: "peer_listen",
                "\(peerListen) is not a loopback address and peers are not authenticated: set peer_secret_file "
                    + "(or FULCRUM_PEER_SECRET), or tls_cert, tls_key and tls_ca; insecure_peers: true accepts the risk"
            )
        }
        guard (security.tlsCertificate == nil) == (security.tlsKey == nil) else {
            throw ConfigurationError(source: "configuration", key: "http_tls_cert", "http_tls_cert and http_tls_key go together")
        }
        guard serving.statusTimeoutMilliseconds <= max(serving.statusIntervalMilliseconds * 20, 1_000) else {
            throw ConfigurationError(source: "configuration", key: "status_timeout_ms", "must not exceed 20 status intervals (or 1 s)")
        }
        guard heartbeatTicks < electionTicks else {
            throw ConfigurationError(source: "configuration", key: "heartbeat_ticks", "must be below election_ticks (\(electionTicks))")
        }
    }

    /// Where the FlexLB gRPC service listens, or nil when it is off.
    public var flexLBGRPCAddress: PeerAddress? {
        switch flexLBGRPCListen {
        case "off": nil
        case let text?: PeerAddress(text)
        case nil: httpListen.port + 2 <= 65_535 ? PeerAddress(host: httpListen.host, port: httpListen.port + 2) : nil
        }
    }

    /// Whether `host` names only this machine.
    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// What start-up should warn about: settings that are allowed but leave the node open.
    public var startupWarnings: [String] {
        var warnings: [String] = []
        let authenticated = tlsCertificate != nil || peerSecret != nil || peerSecretFile != nil
        if insecurePeers && !authenticated && !Self.isLoopback(peerListen.host) {
            warnings.append("insecure_peers: peers on \(peerListen) are not authenticated; anyone who reaches that port can replace this cluster's state")
        }
        if security.apiKeys.isEmpty && apiKeyFile == nil && !Self.isLoopback(httpListen.host) {
            warnings.append("no API keys: every client that reaches \(httpListen) can route, register workers and administer the cluster (set api_key_file)")
        }
        return warnings
    }

    /// The peer secret from `peer_secret` or `peer_secret_file`.
    public func resolvedPeerSecret() throws -> PeerSecret? {
        let text: String
        if let peerSecret {
            text = peerSecret
        } else if let peerSecretFile {
            do {
                text = try String(contentsOfFile: peerSecretFile, encoding: .utf8)
            } catch {
                throw ConfigurationError(source: peerSecretFile, key: "peer_secret_file", "cannot be read: \(error.localizedDescription)")
            }
        } else {
            return nil
        }
        do {
            return try PeerSecret(text: text)
        } catch {
            throw ConfigurationError(source: peerSecretFile ?? "configuration", key: peerSecretFile == nil ? "peer_secret" : "peer_secret_file", error.description)
        }
    }

    /// Serving settings with the advertised URL filled in.
    public var servingSettings: ServingSettings {
        var settings = serving
        let scheme = security.tlsCertificate == nil ? "http" : "https"
        let host = httpListen.host == "0.0.0.0" || httpListen.host == "::" ? "127.0.0.1" : httpListen.host
        settings.advertisedURL = httpAdvertise ?? "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(httpListen.port)"
        return settings
    }

    /// The engine keys of `engine_keys_file` (none when unset).
    public func engineKeys() throws -> EngineKeys {
        do {
            return try EngineKeys(path: engineKeysFile)
        } catch {
            throw ConfigurationError(source: engineKeysFile ?? "", key: "engine_keys_file", error.description)
        }
    }

    /// Security settings with the keys of `api_key_file` added.
    public func securitySettings() throws -> SecuritySettings {
        var settings = security
        if let apiKeyFile {
            let text: String
            do {
                text = try String(contentsOfFile: apiKeyFile, encoding: .utf8)
            } catch {
                throw ConfigurationError(source: apiKeyFile, key: "api_key_file", "cannot be read: \(error.localizedDescription)")
            }
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0].trimmingCharacters(in: .whitespaces)
                guard !content.isEmpty else { continue }
                let parts = content.split(separator: " ", omittingEmptySubsequences: true)
                let fail = { ConfigurationError(source: "\(apiKeyFile):\(number + 1)", key: "api_key_file", $0) }
                guard parts.count == 2 else { throw fail("expected KEY scope[,scope…]") }
                settings.apiKeys.append(.init(key: String(parts[0]), scopes: try Self.scopes(String(parts[1]), fail: fail)))
            }
        }
        return settings
    }

    static func scopes(_ text: String, fail: (String) -> ConfigurationError) throws -> Set<SecuritySettings.Scope> {
        var scopes = Set<SecuritySettings.Scope>()
        for name in text.split(whereSeparator: { $0 == "," || $0 == "+" }) {
            guard let scope = SecuritySettings.Scope(rawValue: String(name)) else {
                throw fail("unknown scope '\(name)'; one of \(SecuritySettings.Scope.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            scopes.insert(scope)
        }
        guard !scopes.isEmpty else { throw fail("a key needs at least one scope") }
        return scopes
    }

    /// `api_keys`: a YAML list of `{key, scopes}`, or `KEY:scope+scope,KEY:scope` from a flag.
    private func apiKeys(_ value: Any, fail: (String) -> ConfigurationError) throws -> [SecuritySettings.APIKey] {
        if let items = value as? [Any] {
            return try items.enumerated().map { index, item in
                guard let map = item as? [String: Any], let key = map["key"] as? String, key.count >= 16 else {
                    throw fail("item \(index): expected {key: <at least 16 characters>, scopes: [...]}")
                }
                let scopeText = (map["scopes"] as? [Any])?.compactMap { $0 as? String }.joined(separator: ",") ?? (map["scopes"] as? String) ?? ""
                return .init(key: key, scopes: try Self.scopes(scopeText, fail: fail))
            }
        }
        guard let text = value as? String else { throw fail("expected a list of {key, scopes}") }
        return try text.split(separator: ",").map { item in
            let parts = item.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].count >= 16 else { throw fail("expected KEY:scope[+scope] with keys of at least 16 characters") }
            return .init(key: String(parts[0]), scopes: try Self.scopes(String(parts[1]), fail: fail))
        }
    }

    /// The node runtime's settings, the peer secret read.
    public func nodeSettings() throws -> NodeSettings {
        var settings = NodeSettings(
            clusterID: clusterID, dataDirectory: dataDirectory, peerListen: peerListen, bootstrap: bootstrap, nodeID: nodeID
        )
        settings.peerAdvertise = peerAdvertise
        settings.tick = .milliseconds(tickMilliseconds)
        settings.raft.electionTicks = electionTicks
        settings.raft.heartbeatTicks = heartbeatTicks
        settings.snapshotEntries = snapshotEntries
        settings.transport.maxAssembledBytes = peerMaxTransferBytes
        settings.durability = durability == "normal" ? .normal : .full
        if let tlsCertificate, let tlsKey, let tlsCA {
            settings.transport.tls = .init(certificateChain: tlsCertificate, privateKey: tlsKey, trustRoots: tlsCA)
        }
        settings.transport.secret = try resolvedPeerSecret()
        return settings
    }
}

public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let source: String
    public let key: String
    public let message: String

    init(source: String, key: String, _ message: String) {
        self.source = source
        self.key = key
        self.message = message
    }

    public var description: String { "\(source): \(key): \(message)" }
}
