import AsyncHTTPClient
import Foundation
import FulcrumAPI
import Hummingbird
import Logging
import NetworkTestSupport
import NIOCore
import ServiceLifecycle
import Simulator
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Simulated engines in the test process, one HTTP server each.
final class EngineFleet: Sendable {
    let engines: [SimulatedEngine]
    let addresses: [String]
    private let servers: RunningServices

    /// `count` engines listening on `host` (a node in a network namespace reaches the test's
    /// namespace through the bridge address, not loopback).
    init(count: Int, tokenIntervalMilliseconds: Int = 0, host: String = "127.0.0.1") async throws {
        let ports = freePorts(count)
        var logger = Logger(label: "engines")
        logger.logLevel = .critical
        engines = (0..<count).map { SimulatedEngine(options: .init(id: "e\($0)", model: "m", tokenIntervalMilliseconds: tokenIntervalMilliseconds)) }
        addresses = ports.map { "\(host):\($0)" }
        let apps = zip(engines, ports).map { engine, port in
            Application(router: engine.makeRouter(), configuration: .init(address: .hostname(host, port: port)), logger: logger)
        }
        servers = RunningServices(apps, logger: logger)
        for address in addresses {
            var up = false
            for _ in 0..<200 where !up {
                up = (try? await ProcessCluster.http.execute(HTTPClientRequest(url: "http://\(address)/health"), timeout: .seconds(1)).status.code) == 200
                if !up { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
    }

    func stop() async { await servers.stop() }
}

/// The serving layer across real `fulcrum` processes: routing via leader and followers,
/// streaming through a follower, failover under traffic, fail-open, auth and rate limits.
@Suite(.serialized) struct ServingClusterTests {
    static func register(_ cluster: ProcessCluster, _ fleet: EngineFleet, via id: UInt64, headers: [(String, String)] = []) async throws {
        for (index, address) in fleet.addresses.enumerated() {
            let answer = try await cluster.request(
                .POST, cluster.endpoint(id) + "/v1/workers",
                json: #"{"id":"e\#(index)","model":"m","role":"PDFUSION","address":"\#(address)"}"#, headers: headers
            )
            guard answer.status == 200 else { throw IntegrationError("register via \(id): \(answer)") }
        }
    }

    /// Runs `body` with a 3-node cluster and simulated engines, and always stops both.
    static func with(
        engines: Int, tokenIntervalMilliseconds: Int = 0, founders: Int = 3, environment: [String: String],
        _ body: (ProcessCluster, EngineFleet) async throws -> Void
    ) async throws {
        let fleet = try await EngineFleet(count: engines, tokenIntervalMilliseconds: tokenIntervalMilliseconds)
        let cluster: ProcessCluster
        do {
            cluster = try ProcessCluster(founders: founders, environment: environment)
        } catch {
            await fleet.stop()
            throw error
        }
        do {
            try await body(cluster, fleet)
        } catch {
            cluster.stopAll()
            await fleet.stop()
            throw error
        }
        cluster.stopAll()
        await fleet.stop()
    }

    static func worker(_ answer: HTTPAnswer) -> String? {
        answer.decode(RouteResponse.self)?.targets.first?.workerId
    }

    @Test(.timeLimit(.minutes(2)))
    func routesThroughAnyNodeStreamsAndSurvivesTheLeadersDeath() async throws {
        try await Self.with(engines: 4, tokenIntervalMilliseconds: 40, environment: ["FULCRUM_FAIL_OPEN": "true"]) { cluster, fleet in
            let leader = try await cluster.leader()
            try await cluster.waitUntilReady()
            let followers = cluster.founders.filter { $0 != leader }
            try await Self.register(cluster, fleet, via: followers[0])
            // `fulcrum agent` registers a host and reports its resources, through a follower.
            let agent = Process()
            agent.executableURL = cluster.binaries.appendingPathComponent("fulcrum")
            agent.arguments = [
                "agent", "--cluster", "http://127.0.0.1:1,\(cluster.endpoint(followers[1]))", "--worker-id", "agent-host",
                "--model", "other", "--role", "DECODE", "--address", fleet.addresses[0], "--label", "status=none", "--once",
            ]
            agent.standardOutput = FileHandle.nullDevice
            agent.standardError = FileHandle.nullDevice
            try agent.run()
            agent.waitUntilExit()
            #expect(agent.terminationStatus == 0)
            var reported = false
            for _ in 0..<100 where !reported {
                let workers = try await cluster.request(.GET, cluster.endpoint(leader) + "/admin/workers").decode(WorkerList.self)?.workers ?? []
                reported = workers.contains { $0.id == "agent-host" && $0.cores > 0 && $0.memoryFreeBytes > 0 }
                if !reported { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(reported, "the agent's heartbeat reached the log")
            // Prompts with distinct prefixes, routed once through each node.
            let prompts = (0..<12).map { "conversation \($0): " + String(repeating: "context of conversation \($0) ", count: 30) }
            var home: [Int: String] = [:]
            for (index, prompt) in prompts.enumerated() {
                let via = cluster.founders[index % 3]
                let answer = try await cluster.request(.POST, cluster.endpoint(via) + "/v1/route", json: #"{"model":"m","prompt":"\#(prompt)"}"#)
                #expect(answer.status == 200, "via \(via): \(answer)")
                #expect(answer.decode(RouteResponse.self)?.decidedBy == leader)
                home[index] = Self.worker(answer)
            }
            #expect(Set(home.values).count > 1)
            // SSE through a follower arrives chunk by chunk.
            var request = HTTPClientRequest(url: cluster.endpoint(followers[1]) + "/v1/chat/completions")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: #"{"model":"m","stream":true,"max_tokens":6,"messages":[{"role":"user","content":"hi"}]}"#))
            let response = try await ProcessCluster.http.execute(request, timeout: .seconds(10))
            #expect(response.status.code == 200)
            var arrivals: [ContinuousClock.Instant] = []
            var text = ""
            for try await chunk in response.body {
                arrivals.append(.now)
                text += String(buffer: chunk)
            }
            // Six tokens, then the chunk with `finish_reason`.
            #expect(text.components(separatedBy: "data: {").count - 1 == 7 && text.hasSuffix("data: [DONE]\n\n"))
            #expect(arrivals.count >= 4 && arrivals.last! - arrivals.first! >= .milliseconds(150))

            // Give the leader a flush interval to replicate the prefixes it decided.
            try await Task.sleep(for: .milliseconds(400))
            // Kill the leader while clients keep routing through the followers.
            let failures = ManagedCounter()
            let successes = ManagedCounter()
            let traffic = Task {
                var index = 0
                while !Task.isCancelled {
                    let via = followers[index % 2]
                    index += 1
                    let answer = try? await cluster.request(.POST, cluster.endpoint(via) + "/v1/route", json: #"{"model":"m","prompt":"background \#(index)"}"#)
                    if answer?.status == 200 { successes.add() } else { failures.add() }
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            cluster.kill9(leader)
            let successor = try await cluster.leader()
            #expect(successor != leader)
            let before = successes.value
            try await Task.sleep(for: .milliseconds(500))
            #expect(successes.value > before, "routing resumed after the failover")
            traffic.cancel()
            _ = await traffic.result
            // The new leader took over warm: the same prompts still go where their prefixes are.
            var kept = 0
            for (index, prompt) in prompts.enumerated() {
                let answer = try await cluster.request(.POST, cluster.endpoint(successor) + "/v1/route", json: #"{"model":"m","prompt":"\#(prompt)"}"#)
                #expect(answer.decode(RouteResponse.self)?.decidedBy == successor)
                if Self.worker(answer) == home[index] { kept += 1 }
            }
            #expect(kept == prompts.count, "\(kept) of \(prompts.count) kept their prefix affinity")

            // With no leader left, the survivor routes on its own state (fail_open), marked degraded.
            let survivor = followers.first { $0 != successor }!
            cluster.kill9(successor)
            var degraded = false
            let deadline = Date().addingTimeInterval(15)
            while !degraded && Date() < deadline {
                let answer = try await cluster.requestWithHeaders(.POST, cluster.endpoint(survivor) + "/v1/route", json: #"{"model":"m","prompt":"x"}"#)
                degraded = answer.answer.status == 200 && answer.headers.first(name: "X-Fulcrum-Degraded") == "1"
                    && answer.answer.decode(RouteResponse.self)?.degraded == true
                if !degraded { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(degraded)
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func withoutFailOpenNoLeaderMeans503AndAuthAndRateLimitsHoldAcrossNodes() async throws {
        // The harness polls with its own key: the rate limit counts per key, so waiting for a
        // leader (however long the election takes) spends none of the budget measured below.
        let key = "integration-key-0123456789"
        let harnessKey = "harness-key-0123456789"
        let environment = [
            "FULCRUM_API_KEYS": "\(key):admin,\(harnessKey):admin", "FULCRUM_RATE_LIMIT_RPS": "5", "FULCRUM_RATE_LIMIT_BURST": "10",
        ]
        try await Self.with(engines: 2, environment: environment) { cluster, fleet in
            let auth = [("Authorization", "Bearer \(key)")]
            cluster.defaultHeaders = [("X-API-Key", harnessKey)]
            let leader = try await cluster.leader()
            try await cluster.waitUntilReady()
            let follower = cluster.founders.first { $0 != leader }!
            try await Self.register(cluster, fleet, via: follower, headers: auth)
            // The follower checks the key and forwards it; the leader checks it again.
            cluster.defaultHeaders = []
            let anonymous = try await cluster.request(.POST, cluster.endpoint(follower) + "/v1/route", json: #"{"model":"m"}"#)
            #expect(anonymous.status == 401)
            let keyed = try await cluster.request(.POST, cluster.endpoint(follower) + "/v1/route", json: #"{"model":"m"}"#, headers: auth)
            #expect(keyed.status == 200, "\(keyed)")
            // The follower's rate limit applies to its clients; its forwards do not count twice.
            var limited = 0
            for _ in 0..<60 {
                let answer = try await cluster.requestWithHeaders(.POST, cluster.endpoint(follower) + "/v1/route", json: #"{"model":"m"}"#, headers: auth)
                if answer.answer.status == 429 {
                    limited += 1
                    #expect(answer.headers.first(name: "Retry-After") != nil)
                }
            }
            #expect(limited > 10)
            let leaderAnswer = try await cluster.request(.POST, cluster.endpoint(leader) + "/v1/route", json: #"{"model":"m"}"#, headers: auth)
            #expect(leaderAnswer.status == 200)
            // No leader and no fail_open: 503 with Retry-After.
            for id in cluster.founders where id != follower { cluster.kill9(id) }
            var unavailable = false
            let deadline = Date().addingTimeInterval(15)
            while !unavailable && Date() < deadline {
                try await Task.sleep(for: .milliseconds(1_100))
                let answer = try await cluster.requestWithHeaders(.POST, cluster.endpoint(follower) + "/v1/route", json: #"{"model":"m"}"#, headers: auth)
                unavailable = answer.answer.status == 503 && answer.headers.first(name: "Retry-After") != nil
            }
            #expect(unavailable)
        }
    }

    /// What the `openai` SDK meets through a follower: `/v1/models` from the registry, every
    /// error in OpenAI's shape, embeddings and the Responses API proxied, and a chat request
    /// carrying a 20 MB base64 image (under the 64 MiB default; 70 MB is refused up front).
    /// Shapes as vllm-project/vllm `vllm/entrypoints/openai/protocol.py` (ec3b890) defines them
    /// for the same endpoints: `ErrorResponse{error: ErrorInfo{message, type, param, code}}`
    /// (vLLM's `code` is the status number; OpenAI's, and Fulcrum's, a string) and the model
    /// list (`object: "list"`, cards with `id`, `object: "model"`, `created`, `owned_by`, `root`).
    @Test(.timeLimit(.minutes(2)))
    func openAISurfaceThroughAFollower() async throws {
        try await Self.with(engines: 2, environment: [:]) { cluster, fleet in
            let leader = try await cluster.leader()
            try await cluster.waitUntilReady()
            let follower = try #require(cluster.founders.first { $0 != leader })
            let base = cluster.endpoint(follower)
            func object(_ answer: HTTPAnswer) -> [String: Any] { (try? JSONSerialization.jsonObject(with: answer.data) as? [String: Any]) ?? [:] }
            func errorDetail(_ answer: HTTPAnswer) -> [String: Any] { object(answer)["error"] as? [String: Any] ?? [:] }
            // Before any worker: an empty list, and a model that is not there is OpenAI's 404.
            let empty = try await cluster.request(.GET, base + "/v1/models")
            #expect(empty.status == 200 && object(empty)["object"] as? String == "list" && (object(empty)["data"] as? [Any])?.isEmpty == true, "\(empty)")
            try await Self.register(cluster, fleet, via: follower)
            _ = try await cluster.request(.PUT, cluster.endpoint(leader) + "/admin/config/aliases/latest", json: #"{"model":"m"}"#)
            var ids: [String] = []
            for _ in 0..<100 where ids != ["latest", "m"] {
                let answer = try await cluster.request(.GET, base + "/v1/models")
                ids = (object(answer)["data"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                if ids != ["latest", "m"] { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(ids == ["latest", "m"], "the follower lists the model and its alias")
            let card = try await cluster.request(.GET, base + "/v1/models/latest")
            #expect(object(card)["object"] as? String == "model" && object(card)["root"] as? String == "m" && object(card)["owned_by"] as? String == "fulcrum" && object(card)["created"] is Int)
            let missing = try await cluster.request(.GET, base + "/v1/models/nope")
            #expect(missing.status == 404 && errorDetail(missing)["type"] as? String == "not_found_error" && errorDetail(missing)["param"] as? String == "model")
            // Errors: message, type, param (null when none), code — from the API, from the router, from Hummingbird.
            let bad = try await cluster.request(.POST, base + "/v1/chat/completions", json: #"{"model":"m","messages":[]}"#)
            let detail = errorDetail(bad)
            #expect(bad.status == 400 && detail["type"] as? String == "invalid_request_error" && detail["param"] as? String == "messages"
                && detail["code"] is String && (detail["message"] as? String)?.isEmpty == false, "\(bad)")
            let unknownModel = try await cluster.request(.POST, base + "/v1/completions", json: #"{"model":"other","prompt":"x"}"#)
            #expect(unknownModel.status == 404 && errorDetail(unknownModel)["type"] as? String == "not_found_error", "\(unknownModel)")
            let nowhere = try await cluster.request(.GET, base + "/v1/nothing")
            #expect(nowhere.status == 404 && errorDetail(nowhere)["code"] as? String == "not_found" && errorDetail(nowhere).keys.contains("param"), "\(nowhere)")
            // Embeddings and the Responses API reach an engine.
            let embedded = try await cluster.request(.POST, base + "/v1/embeddings", json: #"{"model":"m","input":["first text","second text"]}"#)
            #expect(embedded.status == 200 && (object(embedded)["data"] as? [Any])?.count == 2, "\(embedded)")
            let responded = try await cluster.request(.POST, base + "/v1/responses", json: #"{"model":"latest","input":[{"role":"user","content":"hello"}],"max_output_tokens":3}"#)
            #expect(responded.status == 200 && object(responded)["object"] as? String == "response" && object(responded)["status"] as? String == "completed", "\(responded)")
            let streamed = try await cluster.request(.POST, base + "/v1/responses", json: #"{"model":"m","input":"hello","stream":true,"max_output_tokens":2}"#)
            #expect(streamed.status == 200 && String(decoding: streamed.data, as: UTF8.self).contains("event: response.completed"))
            let paths = fleet.engines.flatMap { $0.served.map(\.path) }
            #expect(paths.contains("/v1/embeddings") && paths.contains("/v1/responses"))
            // A 20 MB base64 image through the follower, to an engine, whole.
            let image = String(repeating: "iVBORw0KGgo", count: (20 << 20) / 11)
            let chat = #"{"model":"m","max_tokens":2,"messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,"# + image + #""}}]}]}"#
            let before = fleet.engines.reduce(0) { $0 + $1.served.count }
            let answered = try await cluster.request(.POST, base + "/v1/chat/completions", json: chat, timeout: .seconds(30))
            #expect(answered.status == 200, "\(answered)")
            #expect(fleet.engines.reduce(0) { $0 + $1.served.count } == before + 1)
            let tooLarge = try await cluster.request(.POST, base + "/v1/chat/completions", json: String(repeating: " ", count: 70 << 20), timeout: .seconds(30))
            #expect(tooLarge.status == 413 && errorDetail(tooLarge)["code"] as? String == "body_too_large", "\(tooLarge)")
            // The leader measures the round trip of its heartbeats to each peer (etcd's
            // etcd_network_peer_round_trip_time_seconds), labelled by the peer's id.
            let metrics = String(decoding: try await cluster.request(.GET, cluster.endpoint(leader) + "/metrics").data, as: UTF8.self)
            for peer in cluster.founders where peer != leader {
                #expect(metrics.contains("fulcrum_network_peer_round_trip_time_seconds_count{to=\"\(peer)\"}"), "no round trips to node \(peer)")
            }
        }
    }
}

/// A counter shared between a traffic task and the test.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
