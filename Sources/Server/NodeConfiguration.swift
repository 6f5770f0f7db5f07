public import Cluster
import Foundation
public import Raft
public import RaftTransport
import Yams

/// What `fulcrum serve` reads from its YAML file, then from flags and the environment. Every key
/// is checked: an unknown or invalid one stops start-up with an error naming it.
public struct NodeConfiguration: Sendable, Equatable {
    public var clusterID = "fulcrum"
    public var nodeID: NodeID?
    public var dataDirectory = "./data"
    public var peerListen = PeerAddress(host: "127.0.0.1", port: 7100)
    public var peerAdvertise: PeerAddress?
    public var httpListen = PeerAddress(host: "127.0.0.1", port: 8100)
    /// Founding members; empty for a node that joins an existing cluster.
    public var bootstrap: [NodeID: PeerAddress] = [:]
    public var tickMilliseconds = 20
    public var electionTicks = 10
    public var heartbeatTicks = 2
    public var snapshotEntries = 10_000
    public var durability = "full"
    /// Mutual TLS between peers: this node's certificate chain, its key, and the cluster's CA.
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var tlsCA: String?

    public init() {}

    public static let keys: Set<String> = [
        "cluster_id", "node_id", "data_dir", "peer_listen", "peer_advertise", "http_listen", "bootstrap",
        "tick_ms", "election_ticks", "heartbeat_ticks", "snapshot_entries", "durability", "tls_cert", "tls_key", "tls_ca",
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
        switch key {
        case "cluster_id": clusterID = try string()
        case "node_id": nodeID = NodeID(try integer(1...Int.max))
        case "data_dir": dataDirectory = try string()
        case "peer_listen": peerListen = try address()
        case "peer_advertise": peerAdvertise = try address()
        case "tls_cert": tlsCertificate = try string()
        case "tls_key": tlsKey = try string()
        case "tls_ca": tlsCA = try string()
        case "http_listen": httpListen = try address()
        case "tick_ms": tickMilliseconds = try integer(1...10_000)
        case "election_ticks": electionTicks = try integer(2...10_000)
        case "heartbeat_ticks": heartbeatTicks = try integer(1...10_000)
        case "snapshot_entries": snapshotEntries = try integer(1...100_000_000)
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
        guard heartbeatTicks < electionTicks else {
            throw ConfigurationError(source: "configuration", key: "heartbeat_ticks", "must be below election_ticks (\(electionTicks))")
        }
    }

    public var nodeSettings: NodeSettings {
        var settings = NodeSettings(
            clusterID: clusterID, dataDirectory: dataDirectory, peerListen: peerListen, bootstrap: bootstrap, nodeID: nodeID
        )
        settings.peerAdvertise = peerAdvertise
        settings.tick = .milliseconds(tickMilliseconds)
        settings.raft.electionTicks = electionTicks
        settings.raft.heartbeatTicks = heartbeatTicks
        settings.snapshotEntries = snapshotEntries
        settings.durability = durability == "normal" ? .normal : .full
        if let tlsCertificate, let tlsKey, let tlsCA {
            settings.transport.tls = .init(certificateChain: tlsCertificate, privateKey: tlsKey, trustRoots: tlsCA)
        }
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
