import Foundation
import Fuzzing
import Testing

/// A bounded fuzzing pass over every binary decoder, from its seeds and the committed corpus
/// (`Corpus/<target>/`); `Scripts/fuzz.sh` runs the same campaigns for as long as it is told.
@Suite struct FuzzingTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus").path

    @Test(arguments: FuzzTargets.all.map(\.name))
    func boundedPassFindsNothing(target name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let corpus = FuzzCorpus.load(Self.corpus, target: name)
        #expect(!corpus.isEmpty, "the committed corpus has inputs for \(name)")
        var campaign = FuzzCampaign(target: target, seed: 20_261_202, corpus: corpus)
        let report = campaign.run(iterations: 50_000, budget: .seconds(30))
        #expect(report.inputs >= corpus.count)
        #expect(report.accepted > 0, "some inputs decode, so the pass reaches past the first check")
        for (input, finding) in report.findings.prefix(5) {
            Issue.record("\(name): \(finding) on \(input.prefix(64).map { String($0, radix: 16) }.joined(separator: " "))")
        }
    }

    /// The harness itself: a planted defect is found, and the same seed replays the same inputs.
    @Test func aPlantedDefectIsFoundAndSeedsReplay() {
        struct Planted: FuzzTarget {
            let name = "planted"
            func seeds() -> [[UInt8]] { [[1, 2, 3, 4, 5, 6, 7, 8]] }
            func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
                if input.count > 3, input[3] == 0xFF { throw FuzzFinding("byte 3 is 0xFF") }
                return true
            }
        }
        var campaign = FuzzCampaign(target: Planted(), seed: 1)
        let report = campaign.run(iterations: 20_000, budget: .seconds(20))
        #expect(!report.findings.isEmpty, "the mutator reaches an interesting byte at a fixed offset")

        var first = Mutator(seed: 99), second = Mutator(seed: 99)
        let input: [UInt8] = Array(0..<64)
        #expect((0..<100).map { _ in first.mutate(input) } == (0..<100).map { _ in second.mutate(input) })
    }
}
