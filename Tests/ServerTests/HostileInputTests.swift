import Fuzzing
@testable import Server
@testable import Serving
import Simulator
import Testing

/// Fuzzed JSON against a live node, and the worker address allow-list that makes it safe.
@Suite(.serialized) struct HostileInputTests {
    static func loopbackWorkersOnly() -> SecuritySettings {
        var security = SecuritySettings()
        security.workerNetworks = [CIDR("127.0.0.0/8")!]
        return security
    }

    @Test(.timeLimit(.minutes(3)))
    func fuzzedJSONBodiesGetA4xxOrSuccessNeverA500() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: Self.loopbackWorkersOnly()) { harness in
            try await harness.register(0)
            let report = await HTTPFuzzer(baseURL: harness.url, client: ServingHarness.client).run(seed: 20_261_202, iterations: 4_000, budget: .seconds(90))
            for finding in report.findings.prefix(10) { Issue.record("\(finding)") }
            #expect(report.requests > 3_000, "\(report)")
            #expect(report.byStatus[200, default: 0] > 0 && report.byStatus[400, default: 0] > 0, "\(report)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func workerAddressesOutsideWorkerCIDRsAreRefused() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: Self.loopbackWorkersOnly()) { harness in
            for address in ["10.0.0.1:80", "169.254.169.254:80", "metadata.internal:80"] {
                let answer = try await harness.post("/v1/workers", #"{"id":"x","model":"m","role":"PDFUSION","address":"\#(address)"}"#)
                #expect(answer.status == 400 && answer.errorField == "address", "\(address): \(answer.status) \(answer.text)")
                let admin = try await harness.post("/admin/workers", #"{"id":"x","model":"m","role":"PDFUSION","address":"\#(address)"}"#)
                #expect(admin.status == 400 && admin.errorField == "address")
            }
            let loopback = try await harness.post("/v1/workers", #"{"id":"y","model":"m","role":"PDFUSION","address":"127.0.0.2:8000"}"#)
            #expect(loopback.status == 200, "\(loopback.text)")
        }
    }
}
