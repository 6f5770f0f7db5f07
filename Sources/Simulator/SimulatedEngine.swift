import Foundation
import HTTPTypes
public import Hummingbird
import NIOCore
import Synchronization

/// A simulated inference engine behind an OpenAI-compatible HTTP API, with the status
/// endpoints of real engines (Fulcrum's `/status`, vLLM's `/metrics`, SGLang's `/v1/loads` and
/// `/get_load`)
/// and failure knobs for tests. This is the fast engine: tokens are paced by a fixed interval,
/// no timing model; enough to exercise routing, proxying and streaming.
public final class SimulatedEngine: Sendable {
    public struct Options: Sendable {
        public var id: String
        public var model: String
        /// VIT, PREFILL, DECODE or PDFUSION.
        public var role: String
        /// Pause between streamed tokens.
        public var tokenIntervalMilliseconds: Int
        /// Tokens generated when the request sets no `max_tokens`.
        public var defaultOutputTokens: Int
        /// The timing model; nil for the fast engine (tokens every `tokenIntervalMilliseconds`).
        public var profile: EngineProfile?

        public init(
            id: String, model: String = "sim-model", role: String = "PDFUSION", tokenIntervalMilliseconds: Int = 0,
            defaultOutputTokens: Int = 16, profile: EngineProfile? = nil
        ) {
            self.id = id
            self.model = model
            self.role = role
            self.tokenIntervalMilliseconds = tokenIntervalMilliseconds
            self.defaultOutputTokens = defaultOutputTokens
            self.profile = profile
        }
    }

    /// Failure knobs, changed at run time through `POST /fault`.
    public struct Faults: Sendable, Codable, Equatable {
        /// Fraction of completions answered with a 500.
        public var errorRate: Double = 0
        /// Delay before answering status endpoints.
        public var statusDelayMs: Int = 0
        /// Status endpoints answer this garbage instead of JSON.
        public var garbageStatus: Bool = false
        /// Completions hang (no bytes) until the knob is cleared.
        public var stall: Bool = false
        /// Streams break (the connection closes) after this many tokens.
        public var abortAfterTokens: Int?
        /// Crash now and come back after this many milliseconds: until then every request,
        /// health checks included, fails with 503 and `Connection: close`; the engine restarts
        /// cold (its KV cache is lost).
        public var crashForMs: Int?

        public init() {}

        /// Every knob is optional in JSON (`/fault` takes snake_case keys).
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            errorRate = try container.decodeIfPresent(Double.self, forKey: .errorRate) ?? 0
            statusDelayMs = try container.decodeIfPresent(Int.self, forKey: .statusDelayMs) ?? 0
            garbageStatus = try container.decodeIfPresent(Bool.self, forKey: .garbageStatus) ?? false
            stall = try container.decodeIfPresent(Bool.self, forKey: .stall) ?? false
            abortAfterTokens = try container.decodeIfPresent(Int.self, forKey: .abortAfterTokens)
            crashForMs = try container.decodeIfPresent(Int.self, forKey: .crashForMs)
        }
    }

    /// What a completion request looked like, for tests.
    public struct Served: Sendable, Equatable {
        public var path: String
        public var role: String?
        public var prefillWorker: String?
        public var decodeWorker: String?
        public var maxTokens: Int?
        public var stream: Bool
    }

    private struct State {
        var downUntil: ContinuousClock.Instant?
        var running = 0
        var served: [Served] = []
        var faults = Faults()
        var random = SystemRandomNumberGenerator()
    }

    public let options: Options
    private let state = Mutex(State())
    /// The timing model's runtime, when the engine has a profile.
    public let runtime: EngineRuntime?

    public init(options: Options) {
        self.options = options
        runtime = options.profile.map(EngineRuntime.init(profile:))
    }

    public var served: [Served] { state.withLock { $0.served } }
    public var running: Int { state.withLock { $0.running } }
    public func setFaults(_ faults: Faults) {
        var faults = faults
        let crash = faults.crashForMs.map { ContinuousClock.now + .milliseconds($0) }
        faults.crashForMs = nil
        state.withLock {
            $0.faults = faults
            if let crash { $0.downUntil = crash }
        }
        if crash != nil, let runtime { Task { await runtime.reset() } }
    }

    /// Whether the engine is "crashed" now.
    var isDown: Bool {
        state.withLock { state in
            guard let until = state.downUntil else { return false }
            if ContinuousClock.now >= until { state.downUntil = nil; return false }
            return true
        }
    }

    public func makeRouter() -> Hummingbird.Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: CrashMiddleware(engine: self))
        router.get("health") { _, _ in HTTPResponse.Status.ok }
        router.post("reset") { _, _ -> HTTPResponse.Status in
            await self.runtime?.reset()
            return .ok
        }
        router.get("status") { _, _ in
            if let modelled = try await self.modelledStatus("native") { return modelled }
            return try await self.status { running in
            #"{"running_requests":\#(running),"waiting_requests":0,"kv_blocks_used":\#(running * 8),"kv_blocks_total":8192,"step_latency_ms":\#(self.options.tokenIntervalMilliseconds)}"#
        } }
        router.get("metrics") { _, _ in
            if let modelled = try await self.modelledStatus("vllm") { return modelled }
            return try await self.status { running in
            """
            # TYPE vllm:num_requests_running gauge
            vllm:num_requests_running{model_name="\(self.options.model)"} \(running)
            vllm:num_requests_waiting{model_name="\(self.options.model)"} 0
            vllm:kv_cache_usage_perc{model_name="\(self.options.model)"} \(Double(running * 8) / 8192)

            """
        } }
        router.get("get_load") { _, _ in
            if let modelled = try await self.modelledStatus("sglang") { return modelled }
            return try await self.status { running in #"[{"dp_rank":0,"num_reqs":\#(running),"num_waiting_reqs":0,"num_tokens":0}]"# } }
        router.get("v1/loads") { _, _ in
            if let modelled = try await self.modelledStatus("sglang-loads") { return modelled }
            return try await self.status { running in
                Self.sglangLoads(running: running, waiting: 0, usedTokens: running * 8 * 16, totalTokens: 8_192 * 16)
            }
        }
        for path in ["model_info", "get_model_info"] {
            router.get(RouterPath(stringLiteral: path)) { _, _ in self.json(#"{"model_path":"\#(self.options.model)","is_generation":true}"#) }
        }
        // sglang-router reads server info at start; model_path is left out on purpose.
        for path in ["server_info", "get_server_info"] {
            router.get(RouterPath(stringLiteral: path)) { _, _ in self.json(#"{"disaggregation_mode":"null","tp_size":1,"dp_size":1}"#) }
        }
        router.get("v1/models") { _, _ in self.json(#"{"object":"list","data":[{"id":"\#(self.options.model)","object":"model"}]}"#) }
        router.post("fault") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 1 << 16)
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            do {
                self.setFaults(try decoder.decode(Faults.self, from: Data(body.readableBytesView)))
                return self.json("{}")
            } catch {
                let field = (error as? DecodingError).flatMap(\.failingField) ?? "body"
                var response = self.json(#"{"error":"invalid fault knob","field":"\#(field)"}"#)
                response.status = .badRequest
                return response
            }
        }
        router.post("v1/completions") { request, _ in try await self.complete(request, chat: false) }
        router.post("v1/chat/completions") { request, _ in try await self.complete(request, chat: true) }
        router.post("generate") { request, _ in try await self.complete(request, chat: false) }
        return router
    }

    /// SGLang's `GET /v1/loads?include=core` body for one rank, as sgl-project/sglang's
    /// `python/sglang/srt/entrypoints/v1_loads.py` (5b49fe622) writes it.
    static func sglangLoads(running: Int, waiting: Int, usedTokens: Int, totalTokens: Int, waitingTokens: Int = 0) -> String {
        let usage = totalTokens > 0 ? Double(usedTokens) / Double(totalTokens) : 0
        return #"{"timestamp":"\#(ISO8601DateFormatter().string(from: Date()))","version":"fulcrum-sim","dp_rank_count":1,"loads":[{"dp_rank":0,"#
            + #""num_running_reqs":\#(running),"num_waiting_reqs":\#(waiting),"num_waiting_uncached_tokens":\#(waitingTokens),"#
            + #""num_used_tokens":\#(usedTokens),"num_total_tokens":\#(usedTokens + waitingTokens),"max_total_num_tokens":\#(totalTokens),"#
            + #""token_usage":\#(usage),"utilization":\#(usage),"num_total_reqs":\#(running + waiting)}],"#
            + #""aggregate":{"total_running_reqs":\#(running),"total_waiting_reqs":\#(waiting),"total_reqs":\#(running + waiting),"#
            + #""avg_token_usage":\#(usage),"avg_utilization":\#(usage)}}"#
    }

    private func json(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    private func status(_ render: (Int) -> String) async throws -> Response {
        let faults = state.withLock { $0.faults }
        if faults.statusDelayMs > 0 { try await Task.sleep(for: .milliseconds(faults.statusDelayMs)) }
        if faults.garbageStatus { return json("\u{1}not json at all") }
        return json(render(running))
    }

    /// The modelled engine's load in each status format.
    private func modelledStatus(_ format: String) async throws -> Response? {
        guard let runtime else { return nil }
        let faults = state.withLock { $0.faults }
        if faults.statusDelayMs > 0 { try await Task.sleep(for: .milliseconds(faults.statusDelayMs)) }
        if faults.garbageStatus { return json("\u{1}not json at all") }
        let load = await runtime.load()
        let usage = load.kvBlocksTotal > 0 ? Double(load.kvBlocksUsed) / Double(load.kvBlocksTotal) : 0
        switch format {
        case "vllm":
            return json("""
                vllm:num_requests_running{model_name="\(options.model)"} \(load.running)
                vllm:num_requests_waiting{model_name="\(options.model)"} \(load.waiting)
                vllm:kv_cache_usage_perc{model_name="\(options.model)"} \(usage)
                vllm:prefix_cache_queries_total{model_name="\(options.model)"} \(load.promptTokensTotal)
                vllm:prefix_cache_hits_total{model_name="\(options.model)"} \(load.cachedTokensTotal)

                """)
        case "sglang":
            // `num_reqs` counts running and waiting requests, as SGLang's scheduler reports it.
            return json(#"[{"dp_rank":0,"num_reqs":\#(load.running + load.waiting),"num_waiting_reqs":\#(load.waiting),"num_tokens":\#(load.queuedPrefillTokens)}]"#)
        case "sglang-loads":
            let blockSize = options.profile?.blockSize ?? 16
            return json(Self.sglangLoads(
                running: load.running, waiting: load.waiting, usedTokens: load.kvBlocksUsed * blockSize, totalTokens: load.kvBlocksTotal * blockSize,
                waitingTokens: load.queuedPrefillTokens
            ))
        default:
            return json(
                #"{"running_requests":\#(load.running),"waiting_requests":\#(load.waiting),"queued_prefill_tokens":\#(load.queuedPrefillTokens),"#
                    + #""kv_blocks_used":\#(load.kvBlocksUsed),"kv_blocks_total":\#(load.kvBlocksTotal),"step_latency_ms":\#(load.stepMilliseconds)}"#
            )
        }
    }

    private func complete(_ request: Request, chat: Bool) async throws -> Response {
        var request = request
        let body = try await request.collectBody(upTo: 16 << 20)
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
            return Response(status: .badRequest, body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"bad JSON"}}"#)))
        }
        let stream = object["stream"] as? Bool ?? false
        let maxTokens = (object["max_tokens"] as? Int) ?? (object["max_completion_tokens"] as? Int)
        let served = Served(
            path: request.uri.path, role: request.headers[HTTPField.Name("X-Fulcrum-Role")!],
            prefillWorker: request.headers[HTTPField.Name("X-Fulcrum-Prefill-Worker")!],
            decodeWorker: request.headers[HTTPField.Name("X-Fulcrum-Decode-Worker")!], maxTokens: maxTokens, stream: stream
        )
        let (faults, fail) = state.withLock { state in
            state.served.append(served)
            return (state.faults, Double.random(in: 0..<1, using: &state.random) < state.faults.errorRate)
        }
        if fail { return Response(status: .internalServerError, body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"injected"}}"#))) }
        while state.withLock({ $0.faults.stall }) { try await Task.sleep(for: .milliseconds(20)) }
        if let runtime {
            return try await modelled(runtime, object: object, served: served, chat: chat, stream: stream, maxTokens: maxTokens, faults: faults)
        }
        let count = max(0, min(maxTokens ?? options.defaultOutputTokens, 100_000))
        let id = "cmpl-\(options.id)-\(UInt32.random(in: 0...UInt32.max))"
        let interval = options.tokenIntervalMilliseconds
        let engine = options.id
        let model = (object["model"] as? String) ?? options.model
        state.withLock { $0.running += 1 }
        if !stream {
            defer { state.withLock { $0.running -= 1 } }
            if interval > 0 { try await Task.sleep(for: .milliseconds(interval * count)) }
            let text = (0..<count).map { "t\($0)" }.joined(separator: " ")
            let choice = chat ? #"{"index":0,"message":{"role":"assistant","content":"\#(text)"},"finish_reason":"length"}"#
                : #"{"index":0,"text":"\#(text)","finish_reason":"length"}"#
            return json(#"{"id":"\#(id)","object":"\#(chat ? "chat.completion" : "text_completion")","model":"\#(model)","engine":"\#(engine)","choices":[\#(choice)],"usage":{"completion_tokens":\#(count)}}"#)
        }
        let sse = ResponseBody { writer in
            defer { self.state.withLock { $0.running -= 1 } }
            for index in 0..<count {
                if let abort = faults.abortAfterTokens, index >= abort { throw SimulatedFailure() }
                if interval > 0 { try await Task.sleep(for: .milliseconds(interval)) }
                let delta = chat ? #"{"index":0,"delta":{"content":"t\#(index) "}}"# : #"{"index":0,"text":"t\#(index) "}"#
                try await writer.write(ByteBuffer(string: #"data: {"id":"\#(id)","engine":"\#(engine)","model":"\#(model)","choices":[\#(delta)]}"# + "\n\n"))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: sse)
    }
}

extension SimulatedEngine {
    /// A completion through the timing model: tokens leave when the model produces them.
    func modelled(
        _ runtime: EngineRuntime, object: [String: Any], served: Served, chat: Bool, stream: Bool, maxTokens: Int?, faults: Faults
    ) async throws -> Response {
        let blockSize = options.profile?.blockSize ?? 16
        var blocks: [UInt64]
        var inputTokens: Int
        if let hashes = object["fulcrum_block_hashes"] as? [NSNumber], !hashes.isEmpty {
            let perBlock = (object["fulcrum_tokens_per_block"] as? Int) ?? blockSize
            blocks = hashes.map(\.uint64Value)
            inputTokens = (object["fulcrum_input_tokens"] as? Int) ?? blocks.count * perBlock
        } else {
            let text: String
            if chat {
                text = ((object["messages"] as? [[String: Any]]) ?? []).map { message in
                    "\(message["role"] as? String ?? ""): \(message["content"] as? String ?? "")\n"
                }.joined()
            } else if let prompt = object["prompt"] as? String {
                text = prompt
            } else {
                text = ((object["prompt"] as? [Any]) ?? []).map { "\($0) " }.joined()
            }
            (blocks, inputTokens) = PromptBlocks.blocks(text: text, tokensPerBlock: blockSize)
        }
        let prefillOnly = served.role == "prefill"
        let outputTokens = prefillOnly ? 1 : max(1, min(maxTokens ?? options.defaultOutputTokens, 100_000))
        let transferred = served.role == "decode" && served.prefillWorker != nil
        let outputBlocks = (outputTokens + blockSize - 1) / blockSize
        let capacity = options.profile?.kvCapacityBlocks ?? .max
        if blocks.count + outputBlocks > capacity {
            let reason = "needs \(blocks.count + outputBlocks) KV blocks, the engine has \(capacity)"
            return Response(status: .badRequest, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"\#(reason)"}}"#)))
        }
        let events = await runtime.submit(blocks: blocks, inputTokens: inputTokens, outputTokens: outputTokens, transferredPrompt: transferred)
        let id = "cmpl-\(options.id)-\(UInt32.random(in: 0...UInt32.max))"
        let engine = options.id
        let model = (object["model"] as? String) ?? options.model
        let promptTokens = inputTokens
        @Sendable func usage(cached: Int) -> String {
            #"{"prompt_tokens":\#(promptTokens),"completion_tokens":\#(outputTokens),"prompt_tokens_details":{"cached_tokens":\#(cached)}}"#
        }
        let abortAfter = faults.abortAfterTokens
        if !stream {
            var cached = 0
            for await event in events {
                if case .firstToken(_, _, let tokens) = event { cached = tokens }
            }
            let text = (0..<outputTokens).map { "t\($0)" }.joined(separator: " ")
            let choice = chat ? #"{"index":0,"message":{"role":"assistant","content":"\#(text)"},"finish_reason":"length"}"#
                : #"{"index":0,"text":"\#(text)","finish_reason":"length"}"#
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string:
                #"{"id":"\#(id)","object":"\#(chat ? "chat.completion" : "text_completion")","model":"\#(model)","engine":"\#(engine)","choices":[\#(choice)],"usage":\#(usage(cached: cached))}"#
            )))
        }
        let sse = ResponseBody { writer in
            func chunk(_ index: Int) -> ByteBuffer {
                let delta = chat ? #"{"index":0,"delta":{"content":"t\#(index) "}}"# : #"{"index":0,"text":"t\#(index) "}"#
                return ByteBuffer(string: #"data: {"id":"\#(id)","engine":"\#(engine)","model":"\#(model)","choices":[\#(delta)]}"# + "\n\n")
            }
            var cached = 0
            var index = 0
            for await event in events {
                switch event {
                case .firstToken(_, _, let tokens):
                    cached = tokens
                case .token:
                    break
                case .finished, .rejected:
                    continue
                }
                if let abortAfter, index >= abortAfter { throw SimulatedFailure() }
                try await writer.write(chunk(index))
                index += 1
            }
            try await writer.write(ByteBuffer(string: #"data: {"id":"\#(id)","engine":"\#(engine)","model":"\#(model)","choices":[],"usage":\#(usage(cached: cached))}"# + "\n\ndata: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: sse)
    }
}

/// While an engine is "crashed", everything but `/fault` fails as a dead process would look to
/// a client that still reaches the port: 503 and the connection closed.
struct CrashMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let engine: SimulatedEngine

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if engine.isDown && request.uri.path != "/fault" {
            return Response(status: .serviceUnavailable, headers: [.connection: "close"], body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"engine down"}}"#)))
        }
        return try await next(request, context)
    }
}

/// A failure the engine was told to inject.
struct SimulatedFailure: Error {}

extension DecodingError {
    /// The JSON key a decoding error is about (the knob names are plain identifiers).
    var failingField: String? {
        switch self {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            context.codingPath.last?.stringValue
        case .keyNotFound(let key, _):
            key.stringValue
        @unknown default:
            nil
        }
    }
}
