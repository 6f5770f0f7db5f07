import ArgumentParser
import Balancer
import FlexLBProtocol
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle
import Synchronization

/// The prompts of the FlexLB benchmark: `groups` shared prefixes (a system prompt and a long
/// document, `prefixTokens` each) followed by a unique question of `suffixTokens`. Keys are
/// rtp-llm's rolling block keys, as a frontend computes them.
struct FlexLBWorkload {
    var groups: Int
    var prefixTokens: Int
    var suffixTokens: Int
    var blockSize: Int
    var seed: UInt64

    func prefix(group: Int) -> [Int32] {
        var random = SeededGenerator(seed: seed &+ UInt64(group) &* 0x9E37_79B9)
        return (0..<prefixTokens).map { _ in Int32(random.below(150_000)) }
    }

    /// The keys of the full blocks of group `group`'s prefix (what an engine that served it holds).
    func prefixKeys(group: Int) -> [Int64] {
        RTPLLMCacheKeys.keys(tokens: prefix(group: group), blockSize: blockSize, fullBlocksOnly: true)
    }

    /// `count` requests' keys and lengths; groups drawn with Zipf-like popularity (1/rank).
    func requests(count: Int) -> [(keys: [Int64], tokens: Int)] {
        var random = SeededGenerator(seed: seed ^ 0x5EED)
        let prefixes = (0..<groups).map(prefix(group:))
        let weights = (1...groups).map { 1.0 / Double($0) }
        let total = weights.reduce(0, +)
        return (0..<count).map { _ in
            var draw = Double(random.below(1_000_000)) / 1_000_000 * total
            var group = 0
            while group < groups - 1 && draw > weights[group] {
                draw -= weights[group]
                group += 1
            }
            let tokens = prefixes[group] + (0..<suffixTokens).map { _ in Int32(random.below(150_000)) }
            return (RTPLLMCacheKeys.keys(tokens: tokens, blockSize: blockSize), tokens.count)
        }
    }
}

/// `fulcrum-sim status-engines`: many light rtp-llm engines that only answer the engine gRPC's
/// status calls (`GetWorkerStatus`, `GetCacheStatus`): engine *i* "listens" on HTTP port
/// base + 2i (nothing is served there) and serves gRPC on base + 2i + 1, as rtp-llm engines do.
/// Prefill engines report the prefix keys of two workload groups each.
struct StatusEngines: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status-engines", abstract: "Start light rtp-llm engines that answer only status over gRPC (for flexlb-bench)."
    )

    @Option(help: "PREFILL engines.") var prefill = 750
    @Option(help: "DECODE engines.") var decode = 500
    @Option(help: "HTTP port of the first engine; engine i uses base + 2i (HTTP) and base + 2i + 1 (gRPC).") var basePort = 30_000
    @Option(help: "Listen host.") var host = "127.0.0.1"
    @Option(help: "Workload groups (must match flexlb-load).") var groups = 256
    @Option(help: "Prefix tokens per group (must match flexlb-load).") var prefixTokens = 2_048
    @Option(help: "Tokens per block (must match flexlb-load).") var blockSize = 64
    @Option(help: "Workload seed (must match flexlb-load).") var seed: UInt64 = 1

    func validate() throws {
        guard prefill >= 0, decode >= 0, prefill + decode > 0, prefill + decode <= 10_000 else { throw ValidationError("1 to 10,000 engines") }
        guard basePort > 0, basePort + 2 * (prefill + decode) <= 65_535 else { throw ValidationError("--base-port leaves no room") }
        guard groups > 0, prefixTokens > 0, blockSize > 0 else { throw ValidationError("--groups, --prefix-tokens and --block-size must be positive") }
    }

    func run() async throws {
        var logger = Logger(label: "status-engines")
        logger.logLevel = .warning
        let workload = FlexLBWorkload(groups: groups, prefixTokens: prefixTokens, suffixTokens: 0, blockSize: blockSize, seed: seed)
        let keys = (0..<groups).map(workload.prefixKeys(group:))
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        for index in 0..<(prefill + decode) {
            let role = index < prefill ? "PREFILL" : "DECODE"
            let cached = role == "PREFILL" ? keys[index % groups] + keys[(index * 7 + 3) % groups] : []
            let engine = LightRTPLLMEngine(role: role, index: index, cachedKeys: cached, blockSize: blockSize)
            let server = GRPCServer(
                transport: .http2NIOPosix(address: .ipv4(host: host, port: basePort + 2 * index + 1), transportSecurity: .plaintext),
                services: [engine]
            )
            services.append(.init(service: GRPCService(server: server)))
        }
        FileHandle.standardOutput.write(Data("\(prefill) PREFILL + \(decode) DECODE status-only rtp-llm engines, gRPC on \(host):\(basePort + 1)...\(basePort + 2 * (prefill + decode) - 1) (odd ports)\n".utf8))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// One light engine: a load that drifts with each status call, a cache that never changes.
final class LightRTPLLMEngine: RpcService.SimpleServiceProtocol {
    let role: String
    let cachedKeys: [Int64]
    let blockSize: Int
    private let calls: Atomic<Int64>
    private let index: Int

    init(role: String, index: Int, cachedKeys: [Int64], blockSize: Int) {
        self.role = role
        self.index = index
        self.cachedKeys = cachedKeys
        self.blockSize = blockSize
        calls = Atomic(0)
    }

    func getWorkerStatus(request: StatusVersionPB, context: ServerContext) async throws -> WorkerStatusPB {
        let call = calls.add(1, ordering: .relaxed).newValue
        var status = WorkerStatusPB()
        status.role = "RoleType.\(role)"
        status.roleType = role == "PREFILL" ? .roleTypePrefill : .roleTypeDecode
        status.alive = true
        status.statusVersion = Int64(Date().timeIntervalSince1970 * 1_000_000)
        status.latestFinishedVersion = request.latestFinishedVersion
        status.runningQueryLen = Int32((Int64(index) &* 31 &+ call) % 8)
        status.waitingQueryLen = Int32((Int64(index) &+ call) % 3)
        status.stepLatencyMs = 20 + Double((Int64(index) + call) % 10)
        status.totalKvCache = 400_000
        status.availableKvCache = 400_000 - Int64(status.runningQueryLen) * 4_096
        status.dpSize = 1
        status.tpSize = 1
        return status
    }

    func getCacheStatus(request: CacheVersionPB, context: ServerContext) async throws -> CacheStatusPB {
        var status = CacheStatusPB()
        status.version = 1
        status.blockSize = Int64(blockSize)
        status.totalKvCache = 400_000
        status.availableKvCache = 300_000
        if request.needCacheKeys { for key in cachedKeys { status.cacheKeys[key] = true } }
        return status
    }

    func generateStreamCall(request: GenerateInputPB, response: RPCWriter<GenerateOutputsPB>, context: ServerContext) async throws {
        throw RPCError(code: .unimplemented, message: "a status-only engine serves no requests")
    }
}

/// `fulcrum-sim flexlb-load`: `Schedule` calls as rtp-llm frontends make them
/// (`master_client.py`: `model` "engine_service", `block_cache_keys`, `seq_len`, priority 50),
/// at a fixed concurrency for a duration; prints requests/s, p50, p99 and errors.
struct FlexLBLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flexlb-load", abstract: "Drive FlexlbService.Schedule at a fixed concurrency and report.")

    @Option(help: "host:port of a node's FlexLB gRPC (its HTTP port + 2).") var target: String
    @Option(help: "Calls in flight at once.") var concurrency = 64
    @Option(help: "Seconds to run (after a 2 s warm-up).") var durationSeconds = 20
    @Option(help: "HTTP/2 connections the calls share.") var connections = 4
    @Option(help: "Workload groups (must match status-engines).") var groups = 256
    @Option(help: "Prefix tokens per group (must match status-engines).") var prefixTokens = 2_048
    @Option(help: "Unique tokens after the prefix.") var suffixTokens = 512
    @Option(help: "Tokens per block (must match status-engines).") var blockSize = 64
    @Option(help: "Workload seed (must match status-engines).") var seed: UInt64 = 1
    @Option(help: "Label of the RESULT line.") var label = "flexlb"

    func validate() throws {
        guard (1...4_096).contains(concurrency), (1...3_600).contains(durationSeconds), (1...64).contains(connections) else {
            throw ValidationError("--concurrency 1...4096, --duration-seconds 1...3600, --connections 1...64")
        }
        guard target.split(separator: ":").count == 2, Int(target.split(separator: ":")[1]) != nil else { throw ValidationError("--target must be host:port") }
    }

    final class Tally: Sendable {
        struct Counts {
            var latencies: [Double] = []
            var errors = 0
            var codes: [Int32: Int] = [:]
        }

        let counts = Mutex(Counts())
    }

    func run() async throws {
        let parts = target.split(separator: ":")
        let host = String(parts[0])
        let port = Int(parts[1])!
        let workload = FlexLBWorkload(groups: groups, prefixTokens: prefixTokens, suffixTokens: suffixTokens, blockSize: blockSize, seed: seed)
        let requests = workload.requests(count: 8_192)
        let meanKeys = Double(requests.reduce(0) { $0 + $1.keys.count }) / Double(requests.count)
        var clients: [GRPCClient<HTTP2ClientTransport.Posix>] = []
        for _ in 0..<connections {
            clients.append(GRPCClient(transport: try .http2NIOPosix(target: .ipv4(address: host, port: port), transportSecurity: .plaintext)))
        }
        let tally = Tally()
        let concurrency = concurrency
        let duration = durationSeconds
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients { group.addTask { try await client.runConnections() } }
            let warmEnd = ContinuousClock.now + .seconds(2)
            let end = warmEnd + .seconds(duration)
            try await withThrowingTaskGroup(of: Void.self) { lanes in
                for lane in 0..<concurrency {
                    let service = FlexlbService.Client(wrapping: clients[lane % clients.count])
                    lanes.addTask {
                        var next = lane
                        var id = Int64(lane) << 32
                        while ContinuousClock.now < end {
                            let request = requests[next % requests.count]
                            next += concurrency
                            id += 1
                            var message = FlexlbScheduleRequestPB()
                            message.requestID = id
                            message.blockCacheKeys = request.keys
                            message.seqLen = Int64(request.tokens)
                            message.generateTimeout = 3_000
                            message.requestTimeMs = Int64(Date().timeIntervalSince1970 * 1_000)
                            message.maxNewTokens = 256
                            message.numBeams = 1
                            message.model = "engine_service"
                            message.cacheKeyBlockSize = Int64(self.blockSize)
                            message.priority = 50
                            let start = ContinuousClock.now
                            let code: Int32?
                            do {
                                code = try await service.schedule(message).code
                            } catch {
                                code = nil
                            }
                            guard start >= warmEnd else { continue }
                            let elapsed = (ContinuousClock.now - start).components
                            let milliseconds = Double(elapsed.seconds) * 1_000 + Double(elapsed.attoseconds) / 1e15
                            tally.counts.withLock { counts in
                                counts.latencies.append(milliseconds)
                                if code != 200 { counts.errors += 1 }
                                counts.codes[code ?? -1, default: 0] += 1
                            }
                        }
                    }
                }
                try await lanes.waitForAll()
            }
            for client in clients { client.beginGracefulShutdown() }
            try await group.waitForAll()
        }
        let counts = tally.counts.withLock { $0 }
        let sorted = counts.latencies.sorted()
        func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let qps = Double(sorted.count) / Double(duration)
        let codes = counts.codes.keys.sorted().map { "\($0 == -1 ? "rpc_error" : String($0))=\(counts.codes[$0]!)" }.joined(separator: ",")
        print(String(
            format: "RESULT %@ c=%d qps=%.0f p50_ms=%.2f p99_ms=%.2f errors=%d calls=%d mean_keys=%.1f codes=%@",
            label, concurrency, qps, percentile(0.5), percentile(0.99), counts.errors, sorted.count, meanKeys, codes
        ))
    }
}
