public import AsyncHTTPClient
import Balancer
public import Cluster
import Foundation
public import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
public import ServiceLifecycle
public import Serving
import FulcrumAPI

/// One node's HTTP face: every API on one router, the access and metrics middleware, the
/// leader's status sync, and the HTTP listener (plain or TLS, with header and idle timeouts).
public struct FulcrumServer: Sendable {
    public let node: ClusterNode<BalancerMachine>
    public let serving: ServingSettings
    public let security: SecuritySettings
    public let metrics: ServerMetrics
    public let proposer: CommandProposer
    public let duties: LeaderDuties
    public let routing: RoutingService
    public let client: HTTPClient
    /// Reads workers' status for the duties; its rtp-llm connections close with the duties.
    let prober: HTTPWorkerProber
    public let clock: ClusterClock
    /// The keys this node presents to engines started with `--api-key`.
    public let engineKeys: EngineKeys
    /// FlexLB's Schedule, shared by `/rtp_llm/schedule` and the gRPC `FlexlbService`.
    let flexLB: FlexLBScheduler
    /// Routes a build adds to every node's API (the fault-injection test build's `/admin/fault`).
    public let extensions: [ServerExtension]
    let logger: Logger

    /// `clock` is the node's machine's clock.
    public init(
        node: ClusterNode<BalancerMachine>, clock: ClusterClock, serving: ServingSettings, security: SecuritySettings,
        engineKeys: EngineKeys = .none, extensions: [ServerExtension] = [], logger: Logger
    ) {
        self.engineKeys = engineKeys
        self.node = node
        self.extensions = extensions
        self.clock = clock
        self.serving = serving
        self.security = security
        self.logger = logger
        metrics = ServerMetrics()
        client = HTTPClient.makeServingClient(settings: serving)
        let observed = metrics
        node.events.observe { observed.record($0) }
        proposer = CommandProposer(node: node, clock: clock, metrics: metrics)
        let schedules = ScheduleBook()
        prober = HTTPWorkerProber(client: client, clock: clock, keys: engineKeys)
        duties = LeaderDuties(
            proposer: proposer, clock: clock, settings: serving, metrics: metrics,
            prober: prober, logger: logger, requestsFinished: { schedules.complete($0) }
        )
        routing = RoutingService(node: node, duties: duties, settings: serving, metrics: metrics, logger: logger)
        flexLB = FlexLBScheduler(
            link: LeaderLink(routing: routing, client: client, settings: serving, metrics: metrics), settings: serving, schedules: schedules
        )
    }

    public func makeRouter() -> Hummingbird.Router<FulcrumRequestContext> {
        let router = Hummingbird.Router(context: FulcrumRequestContext.self)
        let node = node
        router.add(middleware: MetricsMiddleware(metrics: metrics))
        router.add(middleware: ErrorShapeMiddleware())
        router.add(middleware: AccessMiddleware(settings: security, metrics: metrics) { address in
            let members = await node.status().members
            return members.contains { splitHostPort($0.address).0 == address }
        })
        let link = flexLB.link
        // Every route belongs to a group that names the scope its callers need (checked after
        // matching, so no spelling of a path changes it); only the probes need none.
        let serverMetrics = metrics
        func scoped(_ scope: SecuritySettings.Scope) -> RouterGroup<FulcrumRequestContext> {
            router.group().add(middleware: RequireScope(scope: scope, metrics: serverMetrics))
        }
        let admin = scoped(.admin)
        let admitted = AdminAPI(proposer: proposer, workerNetworks: security.workerNetworks, failOpen: serving.failOpen)
        admitted.addProbes(to: router)
        admitted.addRoutes(to: admin)
        ConfigAPI(proposer: proposer).addRoutes(to: admin)
        WorkerAPI(link: link, duties: duties, proposer: proposer, workerNetworks: security.workerNetworks).addRoutes(to: scoped(.worker))
        let routes = scoped(.route)
        RouteAPI(link: link, settings: serving, scheduler: flexLB).addRoutes(to: routes)
        ProxyAPI(
            link: link, client: client, settings: serving, metrics: metrics, engineKeys: engineKeys,
            tokenizer: Tokenizer(client: client, urls: serving.tokenizerURLs, timeoutMilliseconds: serving.tokenizerTimeoutMilliseconds, metrics: metrics),
            logger: logger
        ).addRoutes(to: routes)
        for added in extensions { added.addRoutes(admin, clock) }
        let metrics = metrics
        scoped(.metrics).get("metrics") { _, _ -> Response in
            let leadership = await node.leadership()
            metrics.term.set(to: Double(leadership.term))
            metrics.isLeader.set(to: leadership.isLeader ? 1 : 0)
            metrics.leader(leadership.leader)
            metrics.commitIndex.set(to: Double(leadership.commitIndex))
            metrics.appliedIndex.set(to: Double(leadership.appliedIndex))
            metrics.raftMessagesDropped(node.droppedMessages.snapshot)
            metrics.peerConnectionsRefused(node.peerRefusals)
            let learner = await node.status().members.contains { $0.id == node.id && !$0.voter }
            metrics.isLearner.set(to: learner ? 1 : 0)
            let workers = await node.withMachine { machine, _ in
                machine.state.workers.map {
                    ServerMetrics.WorkerRow(
                        id: $0.id, model: $0.model, role: $0.role.name, healthy: $0.health != .unhealthy, circuitOpen: $0.circuit == .open,
                        running: $0.load.runningRequests, waiting: $0.load.waitingRequests,
                        kvUsage: $0.load.kvBlocksTotal > 0 ? min(1, Double($0.load.kvBlocksUsed) / Double($0.load.kvBlocksTotal)) : 0
                    )
                }
            }
            metrics.workers(workers)
            var buffer: [UInt8] = []
            metrics.registry.emit(into: &buffer)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: buffer))
            )
        }
        return router
    }

    /// The HTTP listener as a service.
    public func httpService(host: String, port: Int) throws -> any Service {
        let headerTimeout = TimeAmount.milliseconds(Int64(security.headerTimeoutMilliseconds))
        let idleTimeout = TimeAmount.milliseconds(Int64(security.idleTimeoutMilliseconds))
        let bodyTimeout = TimeAmount.milliseconds(Int64(security.bodyTimeoutMilliseconds))
        let metrics = self.metrics
        let connections = ConnectionLimitHandler.Gauge(limit: security.maxConnections) { metrics.connectionsRefused.increment() }
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [
                ConnectionLimitHandler(gauge: connections),
                RequestDeadlineHandler(timeout: headerTimeout, keepAlive: idleTimeout, bodyTimeout: bodyTimeout),
            ],
            idleTimeout: idleTimeout
        )
        let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: "fulcrum")
        if let certificate = security.tlsCertificate, let key = security.tlsKey {
            let tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            )
            return Application(
                router: makeRouter(), server: try .tls(.http1(configuration: http1), tlsConfiguration: tls),
                configuration: configuration, logger: logger
            )
        }
        return Application(router: makeRouter(), server: .http1(configuration: http1), configuration: configuration, logger: logger)
    }

    /// rtp-llm's gRPC `FlexlbService` as a service. With API keys set, a schedule's `api_key`
    /// must hold the `route` scope.
    public func flexLBService(host: String, port: Int) -> any Service {
        FlexLBGRPCServer(host: host, port: port, service: FlexLBGRPCService(scheduler: flexLB, security: security), logger: logger)
    }

    /// The leader's duties as a service; shuts the shared HTTP client down at the end.
    public var dutiesService: some Service { DutiesService(duties: duties, client: client, prober: prober) }
}

struct DutiesService: Service {
    let duties: LeaderDuties
    let client: HTTPClient
    let prober: HTTPWorkerProber

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await duties.run() }
        } catch is CancellationError {
            // Stopped on purpose.
        }
        prober.rtpLLM.shutdown()
        try await client.shutdown()
    }
}

/// Routes that a build of the node adds to the API; production builds add none.
public struct ServerExtension: Sendable {
    public var name: String
    /// Adds the routes to the admin-scoped group.
    public var addRoutes: @Sendable (RouterGroup<FulcrumRequestContext>, ClusterClock) -> Void

    public init(name: String, addRoutes: @escaping @Sendable (RouterGroup<FulcrumRequestContext>, ClusterClock) -> Void) {
        self.name = name
        self.addRoutes = addRoutes
    }
}
