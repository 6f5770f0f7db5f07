import ArgumentParser
import Dispatch
import Raft
import RaftTestKit

@main
struct RaftSimTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum-raft-sim",
        abstract: "Deterministic simulation of Fulcrum's Raft core: seeds, soak, replay, benchmark.",
        subcommands: [Run.self, Replay.self, Soak.self, Bench.self],
        defaultSubcommand: Run.self
    )
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a range of seeds and print a summary.")

    @Option(help: "First seed.") var from: UInt64 = 1
    @Option(help: "Number of seeds.") var seeds: UInt64 = 200
    @Flag(help: "Print one line per seed.") var verbose = false
    @Flag(help: "Stop at the first failing seed (used to measure how fast a planted bug is found).")
    var stopOnFailure = false
    @Option(help: "Run only this fault profile (default: the mix the test suite uses).") var profile: String?

    func validate() throws {
        guard seeds > 0 else { throw ValidationError("--seeds must be at least 1") }
        if let profile, !FaultProfile.all.contains(where: { $0.name == profile }) {
            let names = FaultProfile.all.map(\.name).joined(separator: ", ")
            throw ValidationError("unknown --profile '\(profile)'; profiles: \(names)")
        }
    }

    func run() throws {
        let started = DispatchTime.now()
        var summary = SeedRunSummary()
        for seed in from..<(from + seeds) {
            var options = SimulationOptions.mixed(seed: seed)
            if let profile { options.faults = FaultProfile.all.first { $0.name == profile }! }
            let report = ClusterSimulation(options: options).run()
            if verbose || !report.passed { print(report) }
            summary.add(report)
            if stopOnFailure && !report.passed { break }
        }
        printSummary(summary, seconds: elapsed(since: started))
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }
}

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Replay one seed exactly, with its event trace.")

    @Option(help: "The seed to replay.") var seed: UInt64
    @Option(help: "Print only the last N trace lines (0: all).") var tail: Int = 0

    func run() throws {
        let report = ClusterSimulation(options: .mixed(seed: seed), tracing: true).run()
        let lines = tail > 0 ? Array(report.trace.suffix(tail)) : report.trace
        for line in lines { print(line) }
        print(report)
        if !report.passed { throw ExitCode(1) }
    }
}

struct Soak: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run fresh seeds for a given time; print seeds/second and any failing seed.")

    @Option(help: "How long to run, in seconds.") var seconds: Double = 60
    @Option(help: "First seed (default: derived from the clock).") var from: UInt64?

    func validate() throws {
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
    }

    func run() throws {
        let started = DispatchTime.now()
        var seed = from ?? DispatchTime.now().uptimeNanoseconds
        var summary = SeedRunSummary()
        var lastPrint = 0.0
        while elapsed(since: started) < seconds {
            let report = ClusterSimulation(options: .mixed(seed: seed)).run()
            if !report.passed { print("FAILED: \(report)\n  replay: swift run -c release fulcrum-raft-sim replay --seed \(seed)") }
            summary.add(report)
            seed &+= 1
            let now = elapsed(since: started)
            if now - lastPrint >= 10 {
                lastPrint = now
                print("  \(fixed(now, 0))s: \(summary.seeds) seeds, \(summary.failures.count) failing")
            }
        }
        printSummary(summary, seconds: elapsed(since: started))
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the core: a 3-node replicate-and-commit loop with batching, no I/O."
    )

    @Option(help: "Entries to commit per run.") var entries: Int = 200_000
    @Option(help: "Proposals batched into one Ready.") var batch: Int = 64
    @Option(help: "Bytes per entry.") var size: Int = 128
    @Option(help: "Repetitions; the median is reported.") var runs: Int = 5

    func validate() throws {
        guard entries > 0, batch > 0, size >= 0, runs > 0 else { throw ValidationError("all options must be positive") }
    }

    func run() throws {
        var results: [CoreBenchmark.Result] = []
        for _ in 0..<runs {
            results.append(CoreBenchmark.replicateAndCommit(entries: entries, batch: batch, entryBytes: size))
        }
        results.sort { $0.seconds < $1.seconds }
        let median = results[results.count / 2]
        print("core benchmark: 3 voters, \(entries) entries of \(size) B, batches of \(batch), median of \(runs) runs")
        let perSecond = Double(entries) / median.seconds
        let stepsPerSecond = Double(median.steps) / median.seconds
        let micros = median.seconds * 1e6 / Double(entries)
        let messagesPerBatch = Double(median.messages) / Double(max(entries / batch, 1))
        print("  \(fixed(perSecond, 0)) entries committed/s, \(fixed(stepsPerSecond, 0)) steps/s, "
            + "\(fixed(micros, 2)) µs per committed entry, \(fixed(messagesPerBatch, 1)) messages per batch")
    }
}

func elapsed(since start: DispatchTime) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
}

func printSummary(_ summary: SeedRunSummary, seconds: Double) {
    let rate = Double(summary.seeds) / seconds
    print("\(summary.seeds) seeds in \(fixed(seconds, 1))s (\(fixed(rate, 1)) seeds/s), \(summary.failures.count) failing")
    print("  \(summary.ticks) ticks, \(summary.writesAcknowledged) writes acknowledged, \(summary.readsCompleted) linearizable reads, \(summary.faults) faults injected")
    if let recovery = summary.recoveryMedianAndMax {
        print("  recovery after healing: median \(recovery.median) ticks, max \(recovery.max) ticks")
    }
    for failure in summary.failures.prefix(20) {
        print("  failing seed \(failure.options.seed): \(failure.violation!)")
    }
}

/// `value` with `digits` decimals, without Foundation.
func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    guard digits > 0 else { return String(Int(rounded)) }
    var text = String(rounded)
    if let dot = text.firstIndex(of: ".") {
        let decimals = text.distance(from: dot, to: text.endIndex) - 1
        if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
    }
    return text
}
