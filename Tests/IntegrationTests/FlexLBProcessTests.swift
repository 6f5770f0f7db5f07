import Foundation
import FulcrumAPI
import NetworkTestSupport
import Testing

/// An rtp-llm frontend, as upstream writes it, against a 3-node cluster of real processes
/// (issue 17): discovery by `POST /rtp_llm/master/info`, `Schedule` over gRPC on the HTTP port
/// + 2, through the master, through a follower and across a leader kill. The client is Python,
/// generated at test time from rtp-llm's proto by grpcio-tools (Tests/Peers/rtp_llm_frontend.py).
@Suite(.serialized) struct FlexLBProcessTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Generates the Python stubs of `Protos/rtp-llm/flexlb_schedule_service.proto` and of the
    /// engine RPC (`model_rpc_service.proto`).
    static func generateClient() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-flexlb-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (status, output) = try python([
            "-m", "grpc_tools.protoc", "--proto_path=\(root.path)/Protos/rtp-llm", "--python_out=\(directory)", "--grpc_python_out=\(directory)",
            "\(root.path)/Protos/rtp-llm/flexlb_schedule_service.proto", "\(root.path)/Protos/rtp-llm/model_rpc_service.proto",
        ])
        guard status == 0 else { throw IntegrationError("grpc_tools.protoc failed (pip install grpcio-tools): \(output)") }
        return directory
    }

    static func python(_ arguments: [String]) throws -> (Int32, String) {
        try runToEnd(URL(fileURLWithPath: "/usr/bin/env"), ["python3"] + arguments)
    }

    /// Runs frontend commands; one JSON object per command.
    static func frontend(_ generated: String, _ cluster: ProcessCluster, _ commands: [String]) async throws -> [[String: Any]] {
        let nodes = cluster.founders.map { "127.0.0.1:\(cluster.httpPorts[$0]!)" }.joined(separator: ",")
        let script = root.appendingPathComponent("Tests/Peers/rtp_llm_frontend.py").path
        let (status, output) = try await Task.detached { try python([script, generated, nodes] + commands) }.value
        guard status == 0 else { throw IntegrationError("frontend failed: \(output)") }
        return try output.split(separator: "\n").map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { throw IntegrationError("not JSON: \(line)") }
            return object
        }
    }

    static func address(_ cluster: ProcessCluster, _ id: UInt64) -> String { "127.0.0.1:\(cluster.httpPorts[id]!)" }

    /// Waits until discovery names exactly `expected`'s address as the master.
    static func discoverMaster(_ generated: String, _ cluster: ProcessCluster, expected: UInt64) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        for _ in 0..<50 {
            last = try await frontend(generated, cluster, ["discover"])[0]
            if last["masters"] as? [String] == [address(cluster, expected)] { return last }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("discovery found \(last), not node \(expected)")
        return last
    }

    @Test(.timeLimit(.minutes(3)))
    func anRTPLLMFrontendSchedulesThroughMasterFollowerAndFailover() async throws {
        let generated = try Self.generateClient()
        defer { try? FileManager.default.removeItem(atPath: generated) }
        let cluster = try ProcessCluster(founders: 3, environment: ["FULCRUM_LOG_LEVEL": "warning"])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        for (id, role, port) in [("p", "PREFILL", 9301), ("d", "DECODE", 9302)] {
            let body = #"{"id":"\#(id)","model":"qwen","role":"\#(role)","address":"127.0.0.1:\#(port)","labels":{"status":"none","grpc_port":"\#(port + 1)"}}"#
            #expect(try await cluster.request(.POST, cluster.endpoint(leader) + "/v1/workers", json: body).status == 200)
        }
        let discovered = try await Self.discoverMaster(generated, cluster, expected: leader)
        #expect(discovered["queue_length"] as? Int == 0)
        let follower = try #require(cluster.founders.first { $0 != leader })
        let answers = try await Self.frontend(generated, cluster, [
            "schedule", Self.address(cluster, leader), "1001", "schedule", Self.address(cluster, follower), "1002",
            "state", Self.address(cluster, leader), "1001", "cancel", Self.address(cluster, leader), "1001",
            "state", Self.address(cluster, leader), "1001", "state", Self.address(cluster, leader), "99",
            "schedule", Self.address(cluster, leader), "0",
        ])
        for answer in answers[0...1] {
            #expect(answer["code"] as? Int == 200 && answer["success"] as? Bool == true, "\(answer)")
            #expect(answer["real_master_host"] as? String == Self.address(cluster, leader))
            #expect(answer["enqueued_by_master"] as? Bool == false && answer["state"] as? String == "REQUEST_STATE_ACKNOWLEDGED")
            let servers = answer["servers"] as? [[String: Any]] ?? []
            #expect(servers.compactMap { $0["role"] as? String } == ["PREFILL", "DECODE"], "\(answer)")
            #expect(servers.first?["http_port"] as? Int == 9301 && servers.first?["grpc_port"] as? Int == 9302)
        }
        #expect(answers[2]["found"] as? Bool == true && answers[2]["state"] as? String == "REQUEST_STATE_ACKNOWLEDGED")
        #expect(answers[3]["found"] as? Bool == true && answers[3]["state"] as? String == "REQUEST_STATE_CANCELLED")
        #expect(answers[4]["state"] as? String == "REQUEST_STATE_CANCELLED")
        #expect(answers[5]["found"] as? Bool == false)
        // proto3's default request id is refused as FlexLB refuses it: INVALID_REQUEST.
        #expect(answers[6]["code"] as? Int == 8406 && answers[6]["success"] as? Bool == false, "\(answers[6])")

        // The leader dies; discovery finds the next one, which schedules.
        cluster.kill9(leader)
        let next = try await cluster.leader()
        try await cluster.waitUntilReady()
        _ = try await Self.discoverMaster(generated, cluster, expected: next)
        let after = try await Self.frontend(generated, cluster, ["schedule", Self.address(cluster, next), "1003"])[0]
        #expect(after["code"] as? Int == 200 && (after["servers"] as? [[String: Any]])?.count == 2, "\(after)")
        #expect(after["real_master_host"] as? String == Self.address(cluster, next))
    }

    /// A worker as the leader sees it.
    static func worker(_ cluster: ProcessCluster, _ leader: UInt64, _ id: String) async throws -> WorkerView? {
        try await cluster.request(.GET, cluster.endpoint(leader) + "/admin/workers").decode(WorkerList.self)?.workers.first { $0.id == id }
    }

    static func waitFor(_ what: String, seconds: Double = 20, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? await condition()) == true { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw IntegrationError("timed out waiting for \(what)")
    }

    /// Runs `body` with two simulated rtp-llm engines registered (through a follower) in a
    /// 3-node cluster, and always stops both.
    static func withRTPLLMCluster(
        model: String, blockSize: Int, _ body: (ProcessCluster, _ base: Int, _ leader: UInt64, _ follower: UInt64) async throws -> Void
    ) async throws {
        let (engines, base) = try startRTPLLMEngines(model: model, blockSize: blockSize)
        defer {
            engines.terminate()
            engines.waitUntilExit()
        }
        let cluster = try ProcessCluster(founders: 3, environment: ["FULCRUM_LOG_LEVEL": "warning"])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        guard let follower = cluster.founders.first(where: { $0 != leader }) else { throw IntegrationError("no follower") }
        try await registerRTPLLMEngines(cluster, base: base, model: model, blockSize: blockSize, via: follower, leader: leader)
        try await body(cluster, base, leader, follower)
    }

    /// Two simulated rtp-llm engines (`fulcrum-sim engines --engine rtp-llm`): HTTP on `base` and
    /// `base + 2`, their engine gRPC on each + 1.
    static func startRTPLLMEngines(model: String, blockSize: Int) throws -> (Process, base: Int) {
        guard let base = freePortRun(length: 4) else { throw IntegrationError("no four consecutive free ports") }
        let engines = Process()
        engines.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fulcrum-sim")
        engines.arguments = ["engines", "--engine", "rtp-llm", "--count", "2", "--base-port", "\(base)", "--model", model, "--block-size", "\(blockSize)"]
        engines.standardOutput = FileHandle.nullDevice
        engines.standardError = FileHandle.nullDevice
        try engines.run()
        return (engines, base)
    }

    /// Registers both engines through node `via` as `e0` and `e1` (`"engine": "rtp-llm"`) and waits
    /// until the leader finds them healthy.
    static func registerRTPLLMEngines(_ cluster: ProcessCluster, base: Int, model: String, blockSize: Int, via: UInt64, leader: UInt64) async throws {
        for index in 0..<2 {
            let body = #"{"id":"e\#(index)","model":"\#(model)","role":"PDFUSION","address":"127.0.0.1:\#(base + 2 * index)","engine":"rtp-llm","capacity":{"block_size":\#(blockSize)}}"#
            let answer = try await cluster.request(.POST, cluster.endpoint(via) + "/v1/workers", json: body)
            guard answer.status == 200 else { throw IntegrationError("registering e\(index): \(answer)") }
        }
        try await waitFor("both engines healthy") {
            try await cluster.request(.GET, cluster.endpoint(leader) + "/admin/workers").decode(WorkerList.self)?.workers
                .filter { $0.health == "healthy" }.count == 2
        }
    }

    /// The whole FlexLB path with rtp-llm engines: simulated engines (`fulcrum-sim engines
    /// --engine rtp-llm`) serve rtp-llm's engine gRPC; the leader polls their status and cached
    /// keys; a frontend computes `block_cache_keys` from its token ids, schedules, and sends the
    /// request to the chosen engine. A prompt an engine got from elsewhere is found there by
    /// the keys the engine reports (Fulcrum never routed it), the request's hold ends when the
    /// engine reports it finished, and a new master routes the same way.
    @Test(.timeLimit(.minutes(3)))
    func requestsFindTheCacheRTPLLMEnginesReportThroughAFollowerAndANewMaster() async throws {
        let generated = try Self.generateClient()
        defer { try? FileManager.default.removeItem(atPath: generated) }
        try await Self.withRTPLLMCluster(model: "qwen", blockSize: 16) { cluster, base, leader, follower in
            // Engine 1 serves a 100-token prompt nobody scheduled: 6 full blocks of 16.
            let warmed = try await Self.frontend(generated, cluster, ["generate", "127.0.0.1:\(base + 2)", "5001", "100", "7"])[0]
            #expect(warmed["outputs"] as? Int == 4 && warmed["finished"] as? [Bool] == [true], "\(warmed)")
            try await Self.waitFor("the leader's index to hold engine 1's blocks") { try await Self.worker(cluster, leader, "e1")?.cachedBlocks == 6 }

            // The same prompt through a follower goes to engine 1, which reuses the 96 cached tokens.
            let served = try await Self.frontend(generated, cluster, ["request", Self.address(cluster, follower), "5002", "100", "7"])[0]
            #expect(served["code"] as? Int == 200 && served["server"] as? String == "127.0.0.1:\(base + 2)", "\(served)")
            #expect(served["reuse_len"] as? Int == 96, "\(served)")
            // Frontends never release: the engine's finished-request report ends the hold (30 s otherwise).
            try await Self.waitFor("the hold to end", seconds: 10) { try await Self.worker(cluster, leader, "e1")?.reservedRequests == 0 }

            // A new master reads the same engines and routes the same way.
            cluster.kill9(leader)
            let next = try await cluster.leader()
            try await cluster.waitUntilReady()
            let after = try await Self.frontend(generated, cluster, ["request", Self.address(cluster, next), "5003", "100", "7"])[0]
            #expect(after["code"] as? Int == 200 && after["server"] as? String == "127.0.0.1:\(base + 2)", "\(after)")
            #expect(after["reuse_len"] as? Int == 96, "\(after)")
            // The master polls the engine: once it reports the request finished, so does GetRequestState.
            try await Self.waitFor("the schedule to complete", seconds: 10) {
                try await Self.frontend(generated, cluster, ["state", Self.address(cluster, next), "5003"])[0]["state"] as? String == "REQUEST_STATE_COMPLETED"
            }
        }
    }

    /// `fulcrum-sim replay --flexlb` (the rtp-llm path of `Scripts/sim-compare.sh`): a small
    /// trace of two conversations with growing prefixes, served as frontends serve it, completes
    /// without errors and finds the prefixes cached.
    @Test(.timeLimit(.minutes(3)))
    func aTraceReplayedAsRTPLLMFrontendsServeItFindsItsPrefixes() async throws {
        try await Self.withRTPLLMCluster(model: "sim-model", blockSize: 64) { cluster, _, _, follower in
            let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            // Two conversations, four turns each, 300 ms apart: each turn repeats the last one's blocks.
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-replay-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            var lines: [String] = []
            for turn in 0..<4 {
                for conversation in 0..<2 {
                    let blocks = (0..<(4 * (turn + 1))).map { String(conversation * 1_000 + $0) }
                    lines.append(#"{"timestamp": \#(300 * (2 * turn + conversation)), "input_length": \#(64 * blocks.count), "output_length": 2, "hash_ids": [\#(blocks.joined(separator: ", "))]}"#)
                }
            }
            let trace = directory.appendingPathComponent("trace.jsonl").path
            try lines.joined(separator: "\n").write(toFile: trace, atomically: true, encoding: .utf8)
            let out = directory.appendingPathComponent("report").path
            let (status, output) = try await Task.detached {
                try runToEnd(binaries.appendingPathComponent("fulcrum-sim"), [
                    "replay", "--flexlb", "--trace", trace, "--target", "http://\(Self.address(cluster, follower))", "--name", "flexlb", "--out", out,
                ])
            }.value
            #expect(status == 0, "\(output)")
            let summary = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/summary.json"))) as? [String: Any], "\(output)"
            )
            #expect(summary["completed"] as? Int == 8 && summary["errors"] as? Int == 0, "\(output)")
            // Each later turn reuses at least its predecessor's full blocks when routed to them.
            #expect((summary["hit_ratio"] as? Double ?? 0) > 0.3, "\(output)")
        }
    }
}
