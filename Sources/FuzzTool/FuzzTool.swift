import ArgumentParser
import AsyncHTTPClient
import Foundation
import Fuzzing

@main
struct FuzzTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum-fuzz",
        abstract: "Seeded mutation fuzzing of Fulcrum's decoders (peer frames, Raft messages, commands, snapshots) and JSON API.",
        subcommands: [Binary.self, HTTP.self, SeedCorpus.self]
    )
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is missing.
func peakMemoryMiB() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return 0 }
    return kib / 1024
}

struct Binary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Fuzz the binary decoders in process.")

    @Option(help: "Target, or all: \(FuzzTargets.all.map(\.name).joined(separator: ", ")).") var target = "all"
    @Option(help: "Seconds per target.") var seconds = 10.0
    @Option(help: "Seed; the same seed replays the same inputs.") var seed: UInt64 = 1
    @Option(help: "Corpus directory (one folder per target) to start from.") var corpus: String?
    @Option(help: "Where to save inputs that produced findings.") var findings = "fuzz-findings"
    @Option(help: "Fail when peak memory exceeds this many MiB.") var maxMemoryMiB = 512.0

    func run() throws {
        let targets = target == "all" ? FuzzTargets.all : [FuzzTargets.named(target)].compactMap { $0 }
        guard !targets.isEmpty else { throw ValidationError("unknown target '\(target)'") }
        var failed = false
        for target in targets {
            let inputs = corpus.map { FuzzCorpus.load($0, target: target.name) } ?? []
            var campaign = FuzzCampaign(target: target, seed: seed, corpus: inputs)
            let report = campaign.run(iterations: .max, budget: .milliseconds(Int(seconds * 1000)))
            print(report, "| peak memory \(Int(peakMemoryMiB())) MiB")
            for (input, finding) in report.findings.prefix(20) {
                let path = try FuzzCorpus.save(input, directory: findings, target: target.name, prefix: "finding-")
                print("  FINDING: \(finding) (input saved to \(path))")
            }
            failed = failed || !report.findings.isEmpty
        }
        if peakMemoryMiB() > maxMemoryMiB {
            print("FAIL: peak memory \(Int(peakMemoryMiB())) MiB exceeds \(Int(maxMemoryMiB)) MiB")
            failed = true
        }
        if failed { throw ExitCode(1) }
    }
}

struct HTTP: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fuzz a running node's JSON API (give it worker_cidrs: [127.0.0.0/8]; never point it at a shared node)."
    )

    @Option(help: "The node's base URL (loopback).") var url: String
    @Option(help: "Seconds to run.") var seconds = 30.0
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "API key with the admin scope, when the node requires keys.") var apiKey: String?

    func run() async throws {
        guard let host = URL(string: url)?.host, ["127.0.0.1", "localhost", "::1"].contains(host) else {
            throw ValidationError("--url must be a loopback address")
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let fuzzer = HTTPFuzzer(baseURL: url, client: client, headers: apiKey.map { [("Authorization", "Bearer \($0)")] } ?? [])
        let report = await fuzzer.run(seed: seed, iterations: .max, budget: .milliseconds(Int(seconds * 1000)))
        try await client.shutdown()
        print(report)
        for finding in report.findings.prefix(30) { print("  FINDING: \(finding)") }
        if !report.findings.isEmpty { throw ExitCode(1) }
    }
}

struct SeedCorpus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed-corpus", abstract: "Write every target's seeds and a sample of accepted mutations into a corpus directory."
    )

    @Option(help: "Corpus directory.") var out: String
    @Option(help: "Accepted mutations to keep per target.") var mutations = 24

    func run() throws {
        for target in FuzzTargets.all {
            var campaign = FuzzCampaign(target: target, seed: 7)
            let seeds = campaign.pool.count
            _ = campaign.run(iterations: 20_000, budget: .seconds(20))
            let kept = campaign.pool.prefix(seeds) + campaign.pool.dropFirst(seeds).prefix(mutations)
            for input in kept { try FuzzCorpus.save(input, directory: out, target: target.name) }
            print("\(target.name): \(kept.count) inputs")
        }
    }
}
