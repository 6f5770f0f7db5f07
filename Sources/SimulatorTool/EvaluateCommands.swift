import ArgumentParser
import Balancer
import Foundation
import Simulator

/// `fulcrum-sim evaluate`: routing strategies over the workload families in virtual time, each
/// read against the oracle and the bounds.
struct Evaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run routing strategies over the tuning or held-out workloads in virtual time, against oracles and cache bounds.",
        discussion: """
            Workloads (Docs/simulator.md): the Mooncake trace and seeded multi-turn, shared-prefix, tool-agent, \
            Azure-arrival and mixed traffic, each at every --loads multiple of the reference load (the Mooncake \
            trace at speed 1). The tuning set is for choosing defaults; the held-out set is for reporting them.
            """
    )

    @Option(help: "tuning, held_out or all.") var split = "all"
    @Option(help: "Loads, comma-separated multiples of the reference load.") var loads = "1,2,3,5"
    @Option(help: "Seconds of arrivals per workload.") var duration = 300.0
    @Option(help: "Strategies, comma-separated.") var strategies = "cache_aware,shortest_ttft,least_load"
    @Option(help: "Only workloads whose name contains this (e.g. tool_agent).") var only: String?
    @Option(help: "Folder of the public traces.") var traces = "../shared/traces"
    @Option(help: "Workloads evaluated at once (default: the processor count).") var parallelism = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Also write the tables to this Markdown file.") var out: String?
    @Option(help: "Tuning: cache_hit_threshold for the strategies under test.") var cacheHitThreshold: Double?
    @Option(help: "Tuning: cache_affinity for the strategies under test.") var cacheAffinity: Double?
    @Option(help: "Tuning: near_best_fraction for the strategies under test.") var nearBestFraction: Double?
    @Option(help: "Tuning: balance_abs_threshold for the strategies under test.") var balanceAbsThreshold: Int?

    func run() async throws {
        let splits: [RoutingEvaluation.Split]
        if split == "all" { splits = RoutingEvaluation.Split.allCases } else {
            guard let one = RoutingEvaluation.Split(rawValue: split) else { throw ValidationError("--split must be tuning, held_out or all") }
            splits = [one]
        }
        let loadList = try loads.split(separator: ",").map { text -> Double in
            guard let load = Double(text), load > 0, load <= 100 else { throw ValidationError("--loads: \(text) is not a load in (0, 100]") }
            return load
        }
        guard duration > 0, duration <= 86_400 else { throw ValidationError("--duration must be in (0, 86400] seconds") }
        let kinds = try strategies.split(separator: ",").map { name -> StrategyKind in
            guard let kind = StrategyKind(name: String(name)) else { throw ValidationError("--strategies: unknown strategy \(name)") }
            return kind
        }
        var configured = RoutingEvaluation(strategies: kinds)
        let (threshold, affinity, nearBest, balance) = (cacheHitThreshold, cacheAffinity, nearBestFraction, balanceAbsThreshold)
        configured.adjustSettings = { settings in
            if let threshold { settings.cacheHitThreshold = threshold }
            if let affinity { settings.cacheAffinity = affinity }
            if let nearBest { settings.nearBestFraction = nearBest }
            if let balance { settings.balanceAbsoluteThreshold = balance }
        }
        var check = RoutingSettings()
        configured.adjustSettings(&check)
        do { try check.validate() } catch { throw ValidationError("\(error)") }
        let evaluation = configured
        var document = "# Routing evaluation\n\n`fulcrum-sim evaluate --split \(split) --loads \(loads) --duration \(Int(duration)) --strategies \(strategies)`\n"
        for split in splits {
            var workloads = RoutingEvaluation.workloads(split, loads: loadList, durationSeconds: duration, tracesDirectory: traces)
            if let only { workloads = workloads.filter { $0.description.contains(only) } }
            guard !workloads.isEmpty else { continue }
            say("== \(split.rawValue): \(workloads.count) workloads")
            say(evaluation.tableHeader)
            let rows = try await evaluation.evaluate(workloads, parallelism: parallelism) { row in say(evaluation.tableRow(row)) }
            let table = ([evaluation.tableHeader] + rows.map(evaluation.tableRow)).joined(separator: "\n")
            say("")
            say(table)
            say(evaluation.worstCases(rows))
            document += "\n## \(split.rawValue)\n\n\(table)\n\n" + evaluation.worstCases(rows).split(separator: "\n").map { "- \($0)" }.joined(separator: "\n") + "\n"
        }
        if let out { try document.write(toFile: out, atomically: true, encoding: .utf8) }
    }
}

/// `fulcrum-sim generate`: one generated workload as a Mooncake-format trace, for live replays.
struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a generated workload as a Mooncake-format JSONL trace (block ids of 64 tokens) for replay.",
        discussion: "Replay it with --trace-block-size 64 and engines started with --block-size 64 (Scripts/sim-compare.sh with WORKLOAD=…)."
    )

    @Option(help: "multi_turn, shared_prefix, tool_agent, azure_conv or mix.") var family: String
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "Multiple of the reference load.") var load = 1.0
    @Option(help: "Seconds of arrivals.") var duration = 300.0
    @Option(help: "Folder of the public traces (for azure_conv).") var traces = "../shared/traces"
    @Option(help: "Output file.") var out: String

    func run() async throws {
        guard let kind = WorkloadFamily(rawValue: family), kind != .mooncake else {
            throw ValidationError("--family must be one of \(WorkloadFamily.allCases.filter { $0 != .mooncake }.map(\.rawValue).joined(separator: ", "))")
        }
        guard load > 0, load <= 100, duration > 0, duration <= 86_400 else { throw ValidationError("--load must be in (0, 100] and --duration in (0, 86400]") }
        let workload = Workload(family: kind, seed: seed, load: load, durationSeconds: duration, tracesDirectory: traces)
        let requests: [TraceRequest]
        do { requests = try workload.generate() } catch { throw ValidationError("\(error)") }
        try Trace.mooncakeJSONL(requests).write(toFile: out, atomically: true, encoding: .utf8)
        let tokens = requests.reduce(0) { $0 + $1.inputTokens }
        say("\(workload): \(requests.count) requests, \(tokens / max(1, requests.count)) prompt tokens on average, "
            + "infinite-cache hit bound \(String(format: "%.1f %%", CacheBounds.infiniteCache(requests, tokensPerBlock: workload.tokensPerBlock) * 100)) → \(out)")
    }
}
