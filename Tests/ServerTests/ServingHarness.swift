import AsyncHTTPClient
import Cluster
import Foundation
import FulcrumAPI
import GRPCCore
import GRPCNIOTransportHTTP2
import Hummingbird
import KVEvents
import Logging
import NetworkTestSupport
import NIOCore
import NIOHTTP1
import Raft
import RaftTransport
@testable import Server
@testable import Serving
import ServiceLifecycle
import Simulator

/// A single-node cluster serving HTTP on a loopback port, its status sync running, and
/// simulated engines on their own ports: the serving layer end to end, in one process.
final class ServingHarness: Sendable {
    let node: ClusterNode<BalancerMachine>
    let server: FulcrumServer
    let url: String
    let engines: [SimulatedEngine]
    let engineAddresses: [String]
    let directory: String
    private let tasks: [Task<Void, any Error>]
    private let servers: [RunningServices]
    private let grpcServers: [GRPCServer<HTTP2ServerTransport.Posix>]

    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(2)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    struct Answer: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var text: String
        func decode<Value: Decodable>(_ type: Value.Type) -> Value? { try? FulcrumJSON.decode(type, from: Data(text.utf8)) }
        var errorField: String? { decode(ErrorBody.self)?.error.field }
    }

    init(
        engines engineOptions: [SimulatedEngine.Options], serving: (inout ServingSettings) -> Void = { _ in },
        security: SecuritySettings = SecuritySettings(), tls: Bool = false, rtpLLM: Bool = false, engineKeys: EngineKeys = .none,
        kvEvents: [Int: KVEventPublisher] = [:], enginePorts: [Int: Int] = [:]
    ) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-serving-\(UUID().uuidString)").path
        var ports = freePorts(2 + engineOptions.count)
        for (index, port) in enginePorts { ports[2 + index] = port }
        if rtpLLM {
            // rtp-llm engines also serve gRPC on their HTTP port + 1.
            for index in engineOptions.indices {
                guard let (port, _) = freePortWithNeighbour(offset: 1) else { throw HarnessError("no free port pair") }
                ports[2 + index] = port
            }
        }
        let peer = PeerAddress(host: "127.0.0.1", port: ports[0])
        var settings = NodeSettings(clusterID: "serving", dataDirectory: directory, peerListen: peer, bootstrap: [1: peer], nodeID: 1)
        settings.durability = .normal
        settings.tick = .milliseconds(10)
        let machine = BalancerMachine()
        node = try ClusterNode(settings: settings, machine: machine)
        url = "\(tls ? "https" : "http")://127.0.0.1:\(ports[1])"
        var servingSettings = ServingSettings()
        servingSettings.advertisedURL = url
        servingSettings.statusIntervalMilliseconds = 20
        servingSettings.flushIntervalMilliseconds = 20
        servingSettings.circuitOpenMilliseconds = 300
        serving(&servingSettings)
        var logger = Logger(label: "serving-test")
        logger.logLevel = ProcessInfo.processInfo.environment["FULCRUM_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        server = FulcrumServer(node: node, clock: machine.clock, serving: servingSettings, security: security, engineKeys: engineKeys, logger: logger)
        var tasks: [Task<Void, any Error>] = []
        let node = node
        let server = server
        tasks.append(Task { try await node.run() })
        tasks.append(Task { try await server.duties.run() })
        let http = try server.httpService(host: "127.0.0.1", port: ports[1])
        var servers = [RunningServices([http], logger: logger)]
        engines = engineOptions.enumerated().map { SimulatedEngine(options: $0.element, kvEvents: kvEvents[$0.offset]) }
        engineAddresses = engineOptions.indices.map { "127.0.0.1:\(ports[2 + $0])" }
        for (index, engine) in engines.enumerated() {
            let app = Application(router: engine.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: ports[2 + index])), logger: logger)
            servers.append(RunningServices([app], logger: logger))
        }
        var grpcServers: [GRPCServer<HTTP2ServerTransport.Posix>] = []
        if rtpLLM {
            for (index, engine) in engines.enumerated() {
                let server = RTPLLMEngineService(engine: engine).makeServer(host: "127.0.0.1", port: ports[2 + index] + 1)
                grpcServers.append(server)
                tasks.append(Task { try await server.serve() })
            }
        }
        self.grpcServers = grpcServers
        self.tasks = tasks
        self.servers = servers
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let leads = await node.leadership().isLeader
            var serving = tls
            if !tls { serving = (try? await get("/healthz").status) == 200 }
            if leads, serving {
                var allUp = true
                for address in engineAddresses where (try? await Self.raw("GET", "http://\(address)/health").status) != 200 { allUp = false }
                if allUp { return }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw HarnessError("the node or its engines did not come up")
    }

    func stop() async {
        for server in grpcServers { server.beginGracefulShutdown() }
        for server in servers { await server.stop() }
        for task in tasks { task.cancel() }
        for task in tasks { _ = await task.result }
        server.prober.rtpLLM.shutdown()
        try? await server.client.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `body` against a fresh harness and always stops it, also when `body` throws.
    static func with(
        engines: [SimulatedEngine.Options], serving: (inout ServingSettings) -> Void = { _ in },
        security: SecuritySettings = SecuritySettings(), tls: Bool = false, rtpLLM: Bool = false, engineKeys: EngineKeys = .none,
        kvEvents: [Int: KVEventPublisher] = [:], enginePorts: [Int: Int] = [:], _ body: (ServingHarness) async throws -> Void
    ) async throws {
        let harness = try await ServingHarness(
            engines: engines, serving: serving, security: security, tls: tls, rtpLLM: rtpLLM, engineKeys: engineKeys, kvEvents: kvEvents,
            enginePorts: enginePorts
        )
        do {
            try await body(harness)
        } catch {
            await harness.stop()
            throw error
        }
        await harness.stop()
    }

    /// Registers engine `index` as a worker.
    func register(_ index: Int, id: String? = nil, role: String = "PDFUSION", model: String = "m", labels: [String: String] = [:]) async throws {
        let labelJSON = labels.map { #""\#($0.key)":"\#($0.value)""# }.joined(separator: ",")
        let answer = try await post("/v1/workers", #"{"id":"\#(id ?? "w\(index)")","model":"\#(model)","role":"\#(role)","address":"\#(engineAddresses[index])","labels":{\#(labelJSON)}}"#)
        guard answer.status == 200 else { throw HarnessError("register failed: \(answer.status) \(answer.text)") }
    }

    func get(_ path: String, headers: [(String, String)] = []) async throws -> Answer {
        try await Self.raw("GET", url + path, headers: headers)
    }

    func post(_ path: String, _ body: String, headers: [(String, String)] = []) async throws -> Answer {
        try await Self.raw("POST", url + path, body: body, headers: headers)
    }

    static func raw(_ method: String, _ url: String, body: String? = nil, bytes: [UInt8]? = nil, headers: [(String, String)] = []) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        if let bytes { request.body = .bytes(ByteBuffer(bytes: bytes)) }
        let response = try await client.execute(request, timeout: .seconds(10))
        let collected = try await response.body.collect(upTo: 16 << 20)
        return Answer(status: Int(response.status.code), headers: response.headers, text: String(buffer: collected))
    }

    /// Waits until `condition` holds on the node's replicated state.
    func waitForState(_ what: String, timeout: Double = 10, _ condition: @escaping @Sendable (BalancerMachine) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if await node.withMachine({ machine, _ in condition(machine) }) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw HarnessError("timed out waiting for \(what)")
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
