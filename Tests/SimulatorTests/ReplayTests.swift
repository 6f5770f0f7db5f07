import Balancer
import Foundation
import Simulator
import Testing

/// Trace loading, the offline replay through the strategies, and the report.
@Suite struct ReplayTests {
    /// Multi-turn conversations: each request extends its conversation's previous prompt by a
    /// few blocks; every request starts with `sharedFirst` (a system prompt) when set.
    static func conversations(count: Int, turns: Int, sharedFirst: Bool = false, seed: UInt64 = 7) -> [TraceRequest] {
        var generator = SeededRandom(seed: seed)
        var next: UInt64 = 1_000
        var prompts: [[UInt64]] = (0..<count).map { _ in
            defer { next += 4 }
            return (sharedFirst ? [0] : []) + (next..<(next + 4)).map { $0 }
        }
        var requests: [TraceRequest] = []
        for turn in 0..<(count * turns) {
            let conversation = Int(generator.next() % UInt64(count))
            let grow = 1 + Int(generator.next() % 3)
            prompts[conversation] += (next..<(next + UInt64(grow))).map { $0 }
            next += UInt64(grow)
            let blocks = prompts[conversation]
            requests.append(TraceRequest(timestampMilliseconds: Double(turn) * 100, inputTokens: blocks.count * 512 - 100, outputTokens: 64, blockIDs: blocks))
        }
        return requests
    }

    @Test func cacheAwareRoutingReusesPrefixesWhereRoundRobinCannot() throws {
        let trace = Self.conversations(count: 64, turns: 8)
        let replay = OfflineReplay(workers: 8, capacityBlocks: 200, window: 16)
        let roundRobin = try replay.run(trace, strategy: .roundRobin).summary
        let cacheAware = try replay.run(trace, strategy: .cacheAware).summary
        #expect(cacheAware.hitRatio > 2 * roundRobin.hitRatio, "cache-aware \(cacheAware.hitRatio), round robin \(roundRobin.hitRatio)")
        #expect(roundRobin.maxOverMeanRequestsPerWorker < 1.05)
        #expect(cacheAware.maxOverMeanRequestsPerWorker < 1.5)
        #expect(cacheAware.errors == 0 && cacheAware.completed == trace.count)
    }

    @Test func noStrategyHerdsWhenEveryRequestSharesItsFirstBlock() throws {
        let trace = Self.conversations(count: 64, turns: 6, sharedFirst: true)
        let replay = OfflineReplay(workers: 8, capacityBlocks: 200, window: 16)
        for strategy in [StrategyKind.roundRobin, .random, .leastLoad, .powerOfTwo, .consistentHash, .cacheAware, .shortestTTFT, .kvPressure] {
            let summary = try replay.run(trace, strategy: strategy).summary
            #expect(summary.maxOverMeanRequestsPerWorker <= 1.5, "\(strategy.name) sends \(summary.maxOverMeanRequestsPerWorker)× the mean to one worker")
        }
    }

    @Test func sendingEverythingToOneWorkerShowsUpAsMaxOverMeanOfN() {
        let records = (0..<80).map { RequestRecord(index: $0, sentAt: Double($0), ttft: 0.1, endToEnd: 0.2, inputTokens: 100, cachedTokens: 50, worker: "w0") }
        let summary = ReplaySummary(name: "herd", records: records, workers: (0..<8).map { "w\($0)" })
        #expect(summary.maxOverMeanRequestsPerWorker == 8)
        #expect(summary.hitRatio == 0.5)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: ReplayTests.mooncake)))
    func theSyntheticMooncakeTraceLandsWhereExpected() throws {
        let trace = try Trace.load(path: Self.mooncake)
        #expect(trace.count == 3_993)
        let replay = OfflineReplay(workers: 8, capacityBlocks: 800, window: 32)
        let roundRobin = try replay.run(trace, strategy: .roundRobin).summary.hitRatio
        let cacheAware = try replay.run(trace, strategy: .cacheAware).summary.hitRatio
        #expect((0.04...0.07).contains(roundRobin), "round robin \(roundRobin)")
        #expect((0.29...0.36).contains(cacheAware), "cache-aware \(cacheAware)")
    }

    static let mooncake = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/traces/mooncake/synthetic_trace.jsonl").path

    @Test func bothTraceFormatsLoadAndBadLinesAreNamed() throws {
        let mooncake = try Trace.mooncake("""
            {"timestamp": 27, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}
            {"timestamp": 5, "input_length": 100, "output_length": 0, "hash_ids": [7]}
            """, source: "t.jsonl")
        #expect(mooncake.map(\.timestampMilliseconds) == [0, 22])
        #expect(mooncake[1].blockIDs == [0, 1] && mooncake[0].outputTokens == 1)
        let azure = try Trace.azure("""
            TIMESTAMP,ContextTokens,GeneratedTokens
            2023-11-16 18:15:46.5000000,1024,44
            2023-11-16 18:15:48.0000000,10,1
            """, source: "t.csv")
        #expect(azure.map(\.timestampMilliseconds) == [0, 1_500])
        #expect(azure[0].blockIDs.count == 2 && Set(azure[0].blockIDs).isDisjoint(with: azure[1].blockIDs))
        #expect(throws: TraceError.self) { try Trace.mooncake(#"{"timestamp": 0}"#, source: "bad.jsonl") }
        do {
            _ = try Trace.azure("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1", source: "bad.csv")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("bad.csv:2"))
        }
    }

    @Test func theReportHasItsJSONMarkdownAndPlots() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-report-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let records = (0..<50).map {
            RequestRecord(index: $0, sentAt: Double($0), ttft: 0.05 + Double($0) / 1000, endToEnd: 0.3, inputTokens: 1_000, cachedTokens: $0 * 10, worker: "w\($0 % 3)")
        } + [RequestRecord(index: 50, sentAt: 50, inputTokens: 10, error: "HTTP 503")]
        let summary = ReplaySummary(name: "test", records: records)
        #expect(summary.errors == 1 && summary.completed == 50)
        #expect(abs(summary.ttftP50 - 0.074) < 1e-9 && abs(summary.ttftP99 - 0.099) < 1e-9)
        try ReportWriter.write(summary, records: records, profile: "h100-8b", to: directory)
        for file in ["summary.json", "report.md", "ttft-cdf.svg", "hit-ratio.svg", "requests-per-worker.svg"] {
            #expect(FileManager.default.fileExists(atPath: "\(directory)/\(file)"), "\(file)")
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(directory)/summary.json"))) as? [String: Any]
        #expect(json?["hit_ratio"] as? Double == summary.hitRatio)
        let svg = try String(contentsOfFile: "\(directory)/ttft-cdf.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("<polyline"))
    }
}

/// A small deterministic generator for the tests' traces.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
