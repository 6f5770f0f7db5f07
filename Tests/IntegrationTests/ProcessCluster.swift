import AsyncHTTPClient
import Foundation
import FulcrumAPI
import NetworkTestSupport
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Real `fulcrum` processes on 127.0.0.1, driven over HTTP and through `fulcrumctl`.
final class ProcessCluster: @unchecked Sendable {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-it-\(UUID().uuidString)").path
    let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var peerPorts: [UInt64: Int] = [:]
    /// Where peers dial a node when its peer traffic goes through a proxy (the nemesis test).
    var advertisedPeerPorts: [UInt64: Int] = [:]
    var httpPorts: [UInt64: Int] = [:]
    /// Each node's rtp-llm gRPC FlexlbService port.
    var flexLBPorts: [UInt64: Int] = [:]
    /// Each node's own address and namespace when they run in a ``NetworkLab``.
    let lab: NetworkLab?
    private let running = Mutex<[UInt64: Process]>([:])
    /// The nodes' processes now, by id (a copy: a nemesis starts and stops them from two tasks).
    var processes: [UInt64: Process] { running.withLock { $0 } }
    let founders: [UInt64]
    var environment: [String: String] = [:]
    /// The cluster secret every test cluster's peers prove they hold.
    static let peerSecret = "integration-test-peer-secret-0123"
    /// Sent with every request (an API key, say).
    var defaultHeaders: [(String, String)] = []

    /// Starts `count` founders, or with `startsLater` nothing until ``start(_:)`` is called (the
    /// caller may first put proxies in front of the peer ports: ``advertisedPeerPorts``).
    /// With `lab`, each node runs in its namespace and listens on its own address there.
    /// A command that runs each node (its program and arguments follow), e.g. `setpriv` to run
    /// it with fewer capabilities.
    let launcher: [String]

    init(
        founders count: Int, snapshotEntries: Int = 10_000, environment extra: [String: String] = [:], startsLater: Bool = false,
        lab: NetworkLab? = nil, launcher: [String] = []
    ) throws {
        founders = (1...UInt64(count)).map { $0 }
        self.lab = lab
        self.launcher = launcher
        environment = extra
        environment["FULCRUM_SNAPSHOT_ENTRIES"] = String(snapshotEntries)
        environment["FULCRUM_DURABILITY"] = extra["FULCRUM_DURABILITY"] ?? "full"
        // Peers authenticate as in production (the shared secret), here too.
        environment["FULCRUM_PEER_SECRET"] = extra["FULCRUM_PEER_SECRET"] ?? Self.peerSecret
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for id in founders { try reservePorts(id) }
        if startsLater { return }
        for id in founders { try start(id) }
    }

    var bootstrap: String {
        founders.map { "\($0)=\(peerAddress($0))" }.joined(separator: ",")
    }
    var endpoints: [String] { httpPorts.keys.sorted().map(endpoint) }
    func endpoint(_ id: UInt64) -> String { "http://\(host(id)):\(httpPorts[id]!)" }
    func host(_ id: UInt64) -> String { lab?.address(id) ?? "127.0.0.1" }
    /// Where peers dial node `id`.
    func peerAddress(_ id: UInt64) -> String { "\(host(id)):\(advertisedPeerPorts[id] ?? peerPorts[id]!)" }

    func reservePorts(_ id: UInt64) throws {
        let ports = freePorts(1)
        peerPorts[id] = ports[0]
        // As rtp-llm frontends expect: FlexLB's gRPC on the HTTP port + 2.
        let (http, flexLB) = freePortWithNeighbour(offset: 2) ?? (freePorts(1)[0], freePorts(1)[0])
        httpPorts[id] = http
        flexLBPorts[id] = flexLB
    }

    /// Starts node `id`; founders bootstrap, others start empty and wait to be added.
    func start(_ id: UInt64) throws {
        let process = Process()
        // Fault injection exists only in the test build of the node.
        let faulty = environment["FULCRUM_FAULT_INJECTION"] == "true"
        let executable = binaries.appendingPathComponent(faulty ? "fulcrum-fault-node" : "fulcrum")
        var arguments = [
            "serve", "--cluster-id", "it", "--node-id", String(id), "--data-dir", "\(root)/node-\(id)",
            "--peer-listen", "\(host(id)):\(peerPorts[id]!)", "--http-listen", "\(host(id)):\(httpPorts[id]!)",
            "--flexlb-grpc-listen", "\(host(id)):\(flexLBPorts[id]!)",
        ]
        if founders.contains(id) { arguments += ["--bootstrap", bootstrap] }
        if advertisedPeerPorts[id] != nil { arguments += ["--peer-advertise", peerAddress(id)] }
        if let lab {
            // `ip netns exec` execs in place: the process is the node (signals reach it).
            process.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
            process.arguments = ["netns", "exec", lab.namespace(id), executable.path] + arguments
        } else if let program = launcher.first {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = Array(launcher.dropFirst()) + [executable.path] + arguments
        } else {
            process.executableURL = executable
            process.arguments = arguments
        }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let log = FileHandle(forWritingAtPath: "\(root)/node-\(id).log") ?? {
            _ = FileManager.default.createFile(atPath: "\(root)/node-\(id).log", contents: nil)
            return FileHandle(forWritingAtPath: "\(root)/node-\(id).log")!
        }()
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        running.withLock { $0[id] = process }
    }

    func kill9(_ id: UInt64) {
        guard let process = running.withLock({ $0.removeValue(forKey: id) }) else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Waits up to `timeout` seconds for node `id` to end by itself; its exit status, or nil
    /// (and the process is left running) when it did not.
    func waitForExit(_ id: UInt64, timeout: Double) async throws -> Int32? {
        guard let process = processes[id] else { return nil }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        guard !process.isRunning else { return nil }
        running.withLock { if $0[id] === process { $0[id] = nil } }
        return process.terminationStatus
    }

    /// Sends `fault` (JSON) to node `id`'s `/admin/fault` (fault-injection nodes only).
    @discardableResult
    func fault(_ id: UInt64, _ fault: String) async throws -> HTTPAnswer {
        let answer = try await request(.POST, endpoint(id) + "/admin/fault", json: fault)
        guard answer.status == 200 else { throw IntegrationError("node \(id) refused fault \(fault): \(answer)") }
        return answer
    }

    /// A power loss of node `id`: its unsynced writes are undone and it dies at once.
    func powerLoss(_ id: UInt64) async throws {
        _ = try? await request(.POST, endpoint(id) + "/admin/fault", json: #"{"power_loss":true}"#)
        guard try await waitForExit(id, timeout: 10) != nil else { throw IntegrationError("node \(id) survived its power loss") }
    }

    func terminate(_ id: UInt64) {
        guard let process = running.withLock({ $0.removeValue(forKey: id) }) else { return }
        process.terminate()
        process.waitUntilExit()
    }

    func stopAll() {
        for id in Array(processes.keys) { kill9(id) }
        try? FileManager.default.removeItem(atPath: root)
    }

    // MARK: HTTP

    /// Fails fast on a node that is down instead of retrying the connection until the deadline.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(1)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    func request(
        _ method: HTTPMethod, _ url: String, json: String? = nil, headers: [(String, String)] = [],
        timeout: Duration = .seconds(10)
    ) async throws -> HTTPAnswer {
        try await requestWithHeaders(method, url, json: json, headers: headers, timeout: timeout).answer
    }

    func requestWithHeaders(
        _ method: HTTPMethod, _ url: String, json: String? = nil, headers: [(String, String)] = [],
        timeout: Duration = .seconds(10)
    ) async throws -> (answer: HTTPAnswer, headers: HTTPHeaders) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in defaultHeaders + headers where !request.headers.contains(name: name) {
            request.headers.add(name: name, value: value)
        }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: json))
        }
        let response = try await Self.http.execute(request, timeout: .init(timeout))
        let bytes = try await response.body.collect(upTo: 4 << 20)
        return (HTTPAnswer(status: Int(response.status.code), data: Data(bytes.readableBytesView)), response.headers)
    }

    func status(_ id: UInt64) async -> ClusterStatus? {
        try? await request(.GET, endpoint(id) + "/admin/cluster").decode(ClusterStatus.self)
    }

    /// Waits until every running node names the same leader, and that leader runs.
    func leader(timeout: Double = 15) async throws -> UInt64 {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var leaders = Set<UInt64>()
            var complete = true
            // A node that died by itself (a failed disk, say) is not asked.
            for (id, process) in processes where process.isRunning {
                guard let status = await status(id), let leader = status.leader else {
                    complete = false
                    break
                }
                leaders.insert(leader)
            }
            if complete, leaders.count == 1, let leader = leaders.first, processes[leader]?.isRunning == true { return leader }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw IntegrationError("no agreed leader within \(timeout) s; logs in \(root)")
    }

    /// Waits until every running node answers /readyz (a leader, its endpoint, caught up).
    func waitUntilReady(timeout: Double = 15) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var ready = true
            for (id, process) in processes where process.isRunning {
                if (try? await request(.GET, endpoint(id) + "/readyz").status) != 200 { ready = false }
            }
            if ready { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw IntegrationError("nodes not ready within \(timeout) s; logs in \(root)")
    }

    /// Registers a worker through `via`, following a 421 to the leader. Returns true when the
    /// cluster acknowledged it (committed and applied).
    func register(_ worker: String, via id: UInt64) async throws -> Bool {
        let json = #"{"id":"\#(worker)","model":"m","role":"PDFUSION","address":"127.0.0.1:9000"}"#
        let answer = try await leaderRequest(.POST, "/admin/workers", json: json, via: id)
        return answer.status == 200 && answer.decode(CommandResult.self)?.applied == true
    }

    /// Sends a leader-only request to node `id`, and once more to the leader it names when
    /// refused with 421 (refused before anything was proposed, so the retry cannot apply twice).
    func leaderRequest(
        _ method: HTTPMethod, _ path: String, json: String? = nil, via id: UInt64, timeout: Duration = .seconds(10)
    ) async throws -> HTTPAnswer {
        let answer = try await request(method, endpoint(id) + path, json: json, timeout: timeout)
        guard answer.status == 421, let leader = answer.error?.leaderId, httpPorts[leader] != nil
        else { return answer }
        return try await request(method, endpoint(leader) + path, json: json, timeout: timeout)
    }

    /// Worker ids a node holds after a linearizable read (on the leader) or as applied.
    func workers(on id: UInt64, consistent: Bool) async throws -> [String] {
        let answer = try await request(.GET, endpoint(id) + "/admin/workers" + (consistent ? "?consistent=true" : ""))
        return (answer.decode(WorkerList.self)?.workers ?? []).map(\.id)
    }

    /// Runs `fulcrumctl` with this cluster's endpoints; returns its exit status and output.
    func ctl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        var environment = ProcessInfo.processInfo.environment
        environment["FULCRUM_ENDPOINTS"] = endpoints.joined(separator: ",")
        return try run("fulcrumctl", arguments, environment: environment)
    }

    /// Runs one of the built executables to its end; returns its exit status and output.
    func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
        try runToEnd(binaries.appendingPathComponent(executable), arguments, environment: environment)
    }
}

/// Runs a program to its end; returns its exit status and output (standard output and error).
func runToEnd(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let environment { process.environment = environment }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

struct IntegrationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A node's HTTP answer: the status and the body, decoded on demand as one of the API's types.
struct HTTPAnswer: Sendable, CustomStringConvertible {
    var status: Int
    var data: Data

    func decode<Value: Decodable>(_ type: Value.Type) -> Value? { try? FulcrumJSON.decode(type, from: data) }

    /// The error the node answered, when it is one.
    var error: ErrorBody.Detail? { decode(ErrorBody.self)?.error }

    var description: String { "\(status) \(String(decoding: data.prefix(500), as: UTF8.self))" }
}
