import Foundation
import WireCoding

/// A decoder under fuzzing. `run` must reject malformed input with an error of its own kind
/// (caught inside, counted as rejected) and report a broken property as a ``FuzzFinding``. A
/// crash ends the process, which is what the suite and the script then report.
public protocol FuzzTarget: Sendable {
    var name: String { get }
    /// Well-formed inputs to start from (the committed corpus adds to them).
    func seeds() -> [[UInt8]]
    /// Runs one input; true when it was accepted (decoded), false when rejected.
    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool
}

/// A property that did not hold for one input.
public struct FuzzFinding: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A bounded fuzzing run over one target: mutates seeds and corpus entries, keeps accepted
/// inputs as further starting points (bounded), and records findings and the slowest input.
public struct FuzzCampaign: Sendable {
    public struct Report: Sendable, CustomStringConvertible {
        public var target: String
        public var inputs = 0
        public var accepted = 0
        public var findings: [(input: [UInt8], finding: FuzzFinding)] = []
        public var slowest: Duration = .zero
        public var elapsed: Duration = .zero

        public var description: String {
            let rate = Double(inputs) / max(elapsed.seconds, 1e-9)
            return "\(target): \(inputs) inputs (\(accepted) accepted) in \(String(format: "%.1f", elapsed.seconds)) s, "
                + "\(Int(rate))/s, slowest \(String(format: "%.2f", slowest.seconds * 1000)) ms, findings \(findings.count)"
        }
    }

    public let target: any FuzzTarget
    public var mutator: Mutator
    public var pool: [[UInt8]]
    /// An input slower than this is a finding (a decoder that can be made to spin).
    public var slowInput: Duration
    public static let maxPool = 1024

    public init(target: any FuzzTarget, seed: UInt64, corpus: [[UInt8]] = [], slowInput: Duration = .seconds(1)) {
        self.target = target
        mutator = Mutator(seed: seed)
        pool = target.seeds() + corpus
        if pool.isEmpty { pool = [[]] }
        self.slowInput = slowInput
    }

    /// Runs every pool entry once as is, then mutations until `iterations` or `budget` runs out.
    public mutating func run(iterations: Int, budget: Duration) -> Report {
        var report = Report(target: target.name)
        let clock = ContinuousClock()
        let start = clock.now
        let originals = pool
        for input in originals { execute(input, into: &report, clock: clock) }
        while report.inputs - originals.count < iterations, clock.now - start < budget {
            let base = pool[mutator.below(pool.count)]
            let other = pool[mutator.below(pool.count)]
            let input = mutator.mutate(base, other: other)
            if execute(input, into: &report, clock: clock), pool.count < Self.maxPool { pool.append(input) }
        }
        report.elapsed = clock.now - start
        return report
    }

    @discardableResult
    private func execute(_ input: [UInt8], into report: inout Report, clock: ContinuousClock) -> Bool {
        let began = clock.now
        var accepted = false
        do {
            accepted = try target.run(input)
        } catch {
            report.findings.append((input, error))
        }
        let took = clock.now - began
        report.slowest = max(report.slowest, took)
        if took > slowInput { report.findings.append((input, FuzzFinding("input took \(took)"))) }
        report.inputs += 1
        if accepted { report.accepted += 1 }
        return accepted
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Corpus files: one input per file under `directory/target/`.
public enum FuzzCorpus {
    public static func load(_ directory: String, target: String) -> [[UInt8]] {
        let folder = URL(fileURLWithPath: directory).appendingPathComponent(target)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.sorted().compactMap { name in
            (try? Data(contentsOf: folder.appendingPathComponent(name))).map { [UInt8]($0) }
        }
    }

    /// Saves `input` under a name derived from its content; returns the path.
    @discardableResult
    public static func save(_ input: [UInt8], directory: String, target: String, prefix: String = "") throws -> String {
        let folder = URL(fileURLWithPath: directory).appendingPathComponent(target)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var hasher = StableHasher()
        hasher.combine(bytes: input)
        let path = folder.appendingPathComponent(prefix + String(hasher.finalized, radix: 16)).path
        try Data(input).write(to: URL(fileURLWithPath: path))
        return path
    }
}
