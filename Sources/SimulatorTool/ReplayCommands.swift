import ArgumentParser
import AsyncHTTPClient
import Balancer
import Foundation
import FulcrumAPI
import NIOCore
import Simulator

func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

/// `fulcrum-sim replay`: one trace against one endpoint, with a report.
struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Replay a trace (Mooncake JSONL or Azure CSV) against an endpoint and write a report.")

    @Option(help: "The trace file.") var trace: String
    @Option(help: "Base URL of the endpoint (a Fulcrum node, a router, an engine).") var target: String
    @Option(help: "Time scale: 2 sends twice as fast as recorded.") var speed = 1.0
    @Option(help: "Seconds of replay (default: the whole trace).") var duration: Double?
    @Option(help: "Name of this run in the report.") var name = "replay"
    @Option(help: "Folder for summary.json, report.md and the plots.") var out = "replay-report"
    @Option(help: "Model to ask for.") var model = "sim-model"
    @Option(help: "Engine profile, for the report.") var profile = EngineProfile.h100_8b.description
    @Flag(help: "Also send block ids as fulcrum_block_hashes.") var sendHashes = false
    @Option(help: "Tokens per block id of the trace (Mooncake's: 512; fulcrum-sim generate's: 64).") var traceBlockSize = Trace.mooncakeTokensPerBlock
    @Flag(help: "Serve requests as rtp-llm frontends do: Schedule on the target node's FlexLB gRPC (HTTP port + 2), then GenerateStreamCall on the chosen rtp-llm engine (fulcrum-sim engines --engine rtp-llm).")
    var flexlb = false

    func validate() throws {
        guard speed > 0 else { throw ValidationError("--speed must be positive") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        guard (1...65_536).contains(traceBlockSize) else { throw ValidationError("--trace-block-size must be in 1...65536") }
        if flexlb, URL(string: target)?.port == nil { throw ValidationError("--flexlb needs a --target with a port (the node's HTTP port)") }
    }

    func run() async throws {
        let requests: [TraceRequest]
        do { requests = try Trace.load(path: trace) } catch { throw ValidationError("\(error)") }
        let client = HTTPClient.replayClient()
        var replay = LiveReplay(target: target, speed: speed, duration: duration, model: model, tokensPerBlock: traceBlockSize, sendHashes: sendHashes)
        replay.flexLB = flexlb
        say("replaying \(requests.count) requests of \(trace) against \(target) at \(speed)x")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        // When the replay started (Unix seconds): request times in requests.jsonl count from here.
        try String(format: "%.3f\n", Date().timeIntervalSince1970).write(toFile: out + "/started_at", atomically: true, encoding: .utf8)
        let records = await replay.run(requests, client: client, progress: say)
        try? await client.shutdown()
        let summary = ReplaySummary(name: name, records: records)
        try ReportWriter.write(summary, records: records, profile: profile, to: out)
        say(ReplaySummary.tableHeader)
        say(summary.tableRow)
        say("report: \(out)/report.md")
    }
}

/// `fulcrum-sim offline`: a trace through the balancer's strategies with no timing.
struct Offline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Replay a trace straight through the routing strategies (no timing) to check cache accounting.")

    @Option(help: "The trace file.") var trace: String
    @Option(help: "Workers.") var workers = 8
    @Option(help: "KV capacity of each worker, in trace blocks.") var blocks = 800
    @Option(help: "Requests holding a reservation at once.") var window = 32
    @Option(help: "Strategies, comma-separated (default: all but sticky and resource_aware).")
    var strategies = "round_robin,random,least_load,power_of_two,consistent_hash,cache_aware,shortest_ttft"
    @Flag(help: "Also route everything to one worker (what a herding policy does).") var includeSingle = false

    func run() async throws {
        let requests: [TraceRequest]
        do { requests = try Trace.load(path: trace) } catch { throw ValidationError("\(error)") }
        let replay = OfflineReplay(workers: workers, capacityBlocks: blocks, window: window)
        say("\(requests.count) requests, \(workers) workers of \(blocks) blocks, window \(window)")
        say(ReplaySummary.tableHeader)
        for name in strategies.split(separator: ",") {
            guard let strategy = StrategyKind(name: String(name)) else { throw ValidationError("unknown strategy \(name)") }
            say(try replay.run(requests, strategy: strategy).summary.tableRow)
        }
        if includeSingle {
            let single = OfflineReplay(workers: 1, capacityBlocks: blocks, window: window)
            var summary = try single.run(requests, strategy: .roundRobin, name: "all-to-one").summary
            summary.requestsPerWorker.merge(Dictionary(uniqueKeysWithValues: (1..<workers).map { ("w\($0)", 0) })) { $1 }
            summary.maxOverMeanRequestsPerWorker = Double(summary.completed) / (Double(summary.completed) / Double(workers))
            say(summary.tableRow)
        }
    }
}

/// `fulcrum-sim simulate`: a trace through the router and simulated engines in virtual time.
struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a trace through the routing strategies and simulated engines in virtual time (deterministic, seconds per run).",
        discussion: """
            Engines run the timing model of `fulcrum-sim engines` (--profile, --block-size, --kv-tokens as there); \
            the router sees their load as a Fulcrum leader does, polled and flushed at the given intervals. \
            The same inputs give the same figures.
            """
    )

    @Option(help: "The trace file.") var trace: String
    @Option(help: "Engines.") var workers = 8
    @Option(help: "Time scale: 2 sends twice as fast as recorded.") var speed = 1.0
    @Option(help: "Seconds of replay (default: the whole trace).") var duration: Double?
    @Option(help: "Strategies, comma-separated.") var strategies = "round_robin,power_of_two,least_load,consistent_hash,cache_aware,shortest_ttft"
    @Option(help: "Timing model: h100-8b (default), a100-8b or a JSON file of EngineProfile fields.") var profile = "h100-8b"
    @Option(help: "Tokens per KV block and per trace block id.") var blockSize = Trace.mooncakeTokensPerBlock
    @Option(help: "KV-cache capacity in tokens.") var kvTokens: Int?
    @Option(help: "Milliseconds between status polls.") var statusIntervalMs = 50.0
    @Option(help: "Milliseconds between flushes of status and prefixes into the replicated state.") var flushIntervalMs = 100.0
    @Option(help: "Blocks the router's prefix index keeps per engine (default: the engines' KV capacity in blocks).") var prefixBlocksPerWorker: Int?
    @Option(help: "Folder for one report per strategy (none when omitted).") var out: String?
    @Flag(help: "Engines report the blocks they evict, and the router's prefix index forgets them.") var reportEvictions = false
    @Flag(help: "Admission control on the master: requests wait in a bounded queue while the engines are saturated, and are shed past their class's deadline.") var admission = false
    @Option(help: "Admission classes, a JSON file: {\"queue_capacity\": N, \"classes\": [{\"name\", \"min_priority\", \"deadline_ms\", \"dispatch_below_ms\", \"aging_ms\"}, ...]} (default: Fulcrum's two classes).") var admissionClasses: String?
    @Option(help: "Fraction of the trace's requests given a high priority (90; the rest 0), drawn with --priority-seed.") var highPriorityFraction: Double?
    @Option(help: "Seed of the priority draw.") var prioritySeed: UInt64 = 1
    @Option(help: "Prefill speed the workers are registered with, tokens/s (default: the profile's linear speed).") var advertisedPrefillTps: Double?

    func validate() throws {
        guard speed > 0 else { throw ValidationError("--speed must be positive") }
        if let highPriorityFraction, !(0...1).contains(highPriorityFraction) { throw ValidationError("--high-priority-fraction must be in [0, 1]") }
        guard workers > 0 else { throw ValidationError("--workers must be positive") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        guard statusIntervalMs > 0, flushIntervalMs > 0 else { throw ValidationError("--status-interval-ms and --flush-interval-ms must be positive") }
    }

    func run() async throws {
        var requests: [TraceRequest]
        do { requests = try Trace.load(path: trace) } catch { throw ValidationError("\(error)") }
        if let highPriorityFraction { requests = TraceRequest.withPriorities(requests, highFraction: highPriorityFraction, seed: prioritySeed) }
        let timing = try Engines.profile(profile, blockSize: blockSize, kvTokens: kvTokens)
        var replay = TimedReplay(
            workers: workers, profile: timing, speed: speed, statusIntervalMilliseconds: statusIntervalMs,
            flushIntervalMilliseconds: flushIntervalMs, duration: duration
        )
        replay.reportsEvictions = reportEvictions
        replay.advertisedPrefillTokensPerSecond = advertisedPrefillTps
        if admission || admissionClasses != nil {
            let policy = try admissionClasses.map(AdmissionFile.load) ?? AdmissionPolicy()
            replay.admission = policy
            say("admission: " + policy.classes.map { "\($0.name) (priority ≥ \($0.minimumPriority == Int.min ? "any" : String($0.minimumPriority)), deadline \($0.deadlineMilliseconds) ms, dispatch below \(Int($0.dispatchBelowMilliseconds)) ms)" }.joined(separator: ", ") + ", queue \(policy.queueCapacity)")
        }
        if let prefixBlocksPerWorker {
            guard prefixBlocksPerWorker >= 0 else { throw ValidationError("--prefix-blocks-per-worker must not be negative") }
            replay.settings.prefixBlocksPerWorker = prefixBlocksPerWorker
        }
        say("profile: \(timing.description)")
        say("\(requests.count) requests at \(speed)x\(duration.map { ", \($0) s" } ?? ""), \(workers) engines, status every \(statusIntervalMs) ms, flush every \(flushIntervalMs) ms")
        say(ReplaySummary.tableHeader)
        for name in strategies.split(separator: ",") {
            guard let strategy = StrategyKind(name: String(name)) else { throw ValidationError("unknown strategy \(name)") }
            let result = replay.run(requests, strategy: strategy)
            say(result.summary.tableRow)
            if let policy = replay.admission ?? (highPriorityFraction != nil ? AdmissionPolicy() : nil) {
                let report = PriorityReport(records: result.records) { priority in
                    Double(policy.classes[policy.classIndex(priority: priority)].deadlineMilliseconds) / 1_000
                }
                say("\n" + report.table + "\n")
            }
            if let out { try ReportWriter.write(result.summary, records: result.records, profile: timing.description, to: "\(out)/\(name)") }
        }
    }
}

/// `fulcrum-sim compare`: the same trace against several targets, engines reset in between.
struct Compare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay one trace against several targets in one go and print the side-by-side table.",
        discussion: """
            Targets are NAME=URL. A Fulcrum target may carry a strategy: NAME=URL#strategy=cache_aware sets the \
            cluster's default policy (PDFUSION role) through its admin API before the run. Engines listed with \
            --engines are reset (cold caches) before every run.
            """
    )

    @Option(help: "The trace file.") var trace: String
    @Option(name: .customLong("target"), help: "NAME=URL[#strategy=S] (repeatable).") var targets: [String]
    @Option(help: "Engine base URLs to reset before each run, comma-separated.") var engines = ""
    @Option(help: "Time scale.") var speed = 1.0
    @Option(help: "Seconds of replay per run.") var duration: Double?
    @Option(help: "Folder for the reports (one subfolder per run) and comparison.md.") var out = "compare-report"
    @Option(help: "Model to ask for.") var model = "sim-model"
    @Option(help: "Engine profile, for the report.") var profile = EngineProfile.h100_8b.description
    @Flag(help: "Also send block ids as fulcrum_block_hashes.") var sendHashes = false
    @Option(help: "Tokens per block id of the trace (Mooncake's: 512; fulcrum-sim generate's: 64).") var traceBlockSize = Trace.mooncakeTokensPerBlock

    func validate() throws {
        guard speed > 0 else { throw ValidationError("--speed must be positive") }
        guard (1...65_536).contains(traceBlockSize) else { throw ValidationError("--trace-block-size must be in 1...65536") }
    }

    func run() async throws {
        let requests: [TraceRequest]
        do { requests = try Trace.load(path: trace) } catch { throw ValidationError("\(error)") }
        let client = HTTPClient.replayClient()
        do {
            try await compare(requests, client: client)
        } catch {
            try? await client.shutdown()
            throw error
        }
        try? await client.shutdown()
    }

    /// Sets a Fulcrum cluster's default strategy through its leader (found from any node).
    func setStrategy(_ strategy: Substring, via url: String, client: HTTPClient) async throws {
        var base = url
        let info = try await client.execute(HTTPClientRequest(url: url + "/rtp_llm/master/info"), timeout: .seconds(5))
        let body = try await info.body.collect(upTo: 1 << 16)
        if let info = try? FulcrumJSON.verbatimDecoder.decode(MasterInfo.self, from: Data(buffer: body)), !info.realMasterHost.isEmpty {
            let host = info.realMasterHost
            base = (url.hasPrefix("https") ? "https://" : "http://") + host
        }
        var request = HTTPClientRequest(url: base + "/admin/config/default_policy")
        request.method = .PUT
        request.body = .bytes(ByteBuffer(string: #"{"strategies":{"PDFUSION":"\#(strategy)","PREFILL":"\#(strategy)"}}"#))
        let response = try await client.execute(request, timeout: .seconds(10))
        guard response.status.code == 200 else {
            throw ValidationError("setting strategy \(strategy) on \(base): HTTP \(response.status.code)")
        }
    }

    func compare(_ requests: [TraceRequest], client: HTTPClient) async throws {
        var rows: [String] = []
        for target in targets {
            let parts = target.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { throw ValidationError("--target expects NAME=URL, got \(target)") }
            let name = String(parts[0])
            var url = String(parts[1])
            if let hash = url.firstIndex(of: "#") {
                let option = url[url.index(after: hash)...]
                url = String(url[..<hash])
                if option.hasPrefix("strategy=") {
                    try await setStrategy(option.dropFirst("strategy=".count), via: url, client: client)
                }
            }
            for engine in engines.split(separator: ",") where !engine.isEmpty {
                var reset = HTTPClientRequest(url: String(engine) + "/reset")
                reset.method = .POST
                _ = try? await client.execute(reset, timeout: .seconds(5))
            }
            say("== \(name): \(url)")
            let replay = LiveReplay(target: url, speed: speed, duration: duration, model: model, tokensPerBlock: traceBlockSize, sendHashes: sendHashes)
            let records = await replay.run(requests, client: client, progress: say)
            let summary = ReplaySummary(name: name, records: records)
            try ReportWriter.write(summary, records: records, profile: profile, to: "\(out)/\(name)")
            say(summary.tableRow)
            rows.append(summary.tableRow)
        }
        let table = ([ReplaySummary.tableHeader] + rows).joined(separator: "\n")
        try ("# Comparison\n\nTrace: \(trace), speed \(speed)x\(duration.map { ", \($0) s" } ?? ""). Engine profile: \(profile)\n\n" + table + "\n")
            .write(toFile: "\(out)/comparison.md", atomically: true, encoding: .utf8)
        say("")
        say(table)
    }
}

extension HTTPClient {
    /// Open-loop replays keep hundreds of streams open at once: one connection each. Idle ones
    /// are closed after 5 s (httpx's default), before any server's keep-alive timeout, so that
    /// a request never goes out on a connection the server is closing.
    static func replayClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(5)))
        configuration.connectionPool = .init(idleTimeout: .seconds(5), concurrentHTTP1ConnectionsPerHostSoftLimit: 8_192)
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}

/// An admission policy from a JSON file (the shape of the node configuration's `admission`).
enum AdmissionFile {
    struct Class: Decodable {
        var name: String
        var minPriority: Int?
        var deadlineMs: UInt64
        var dispatchBelowMs: Double
        var agingMs: UInt64?
    }
    struct File: Decodable {
        var queueCapacity: Int?
        var saturatedWaitingRequests: Int?
        var saturatedKvFraction: Double?
        var classes: [Class]
    }

    static func load(_ path: String) throws -> AdmissionPolicy {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let file: File
        do { file = try decoder.decode(File.self, from: Data(contentsOf: URL(fileURLWithPath: path))) } catch {
            throw ValidationError("--admission-classes \(path): \(error)")
        }
        var policy = AdmissionPolicy(
            classes: file.classes.map {
                AdmissionClass(
                    name: $0.name, minimumPriority: $0.minPriority ?? Int.min, deadlineMilliseconds: $0.deadlineMs,
                    dispatchBelowMilliseconds: $0.dispatchBelowMs, agingMilliseconds: $0.agingMs ?? $0.deadlineMs / 2
                )
            },
            queueCapacity: file.queueCapacity ?? AdmissionPolicy().queueCapacity
        )
        if let waiting = file.saturatedWaitingRequests { policy.saturatedWaitingRequests = waiting }
        if let fraction = file.saturatedKvFraction { policy.saturatedKVFraction = fraction }
        do { try policy.validate() } catch { throw ValidationError("--admission-classes \(path): \(error)") }
        return policy
    }
}
