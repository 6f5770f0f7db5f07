public import ArgumentParser
import Cluster
import Foundation
import Hummingbird
import Logging
import Synchronization
public import Server
import Serving
import ServiceLifecycle

/// The `fulcrum` command. Its `main` runs in two executables: `fulcrum`, the production node,
/// and `fulcrum-fault-node`, a test build that also has fault injection (``NodeBuild``).
public struct Fulcrum: AsyncParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "fulcrum",
        abstract: "Fulcrum: a Raft-replicated load balancer for LLM inference fleets.",
        subcommands: [Serve.self, Agent.self, Restore.self, Recover.self]
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a cluster node.",
        discussion: """
            Settings come from the YAML file, then from FULCRUM_<KEY> environment variables \
            (e.g. FULCRUM_NODE_ID), then from flags. Keys: \
            \(NodeConfiguration.keys.sorted().joined(separator: ", ")).
            """
    )

    @Option(help: "YAML configuration file.") var config: String?
    @Option(help: "Cluster id; nodes of other clusters are refused.") var clusterID: String?
    @Option(help: "This node's id (required for founding members).") var nodeID: String?
    @Option(help: "Directory for the Raft database.") var dataDir: String?
    @Option(help: "host:port for peer traffic.") var peerListen: String?
    @Option(help: "host:port peers should dial, when not peer-listen.") var peerAdvertise: String?
    @Option(help: "host:port for the HTTP API.") var httpListen: String?
    @Option(help: "Founding members: id=host:port,id=host:port,…") var bootstrap: String?
    @Option(help: "Raft tick in milliseconds.") var tickMs: String?
    @Option(help: "fsync policy: full (default) or normal.") var durability: String?
    @Option(help: "PEM certificate chain for mutual TLS between peers.") var tlsCert: String?
    @Option(help: "PEM private key for mutual TLS between peers.") var tlsKey: String?
    @Option(help: "PEM CA that signs every member's certificate.") var tlsCa: String?
    @Option(help: "File holding the cluster's shared peer secret (at least 16 bytes).") var peerSecretFile: String?
    @Option(help: "Base URL of this node's HTTP API as others reach it.") var httpAdvertise: String?
    @Option(help: "host:port for rtp-llm's gRPC FlexlbService, or off (default: the HTTP port + 2).") var flexlbGrpcListen: String?
    @Option(help: "Route on a follower's state when no leader is reachable (true/false).") var failOpen: String?

    func run() async throws {
        var configuration = NodeConfiguration()
        var security = SecuritySettings()
        var engineKeys = EngineKeys.none
        let nodeSettings: NodeSettings
        do {
            if let config {
                let text = try String(contentsOfFile: config, encoding: .utf8)
                configuration = try NodeConfiguration.load(yaml: text, source: config)
            }
            let environment = ProcessInfo.processInfo.environment
            for key in NodeConfiguration.keys.sorted() {
                if let value = environment["FULCRUM_" + key.uppercased()] {
                    try configuration.set(key, value: value, source: "FULCRUM_" + key.uppercased())
                }
            }
            let flags: [(String, String?)] = [
                ("cluster_id", clusterID), ("node_id", nodeID), ("data_dir", dataDir), ("peer_listen", peerListen),
                ("peer_advertise", peerAdvertise), ("http_listen", httpListen), ("bootstrap", bootstrap),
                ("tick_ms", tickMs), ("durability", durability), ("tls_cert", tlsCert), ("tls_key", tlsKey), ("tls_ca", tlsCa),
                ("peer_secret_file", peerSecretFile), ("flexlb_grpc_listen", flexlbGrpcListen),
                ("http_advertise", httpAdvertise), ("fail_open", failOpen),
            ]
            for (key, value) in flags {
                if let value { try configuration.set(key, value: value, source: "--" + key.replacingOccurrences(of: "_", with: "-")) }
            }
            try configuration.validate()
            security = try configuration.securitySettings()
            engineKeys = try configuration.engineKeys()
            nodeSettings = try configuration.nodeSettings()
        } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        }

        var logger = Logger(label: "fulcrum")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        for warning in configuration.startupWarnings { logger.warning("\(warning)") }
        var extensions: [ServerExtension] = []
        if configuration.serving.faultInjection {
            guard let support = NodeBuild.faultInjection else {
                throw ValidationError("fault_injection: this build has none; it exists only in the test build, fulcrum-fault-node")
            }
            // Before the log is opened, so its files go through the fault VFS.
            try support.install()
            extensions.append(support.routes)
            logger.warning("fault injection is on: /admin/fault can stall, fail or kill this node (never use this in production)")
        }
        let machine = BalancerMachine()
        let node = try ClusterNode(settings: nodeSettings, machine: machine, logger: logger)
        let server = FulcrumServer(
            node: node, clock: machine.clock, serving: configuration.servingSettings, security: security, engineKeys: engineKeys,
            extensions: extensions, logger: logger
        )
        let http = try server.httpService(host: configuration.httpListen.host, port: configuration.httpListen.port)
        var members: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: NodeService(node: node)), .init(service: server.dutiesService), .init(service: http),
        ]
        if let flexLB = configuration.flexLBGRPCAddress {
            members.append(.init(service: server.flexLBService(host: flexLB.host, port: flexLB.port)))
        }
        logger.info("node \(node.id) of cluster \(configuration.clusterID): peers on \(configuration.peerListen), HTTP on \(configuration.httpListen) (\(server.serving.advertisedURL))")
        let services = ServiceGroup(
            configuration: .init(
                services: members,
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await services.run()
    }
}

/// What a test build of the node adds: fault injection (`fault_injection: true`). The
/// production `fulcrum` sets nothing here, so its nodes refuse that setting.
public struct FaultInjectionSupport: Sendable {
    /// Runs before the node opens its log (installs the fault VFS).
    public var install: @Sendable () throws -> Void
    /// The fault routes (`/admin/fault`).
    public var routes: ServerExtension

    public init(install: @escaping @Sendable () throws -> Void, routes: ServerExtension) {
        self.install = install
        self.routes = routes
    }
}

public enum NodeBuild {
    private static let support = Mutex<FaultInjectionSupport?>(nil)

    /// Called by the test build's `main` before the command runs.
    public static func enableFaultInjection(_ value: FaultInjectionSupport) { support.withLock { $0 = value } }

    static var faultInjection: FaultInjectionSupport? { support.withLock { $0 } }
}
