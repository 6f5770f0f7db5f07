import Foundation
import FulcrumAPI
import NetworkTestSupport
import Testing

/// The precise prefix index across a failover, on real processes: a simulated vLLM engine
/// (`fulcrum-sim engines --engine vllm --kv-events-base-port`) publishes its KV events over
/// ZeroMQ; every node follows them. Prompts go to the engine directly, so only its events can
/// tell the cluster what it holds.
@Suite(.serialized) struct KVEventsProcessTests {
    static func direct(_ cluster: ProcessCluster, port: Int, tokens: [Int]) async throws {
        let body = #"{"model":"m","max_tokens":1,"prompt":[\#(tokens.map(String.init).joined(separator: ","))]}"#
        let answer = try await cluster.request(.POST, "http://127.0.0.1:\(port)/v1/completions", json: body)
        guard answer.status == 200 else { throw IntegrationError("the engine answered \(answer)") }
    }

    static func matched(_ cluster: ProcessCluster, _ node: UInt64, tokens: [Int]) async throws -> Int? {
        let body = #"{"model":"m","token_ids":[\#(tokens.map(String.init).joined(separator: ","))],"tokens_per_block":16}"#
        return try await cluster.request(.POST, cluster.endpoint(node) + "/v1/route", json: body).decode(RouteResponse.self)?.targets.first?.matchedBlocks
    }

    @Test(.timeLimit(.minutes(3)))
    func aNewLeaderRoutesOnThePreciseIndexAtOnce() async throws {
        guard let ports = freePortRun(length: 3) else { throw IntegrationError("no three consecutive free ports") }
        let (http, events) = (ports, ports + 1)
        let engine = Process()
        engine.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fulcrum-sim")
        engine.arguments = [
            "engines", "--engine", "vllm", "--count", "1", "--base-port", "\(http)", "--model", "m", "--block-size", "16",
            "--kv-tokens", "2048", "--kv-events-base-port", "\(events)",
        ]
        engine.standardOutput = FileHandle.nullDevice
        engine.standardError = FileHandle.nullDevice
        try engine.run()
        defer {
            engine.terminate()
            engine.waitUntilExit()
        }
        let cluster = try ProcessCluster(founders: 3, environment: ["FULCRUM_LOG_LEVEL": "warning"])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        let body = #"{"id":"v","model":"m","role":"PDFUSION","address":"127.0.0.1:\#(http)","engine":"vllm","kv_events":{"endpoint":"tcp://127.0.0.1:\#(events)","replay_endpoint":"tcp://127.0.0.1:\#(events + 1)"}}"#
        let registered = try await cluster.request(.POST, cluster.endpoint(leader) + "/v1/workers", json: body)
        #expect(registered.status == 200, "\(registered)")
        try await FlexLBProcessTests.waitFor("the engine up") {
            try await cluster.request(.GET, "http://127.0.0.1:\(http)/health").status == 200
        }
        // Give every node's subscription a moment, then warm the engine around the cluster.
        try await Task.sleep(for: .milliseconds(500))
        let first = Array(1...64)
        try await Self.direct(cluster, port: http, tokens: first)
        try await FlexLBProcessTests.waitFor("the leader's index to hold the engine's 4 blocks") {
            try await FlexLBProcessTests.worker(cluster, leader, "v")?.cachedBlocks == 4
        }
        cluster.kill9(leader)
        let next = try await cluster.leader()
        let tookOver = ContinuousClock.now
        // The replicated index: the new leader finds the blocks with no event since.
        #expect(try await Self.matched(cluster, next, tokens: first + [7, 7]) == 4)
        // Its own subscription was warm: an event after the failover lands at once.
        let second = Array(1_001...1_032)
        try await Self.direct(cluster, port: http, tokens: second)
        try await FlexLBProcessTests.waitFor("the new leader's index to take the next event", seconds: 5) {
            try await FlexLBProcessTests.worker(cluster, next, "v")?.cachedBlocks == 6
        }
        let elapsed = ContinuousClock.now - tookOver
        #expect(elapsed < .seconds(3), "the index followed the engine \(elapsed) after the new leader was known")
        #expect(try await Self.matched(cluster, next, tokens: second) == 2)
    }
}
