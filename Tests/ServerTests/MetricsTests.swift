import Foundation
import Serving
import Simulator
import Testing

/// The metrics operators build on: the alert rules pass `promtool`, and every metric the
/// dashboard and the rules name is served by a live node.
@Suite struct MetricsTests {
    static let root = DeploymentTests.root

    /// The `fulcrum_…` metric families an expression file names (histogram series folded into
    /// their family).
    static func families(in relativePath: String) throws -> Set<String> {
        let text = try String(contentsOf: root.appendingPathComponent(relativePath), encoding: .utf8)
        let pattern = try NSRegularExpression(pattern: "fulcrum_[a-z0-9_]+")
        let names = pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { Range($0.range, in: text).map { String(text[$0]) } }
        return Set(names.map { name in
            for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) { return String(name.dropLast(suffix.count)) }
            return name
        })
    }

    @Test(.timeLimit(.minutes(1)))
    func alertRulesPassPromtool() throws {
        let checked = try DeploymentTests.run(["promtool", "check", "rules", Self.root.appendingPathComponent("Deploy/prometheus/alerts.yaml").path])
        #expect(checked.status == 0 && checked.output.contains("SUCCESS"), "promtool (Debian's prometheus; Scripts/test.sh installs it): \(checked.output)")
    }

    /// The runbook's rows and the rules are the same alerts.
    @Test func theRunbookAndTheRulesNameTheSameAlerts() throws {
        let rules = try String(contentsOf: Self.root.appendingPathComponent("Deploy/prometheus/alerts.yaml"), encoding: .utf8)
            .split(separator: "\n").compactMap { line -> String? in
                let text = line.trimmingCharacters(in: .whitespaces)
                return text.hasPrefix("- alert: ") ? String(text.dropFirst("- alert: ".count)) : nil
            }
        let operations = try String(contentsOf: Self.root.appendingPathComponent("Docs/operations.md"), encoding: .utf8)
        let runbook = operations.components(separatedBy: "## Runbook").last ?? ""
        let rows = runbook.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("| **"), let end = line.dropFirst(4).range(of: "**") else { return nil }
            return String(line.dropFirst(4)[..<end.lowerBound])
        }
        #expect(rules.count >= 15 && rules == rows, "rules \(rules), runbook \(rows)")
    }

    @Test(.timeLimit(.minutes(1)))
    func everyMetricTheDashboardAndTheRulesUseIsServed() async throws {
        let used = try Self.families(in: "Deploy/grafana/fulcrum.json").union(Self.families(in: "Deploy/prometheus/alerts.yaml"))
        #expect(used.count >= 30)
        try await ServingHarness.with(engines: [.init(id: "e0", model: "m")]) { harness in
            try await harness.register(0)
            let chat = try await harness.post("/v1/chat/completions", #"{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(chat.status == 200, "\(chat.text)")
            _ = try await harness.post("/v1/route", #"{"model":"absent"}"#)
            let metrics = try await harness.get("/metrics")
            #expect(metrics.status == 200)
            let served = Set(metrics.text.split(separator: "\n").compactMap { line -> String? in
                let words = line.split(separator: " ")
                return words.count >= 3 && words[0] == "#" && words[1] == "TYPE" ? String(words[2]) : nil
            })
            #expect(used.subtracting(served).isEmpty, "named by the dashboard or the rules but not served: \(used.subtracting(served).sorted())")
            // Ids are labels, not values; TTFT buckets reach vLLM's 2,560 s.
            #expect(metrics.text.contains("fulcrum_raft_leader{leader_id=\"") && !metrics.text.contains("fulcrum_raft_leader_id"))
            #expect(metrics.text.contains("fulcrum_upstream_ttft_seconds_bucket{model=\"m\",le=\"2560.0\"}"))
            #expect(metrics.text.contains("fulcrum_build_info{"))
        }
    }
}
