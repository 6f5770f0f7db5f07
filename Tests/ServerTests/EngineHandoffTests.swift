import AsyncHTTPClient
import Foundation
import FulcrumAPI
import NIOCore
@testable import Server
@testable import Serving
import Simulator
import Testing

/// Prefill → decode hand-offs in each engine's own protocol, and the keys engines want, through
/// one node and simulated engines speaking vLLM's and SGLang's dialects.
@Suite struct EngineHandoffTests {
    static func object(_ text: String?) -> [String: Any]? {
        text.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// vLLM's NIXL protocol, byte for byte as vllm-project/vllm's
    /// `tests/v1/kv_connector/nixl_integration/toy_proxy_server.py` (030ea52) builds the
    /// prefill request: `kv_transfer_params` with the six keys, `stream: false`,
    /// `max_tokens: 1`, `max_completion_tokens: 1` only when the client set it, no
    /// `stream_options`, no `min_tokens` / `min_completion_tokens`.
    @Test func vllmPrefillBodyIsTheToyProxys() throws {
        let client: [String: Any] = [
            "model": "m", "prompt": "hi", "stream": true, "stream_options": ["include_usage": true], "max_tokens": 40,
            "max_completion_tokens": 40, "min_tokens": 3, "min_completion_tokens": 3, "temperature": 0.5,
        ]
        let body = Handoff.vllmPrefillBody(client)
        let bytes = String(decoding: try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]), as: UTF8.self)
        #expect(bytes == #"{"kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false,"remote_block_ids":null,"remote_engine_id":null,"remote_host":null,"remote_port":null},"max_completion_tokens":1,"max_tokens":1,"model":"m","prompt":"hi","stream":false,"temperature":0.5}"#)
        // Without max_completion_tokens in the request, none is added.
        #expect(Handoff.vllmPrefillBody(["model": "m"])["max_completion_tokens"] == nil)
    }

    /// The decode request is the client's with the prefill answer's `kv_transfer_params` (the
    /// fields vLLM's `NixlConnectorScheduler.request_finished` returns); an answer without
    /// them leaves the request as it was.
    @Test func vllmDecodeBodyCarriesThePrefillsParameters() throws {
        let answer = ByteBuffer(string: #"{"id":"x","choices":[],"kv_transfer_params":{"do_remote_prefill":true,"do_remote_decode":false,"remote_block_ids":[4,5],"remote_engine_id":"e-1","remote_request_id":"r","remote_host":"10.0.0.7","remote_port":5600,"tp_size":1}}"#)
        let decode = try #require(Self.object(String(buffer: try Handoff.vllmDecodeBody(["model": "m", "max_tokens": 9, "stream": true], prefillAnswer: answer))))
        let params = try #require(decode["kv_transfer_params"] as? [String: Any])
        #expect(params["do_remote_prefill"] as? Bool == true && params["remote_block_ids"] as? [Int] == [4, 5] && params["remote_port"] as? Int == 5600)
        #expect(decode["max_tokens"] as? Int == 9 && decode["stream"] as? Bool == true)
        for empty in [#"{"kv_transfer_params":{}}"#, #"{"choices":[]}"#, "not json"] {
            let plain = try #require(Self.object(String(buffer: try Handoff.vllmDecodeBody(["model": "m"], prefillAnswer: ByteBuffer(string: empty)))))
            #expect(plain["kv_transfer_params"] == nil, "\(empty)")
        }
    }

    /// SGLang's bootstrap fields as sgl-project/sglang's `mini_lb.py` (001c2ae) adds them:
    /// the prefill host (IPv6 in brackets), its bootstrap port or null, a room in 0...2^63−1.
    @Test func sglangBodyAddsTheBootstrapFields() throws {
        let body = try #require(Self.object(String(buffer: Handoff.sglangBody(["model": "m", "stream": true], prefillAddress: "10.1.2.3:30000", bootstrapPort: 8998, room: 42))))
        #expect(body["bootstrap_host"] as? String == "10.1.2.3" && body["bootstrap_port"] as? Int == 8998 && body["bootstrap_room"] as? Int == 42)
        #expect(body["stream"] as? Bool == true)
        let six = try #require(Self.object(String(buffer: Handoff.sglangBody([:], prefillAddress: "[fd00::1]:30000", bootstrapPort: nil))))
        #expect(six["bootstrap_host"] as? String == "[fd00::1]" && six["bootstrap_port"] is NSNull)
        for _ in 0..<200 {
            let room = try #require((Self.object(String(buffer: Handoff.sglangBody([:], prefillAddress: "h:1", bootstrapPort: nil)))?["bootstrap_room"] as? NSNumber)?.int64Value)
            #expect(room >= 0)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func vllmHandoffThroughTheProxy() async throws {
        try await ServingHarness.with(engines: [
            .init(id: "p", model: "m", role: "PREFILL", dialect: .vllm), .init(id: "d", model: "m", role: "DECODE", dialect: .vllm),
        ]) { harness in
            try await harness.register(0, id: "prefill", role: "PREFILL", labels: ["engine": "vllm"])
            try await harness.register(1, id: "decode", role: "DECODE", labels: ["engine": "vllm"])
            let answer = try await harness.post(
                "/v1/chat/completions",
                #"{"model":"m","max_tokens":4,"min_tokens":2,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello"}]}"#
            )
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.headers.first(name: "X-Fulcrum-Worker") == "decode")
            #expect(answer.text.contains(#""object":"chat.completion.chunk""#) && answer.text.contains(#""usage":{"#) && answer.text.hasSuffix("data: [DONE]\n\n"))
            let prefill = try #require(harness.engines[0].served.first)
            #expect(prefill.maxTokens == 1 && !prefill.stream && prefill.decodeWorker == nil)
            #expect(prefill.kvTransferParams == #"{"do_remote_decode":true,"do_remote_prefill":false,"remote_block_ids":null,"remote_engine_id":null,"remote_host":null,"remote_port":null}"#)
            let decode = try #require(harness.engines[1].served.first)
            let params = try #require(Self.object(decode.kvTransferParams))
            #expect(params["do_remote_prefill"] as? Bool == true && params["remote_engine_id"] as? String == "p" && params["remote_port"] as? Int == 5600)
            #expect(decode.maxTokens == 4 && decode.stream && decode.outcome == "ok")
            try await harness.waitForState("both reservations released") { $0.router.ledger.requestCount == 0 }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func sglangHandoffSendsOneBodyToBoth() async throws {
        try await ServingHarness.with(engines: [
            .init(id: "p", model: "m", role: "PREFILL", dialect: .sglang), .init(id: "d", model: "m", role: "DECODE", dialect: .sglang),
        ]) { harness in
            let bootstrapPort = String(harness.engineAddresses[0].split(separator: ":").last!)
            try await harness.register(0, id: "prefill", role: "PREFILL", labels: ["engine": "sglang", "bootstrap_port": bootstrapPort])
            try await harness.register(1, id: "decode", role: "DECODE", labels: ["engine": "sglang"])
            for stream in [false, true] {
                let answer = try await harness.post("/v1/completions", #"{"model":"m","max_tokens":5,"stream":\#(stream),"prompt":"hello"}"#)
                #expect(answer.status == 200, "\(answer.text)")
                #expect(answer.text.contains("t4"), "the client gets the decode's five tokens: \(answer.text)")
            }
            let prefills = harness.engines[0].served, decodes = harness.engines[1].served
            #expect(prefills.count == 2 && decodes.count == 2)
            for (prefill, decode) in zip(prefills, decodes) {
                #expect(prefill.bootstrapRoom != nil && prefill.bootstrapRoom == decode.bootstrapRoom)
                #expect(prefill.bootstrapHost == "127.0.0.1" && decode.bootstrapPort == Int(bootstrapPort) && prefill.maxTokens == 5)
                #expect(decode.outcome == "ok")
            }
            #expect(prefills[0].bootstrapRoom != prefills[1].bootstrapRoom)
            try await harness.waitForState("reservations released") { $0.router.ledger.requestCount == 0 }
        }
    }

    /// The prefill leg fails while the decode leg waits for its KV (which would never come):
    /// the client hears at once, and the reservations are handed back.
    @Test(.timeLimit(.minutes(1)))
    func aFailedSGLangPrefillAbandonsTheDecode() async throws {
        var decodeOptions = SimulatedEngine.Options(id: "d", model: "m", role: "DECODE", dialect: .sglang)
        // Longer than the client waits below (the harness's stop then waits for the orphan).
        decodeOptions.bootstrapWaitMilliseconds = 3_000
        try await ServingHarness.with(
            engines: [.init(id: "p", model: "m", role: "PREFILL", dialect: .sglang), decodeOptions],
            serving: { $0.statusIntervalMilliseconds = 60_000 }
        ) { harness in
            let bootstrapPort = String(harness.engineAddresses[0].split(separator: ":").last!)
            try await harness.register(0, id: "prefill", role: "PREFILL", labels: ["engine": "sglang", "bootstrap_port": bootstrapPort])
            try await harness.register(1, id: "decode", role: "DECODE", labels: ["engine": "sglang"])
            var faults = SimulatedEngine.Faults()
            faults.errorRate = 1
            harness.engines[0].setFaults(faults)
            let started = ContinuousClock.now
            let answer = try await harness.post("/v1/completions", #"{"model":"m","max_tokens":5,"prompt":"hello"}"#)
            #expect(answer.status == 502 && answer.text.contains("prefill_failed"), "\(answer.status) \(answer.text)")
            #expect(ContinuousClock.now - started < .seconds(2), "the answer did not wait for the decode leg's timeout")
            #expect(harness.engines[1].served.count == 1, "the decode leg was sent beside the prefill")
            try await harness.waitForState("reservations released") { $0.router.ledger.requestCount == 0 }
        }
    }

    /// The client goes away mid-stream: the decode leg is cut at the engine (it sees its caller
    /// leave), the prefill leg is not left running, and the reservations are handed back.
    @Test(.timeLimit(.minutes(1)))
    func aClientThatGoesAwayCancelsTheLegs() async throws {
        try await ServingHarness.with(engines: [
            .init(id: "p", model: "m", role: "PREFILL", dialect: .sglang),
            .init(id: "d", model: "m", role: "DECODE", tokenIntervalMilliseconds: 100, dialect: .sglang),
        ]) { harness in
            let bootstrapPort = String(harness.engineAddresses[0].split(separator: ":").last!)
            try await harness.register(0, id: "prefill", role: "PREFILL", labels: ["engine": "sglang", "bootstrap_port": bootstrapPort])
            try await harness.register(1, id: "decode", role: "DECODE", labels: ["engine": "sglang"])
            var request = HTTPClientRequest(url: harness.url + "/v1/completions")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: #"{"model":"m","max_tokens":200,"stream":true,"prompt":"hello"}"#))
            // A client of its own, shut down after the first chunk: its connection closes.
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            let response = try await client.execute(request, timeout: .seconds(10))
            #expect(response.status.code == 200)
            var iterator = response.body.makeAsyncIterator()
            _ = try await iterator.next()
            try await client.shutdown()
            let deadline = ContinuousClock.now + .seconds(5)
            while harness.engines[1].served.first?.outcome != "cancelled", ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(harness.engines[1].served.first?.outcome == "cancelled", "the decode engine saw its caller leave: \(harness.engines[1].served)")
            #expect(harness.engines[0].served.count == 1 && ["ok", "cancelled"].contains(harness.engines[0].served[0].outcome))
            try await harness.waitForState("reservations released") { $0.router.ledger.requestCount == 0 }
        }
    }

    /// An engine started with an API key: the status poll and every proxied leg carry the
    /// key named by the worker (never the client's own credentials); a key sent in clear at
    /// registration is refused.
    @Test(.timeLimit(.minutes(1)))
    func engineKeysComeFromTheSecretFile() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "sk-engine-1\n".write(toFile: directory + "/fleet-a", atomically: true, encoding: .utf8)
        let keys = try EngineKeys(path: directory)
        try await ServingHarness.with(
            engines: [.init(id: "e", model: "m", dialect: .sglang, apiKey: "sk-engine-1")], serving: { $0.healthySuccesses = 1 }, engineKeys: keys
        ) { harness in
            let clear = try await harness.post(
                "/v1/workers", #"{"id":"x","model":"m","role":"PDFUSION","address":"\#(harness.engineAddresses[0])","api_key":"sk-engine-1"}"#
            )
            #expect(clear.status == 400 && clear.errorField == "api_key" && !clear.text.contains("sk-engine-1"), "\(clear.text)")
            try await harness.register(0, id: "keyed", labels: ["engine": "sglang", "api_key_ref": "fleet-a"])
            // The guarded status route (/v1/loads) answers the poll: the worker turns healthy
            // with a load read from it.
            try await harness.waitForState("the keyed worker polled") { machine in
                machine.state.workers.first { $0.id == "keyed" }?.health == .healthy
            }
            let answer = try await harness.post(
                "/v1/completions", #"{"model":"m","max_tokens":2,"prompt":"hi"}"#, headers: [("Authorization", "Bearer client-secret")]
            )
            #expect(answer.status == 200, "\(answer.text)")
            let served = try #require(harness.engines[0].served.last)
            #expect(served.authorization == "Bearer sk-engine-1")
            let listed = try await harness.get("/admin/workers")
            #expect(listed.text.contains("fleet-a") && !listed.text.contains("sk-engine-1"))
        }
    }

    @Test func engineKeysFileAndDirectoryLayouts() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let file = base + "/keys"
        try "# engine keys\nfleet-a sk-1\n\nfleet_b sk-2   # trailing comment\n".write(toFile: file, atomically: true, encoding: .utf8)
        let keys = try EngineKeys(path: file, recheckInterval: .zero)
        #expect(keys.key(named: "fleet-a") == "sk-1" && keys.key(named: "fleet_b") == "sk-2" && keys.key(named: "other") == nil)
        // A rotated key is read again (the file's time changes).
        try "fleet-a sk-rotated\n".write(toFile: file, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(5)], ofItemAtPath: file)
        #expect(keys.key(named: "fleet-a") == "sk-rotated" && keys.key(named: "fleet_b") == nil)
        for bad in ["only-a-name\n", "bad/name sk\n", "a b c\n", "name \u{1}\n"] {
            try bad.write(toFile: base + "/bad", atomically: true, encoding: .utf8)
            #expect(throws: EngineKeys.LoadError.self) { try EngineKeys(path: base + "/bad") }
            do {
                _ = try EngineKeys(path: base + "/bad")
            } catch {
                #expect(!error.description.contains("sk"), "a load error never quotes a key: \(error)")
            }
        }
        #expect(throws: EngineKeys.LoadError.self) { try EngineKeys(path: base + "/missing") }
        #expect(EngineKeys.isValidName("fleet-a.v2") && !EngineKeys.isValidName("") && !EngineKeys.isValidName("a b"))
    }
}
