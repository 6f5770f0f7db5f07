import Foundation
import HTTPTypes
public import Hummingbird
public import KVEvents
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
        /// Which real engine it speaks as (API key rule, PD hand-off).
        public var dialect: EngineDialect
        /// Like `--api-key`: requests the dialect guards must carry `Authorization: Bearer <key>`.
        public var apiKey: String?
        /// vLLM's NIXL side channel, named in a prefill answer's `kv_transfer_params`.
        public var sideChannelHost = "127.0.0.1"
        public var sideChannelPort = 5600
        /// How long an SGLang decode waits for its prefill's bootstrap room.
        public var bootstrapWaitMilliseconds = 30_000

        public init(
            id: String, model: String = "sim-model", role: String = "PDFUSION", tokenIntervalMilliseconds: Int = 0,
            defaultOutputTokens: Int = 16, profile: EngineProfile? = nil, dialect: EngineDialect = .fulcrum, apiKey: String? = nil
        ) {
            self.dialect = dialect
            self.apiKey = apiKey
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
        /// The request's `Authorization` header.
        public var authorization: String?
        /// vLLM: the request's `kv_transfer_params`, as JSON.
        public var kvTransferParams: String?
        /// SGLang: the request's bootstrap fields.
        public var bootstrapHost: String?
        public var bootstrapPort: Int?
        public var bootstrapRoom: UInt64?
        /// How the request ended here: `ok`, `refused` (a hand-off it would not take) or
        /// `cancelled` (the caller went away first).
        public var outcome = "ok"
    }

    private struct State {
        var downUntil: ContinuousClock.Instant?
        var running = 0
        var served: [Served] = []
        var faults = Faults()
        /// SGLang bootstrap rooms this engine (a prefill) has seen, oldest first.
        var rooms: [UInt64: BootstrapRoom] = [:]
        var roomOrder: [UInt64] = []
        var random = SystemRandomNumberGenerator()
    }

    public let options: Options
    private let state = Mutex(State())
    /// The timing model's runtime, when the engine has a profile.
    public let runtime: EngineRuntime?

    /// Where the engine publishes its KV events (vLLM and SGLang dialects, modelled engines).
    public let kvEvents: KVEventPublisher?

    /// `kvEvents`: the publisher of a modelled engine's KV-cache events (see
    /// ``EngineDialect/kvEventEncoding``).
    public init(options: Options, kvEvents: KVEventPublisher? = nil) {
        self.options = options
        self.kvEvents = kvEvents
        runtime = options.profile.map { EngineRuntime(profile: $0, publisher: kvEvents) }
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
        router.add(middleware: EngineKeyMiddleware(engine: self))
        router.get("health") { _, _ in HTTPResponse.Status.ok }
        router.get("fulcrum-sim/bootstrap/:room") { _, context -> Response in
            let room = context.parameters.get("room").flatMap(UInt64.init)
            let state = room.flatMap { room in self.state.withLock { $0.rooms[room] } } ?? .pending
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: state.rawValue)))
        }
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
        // vLLM's `POST /tokenize` (a prompt, or messages through the chat template) and SGLang's
        // `POST /v1/tokenize` (prompts only), with the simulator's tokenizer.
        for path in ["tokenize", "v1/tokenize"] {
            router.post(RouterPath(stringLiteral: path)) { request, _ -> Response in
                var request = request
                let body = try await request.collectBody(upTo: Self.maxBodyBytes)
                guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
                    return Response(status: .badRequest, body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"bad JSON"}}"#)))
                }
                let tokens: [UInt32]
                if path == "tokenize", let messages = object["messages"] {
                    tokens = PromptBlocks.tokens(text: Self.chatText(messages))
                } else {
                    tokens = Self.promptTokens(object["prompt"])
                }
                return self.json(#"{"count":\#(tokens.count),"max_model_len":131072,"tokens":[\#(tokens.map(String.init).joined(separator: ","))],"token_strs":null}"#)
            }
        }
        router.post("v1/completions") { request, _ in try await self.complete(request, chat: false) }
        router.post("v1/chat/completions") { request, _ in try await self.complete(request, chat: true) }
        router.post("generate") { request, _ in try await self.complete(request, chat: false) }
        router.post("v1/embeddings") { request, _ in try await self.embed(request) }
        router.post("v1/responses") { request, _ in try await self.respond(request) }
        return router
    }

    /// The largest body an engine reads (a chat request with base64 images).
    static let maxBodyBytes = 64 << 20

    private func readObject(_ request: Request) async throws -> (object: [String: Any]?, served: Served) {
        var request = request
        let body = try await request.collectBody(upTo: Self.maxBodyBytes)
        let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
        let served = Served(
            path: request.uri.path, role: request.headers[HTTPField.Name("X-Fulcrum-Role")!], prefillWorker: nil, decodeWorker: nil,
            maxTokens: (object?["max_output_tokens"] as? Int) ?? (object?["max_tokens"] as? Int), stream: object?["stream"] as? Bool ?? false,
            authorization: request.headers[.authorization]
        )
        state.withLock { $0.served.append(served) }
        return (object, served)
    }

    private static func badRequest(_ message: String) -> Response {
        Response(
            status: .badRequest, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"\#(message)","type":"BadRequestError","param":null,"code":400}}"#))
        )
    }

    /// vLLM's `POST /v1/embeddings` answer (OpenAI's shape): one vector per input, 8 numbers
    /// derived from its tokens, answered at once (no timing model).
    private func embed(_ request: Request) async throws -> Response {
        guard let object = try await readObject(request).object, let input = object["input"] else { return Self.badRequest("input is required") }
        let inputs: [[UInt32]] = switch input {
        case let texts as [String]: texts.map { PromptBlocks.tokens(text: $0) }
        case let batches as [[NSNumber]]: batches.map { $0.map { UInt32(truncatingIfNeeded: $0.int64Value) } }
        default: [Self.promptTokens(input)]
        }
        let data = inputs.enumerated().map { index, tokens in
            let vector = (0..<8).map { dimension in
                let hash = PromptBlocks.blocks(tokens: tokens + [UInt32(dimension)], tokensPerBlock: tokens.count + 1).last ?? 0
                return Double(hash % 2_001) / 1_000 - 1
            }
            return #"{"index":\#(index),"object":"embedding","embedding":[\#(vector.map { String(format: "%.6f", $0) }.joined(separator: ","))]}"#
        }
        let tokens = inputs.reduce(0) { $0 + $1.count }
        return json(
            #"{"id":"embd-\#(UUID().uuidString.lowercased())","object":"list","created":\#(Int(Date().timeIntervalSince1970)),"model":"\#(options.model)","data":[\#(data.joined(separator: ","))],"#
                + #""usage":{"prompt_tokens":\#(tokens),"total_tokens":\#(tokens),"completion_tokens":0,"prompt_tokens_details":null}}"#
        )
    }

    /// OpenAI's Responses API as vLLM serves it (`POST /v1/responses`): a completed `response`
    /// object, or with `stream` its events (`response.created`, one `response.output_text.delta`
    /// per token, `response.completed`); answered at once (no timing model).
    private func respond(_ request: Request) async throws -> Response {
        let (object, served) = try await readObject(request)
        guard let object, object["input"] != nil else { return Self.badRequest("input is required") }
        let count = max(1, min(served.maxTokens ?? options.defaultOutputTokens, 4_096))
        let words = (0..<count).map { "tok\($0) " }
        let id = "resp_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let created = Int(Date().timeIntervalSince1970)
        func response(status: String, text: String) -> String {
            #"{"id":"\#(id)","object":"response","created_at":\#(created),"model":"\#(options.model)","status":"\#(status)","output":["#
                + (text.isEmpty ? "" : #"{"type":"message","id":"msg_\#(id.dropFirst(5))","status":"completed","role":"assistant","content":[{"type":"output_text","text":"\#(text)","annotations":[]}]}"#)
                + #"],"usage":\#(status == "completed" ? #"{"input_tokens":1,"output_tokens":\#(count),"total_tokens":\#(count + 1)}"# : "null")}"#
        }
        guard served.stream else { return json(response(status: "completed", text: words.joined())) }
        var events = [("response.created", #"{"type":"response.created","sequence_number":0,"response":\#(response(status: "in_progress", text: ""))}"#)]
        for (index, word) in words.enumerated() {
            events.append(("response.output_text.delta", #"{"type":"response.output_text.delta","sequence_number":\#(index + 1),"item_id":"msg_\#(id.dropFirst(5))","output_index":0,"content_index":0,"delta":"\#(word)"}"#))
        }
        events.append(("response.completed", #"{"type":"response.completed","sequence_number":\#(count + 1),"response":\#(response(status: "completed", text: words.joined()))}"#))
        let text = events.map { "event: \($0.0)\ndata: \($0.1)\n\n" }.joined()
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: .init(byteBuffer: ByteBuffer(string: text)))
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
        let body = try await request.collectBody(upTo: Self.maxBodyBytes)
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any] else {
            return Response(status: .badRequest, body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"bad JSON"}}"#)))
        }
        let stream = object["stream"] as? Bool ?? false
        let maxTokens = (object["max_tokens"] as? Int) ?? (object["max_completion_tokens"] as? Int)
        var served = Served(
            path: request.uri.path, role: request.headers[HTTPField.Name("X-Fulcrum-Role")!],
            prefillWorker: request.headers[HTTPField.Name("X-Fulcrum-Prefill-Worker")!],
            decodeWorker: request.headers[HTTPField.Name("X-Fulcrum-Decode-Worker")!], maxTokens: maxTokens, stream: stream,
            authorization: request.headers[.authorization]
        )
        if let params = object["kv_transfer_params"], let data = try? JSONSerialization.data(withJSONObject: params, options: [.sortedKeys]) {
            served.kvTransferParams = String(decoding: data, as: UTF8.self)
        }
        served.bootstrapHost = object["bootstrap_host"] as? String
        served.bootstrapPort = (object["bootstrap_port"] as? NSNumber)?.intValue
        served.bootstrapRoom = (object["bootstrap_room"] as? NSNumber)?.uint64Value
        let part: HandoffPart
        switch handoffPart(object, served: served) {
        case .success(let value):
            part = value
        case .failure(let refusal):
            served.outcome = "refused"
            state.withLock { $0.served.append(served) }
            return Response(
                status: refusal.status, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"\#(refusal.message)"}}"#))
            )
        }
        let (faults, fail, index) = state.withLock { state in
            state.served.append(served)
            if let room = part.bootstrap?.room, part.prefillOnly { Self.openRoom(room, in: &state) }
            return (state.faults, Double.random(in: 0..<1, using: &state.random) < state.faults.errorRate, state.served.count - 1)
        }
        if fail { return Response(status: .internalServerError, body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"injected"}}"#))) }
        do {
            while state.withLock({ $0.faults.stall }) { try await Task.sleep(for: .milliseconds(20)) }
            if let bootstrap = part.bootstrap, part.transferred, let refusal = try await awaitBootstrap(bootstrap) {
                setOutcome(index, "refused")
                return Response(
                    status: refusal.status, headers: [.contentType: "application/json"],
                    body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"\#(refusal.message)"}}"#))
                )
            }
        } catch {
            setOutcome(index, "cancelled")
            throw error
        }
        let reply = Reply(
            engine: self, index: index, id: "cmpl-\(options.id)-\(UInt32.random(in: 0...UInt32.max))", model: (object["model"] as? String) ?? options.model,
            chat: chat, created: Int(Date().timeIntervalSince1970), includeUsage: Self.includeUsage(object), part: part
        )
        if let runtime {
            return try await modelled(runtime, object: object, reply: reply, stream: stream, maxTokens: maxTokens, faults: faults)
        }
        let count = part.prefillOnly ? 1 : max(0, min(maxTokens ?? options.defaultOutputTokens, 100_000))
        let interval = options.tokenIntervalMilliseconds
        state.withLock { $0.running += 1 }
        if !stream {
            defer { state.withLock { $0.running -= 1 } }
            do {
                if interval > 0 { try await Task.sleep(for: .milliseconds(interval * count)) }
            } catch {
                reply.ended(prefilled: false)
                throw error
            }
            reply.ended(prefilled: true)
            return reply.whole(tokens: count, promptTokens: 0, cached: 0, blocks: 0)
        }
        let sse = ResponseBody { writer in
            defer { self.state.withLock { $0.running -= 1 } }
            do {
                for index in 0..<count {
                    if let abort = faults.abortAfterTokens, index >= abort { throw SimulatedFailure() }
                    if interval > 0 { try await Task.sleep(for: .milliseconds(interval)) }
                    if index == 0 { reply.prefilled() }
                    try await writer.write(reply.token(index))
                }
                try await writer.write(reply.end(promptTokens: 0, completionTokens: count, cached: 0))
                reply.ended(prefilled: true)
            } catch {
                reply.ended(prefilled: false)
                throw error
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: sse)
    }

    /// Opens a prefill's bootstrap room (bounded: the oldest rooms are forgotten).
    private static func openRoom(_ room: UInt64, in state: inout State) {
        if state.rooms.updateValue(.pending, forKey: room) == nil { state.roomOrder.append(room) }
        if state.roomOrder.count > BootstrapRoom.maxRooms {
            let dropped = state.roomOrder.count - BootstrapRoom.maxRooms
            for old in state.roomOrder.prefix(dropped) { state.rooms.removeValue(forKey: old) }
            state.roomOrder.removeFirst(dropped)
        }
    }

    fileprivate func closeRoom(_ room: UInt64, _ outcome: BootstrapRoom) {
        state.withLock { state in
            if state.rooms[room] == .pending { state.rooms[room] = outcome }
        }
    }

    fileprivate func setOutcome(_ index: Int, _ outcome: String) {
        state.withLock { state in
            if state.served.indices.contains(index) { state.served[index].outcome = outcome }
        }
    }
}

/// One answer being written: its chunks in the engine's dialect, and the hand-off bookkeeping
/// (a prefill's bootstrap room opens for its decode when the prompt is computed).
struct Reply: Sendable {
    let engine: SimulatedEngine
    let index: Int
    let id: String
    let model: String
    let chat: Bool
    let created: Int
    let includeUsage: Bool
    let part: HandoffPart

    /// The prompt is computed: an SGLang decode waiting on this prefill may take its KV.
    func prefilled() {
        if let room = part.bootstrap?.room, part.prefillOnly { engine.closeRoom(room, .done) }
    }

    /// The answer ended; one that ended before the prompt was computed fails its room.
    func ended(prefilled done: Bool) {
        if done { prefilled() }
        if let room = part.bootstrap?.room, part.prefillOnly { engine.closeRoom(room, .failed) }
        if !done { engine.setOutcome(index, "cancelled") }
    }

    func token(_ index: Int) -> ByteBuffer {
        let delta = chat ? #"{"index":0,"delta":{"content":"t\#(index) "},"finish_reason":null}"# : #"{"index":0,"text":"t\#(index) ","finish_reason":null}"#
        return SimulatedEngine.chunk(id: id, engine: engine.options.id, model: model, chat: chat, created: created, choices: delta)
    }

    static func usage(prompt: Int, completion: Int, cached: Int) -> String {
        #"{"prompt_tokens":\#(prompt),"completion_tokens":\#(completion),"total_tokens":\#(prompt + completion),"prompt_tokens_details":{"cached_tokens":\#(cached)}}"#
    }

    /// The last chunk (`finish_reason`), the usage chunk when asked for, and `[DONE]`.
    func end(promptTokens: Int, completionTokens: Int, cached: Int) -> ByteBuffer {
        let finish = chat ? #"{"index":0,"delta":{},"finish_reason":"length"}"# : #"{"index":0,"text":"","finish_reason":"length"}"#
        var buffer = SimulatedEngine.chunk(id: id, engine: engine.options.id, model: model, chat: chat, created: created, choices: finish)
        if includeUsage {
            var usage = SimulatedEngine.chunk(
                id: id, engine: engine.options.id, model: model, chat: chat, created: created, choices: "",
                usage: Self.usage(prompt: promptTokens, completion: completionTokens, cached: cached)
            )
            buffer.writeBuffer(&usage)
        }
        buffer.writeString("data: [DONE]\n\n")
        return buffer
    }

    /// A whole (non-streamed) answer; a vLLM prefill's carries `kv_transfer_params`.
    func whole(tokens: Int, promptTokens: Int, cached: Int, blocks: Int) -> Response {
        let text = (0..<tokens).map { "t\($0)" }.joined(separator: " ")
        let choice = chat ? #"{"index":0,"message":{"role":"assistant","content":"\#(text)"},"finish_reason":"length"}"#
            : #"{"index":0,"text":"\#(text)","finish_reason":"length"}"#
        let object = chat ? "chat.completion" : "text_completion"
        let usage = Self.usage(prompt: promptTokens, completion: tokens, cached: cached)
        let extra = engine.prefillAnswerFields(part, blocks: blocks)
        let body = #"{"id":"\#(id)","object":"\#(object)","created":\#(created),"model":"\#(model)","engine":"\#(engine.options.id)","choices":[\#(choice)],"usage":\#(usage)\#(extra)}"#
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

extension SimulatedEngine {
    /// A completion through the timing model: tokens leave when the model produces them.
    func modelled(
        _ runtime: EngineRuntime, object: [String: Any], reply: Reply, stream: Bool, maxTokens: Int?, faults: Faults
    ) async throws -> Response {
        let blockSize = options.profile?.blockSize ?? 16
        var blocks: [UInt64]
        var inputTokens: Int
        var promptTokens: [UInt32]?
        if let hashes = object["fulcrum_block_hashes"] as? [NSNumber], !hashes.isEmpty {
            let perBlock = (object["fulcrum_tokens_per_block"] as? Int) ?? blockSize
            blocks = hashes.map(\.uint64Value)
            inputTokens = (object["fulcrum_input_tokens"] as? Int) ?? blocks.count * perBlock
        } else {
            let tokens = reply.chat ? PromptBlocks.tokens(text: Self.chatText(object["messages"])) : Self.promptTokens(object["prompt"])
            blocks = PromptBlocks.blocks(tokens: tokens, tokensPerBlock: blockSize)
            inputTokens = max(1, tokens.count)
            promptTokens = tokens
        }
        let outputTokens = reply.part.prefillOnly ? 1 : max(1, min(maxTokens ?? options.defaultOutputTokens, 100_000))
        let outputBlocks = (outputTokens + blockSize - 1) / blockSize
        let capacity = options.profile?.kvCapacityBlocks ?? .max
        if blocks.count + outputBlocks > capacity {
            reply.ended(prefilled: false)
            let reason = "needs \(blocks.count + outputBlocks) KV blocks, the engine has \(capacity)"
            return Response(status: .badRequest, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"message":"\#(reason)"}}"#)))
        }
        let events = await runtime.submit(
            blocks: blocks, inputTokens: inputTokens, outputTokens: outputTokens, transferredPrompt: reply.part.transferred, tokens: promptTokens
        )
        let promptTokenCount = inputTokens
        let abortAfter = faults.abortAfterTokens
        if !stream {
            var cached = 0
            for await event in events {
                if case .firstToken(_, _, let tokens) = event {
                    cached = tokens
                    reply.prefilled()
                }
            }
            reply.ended(prefilled: !Task.isCancelled)
            return reply.whole(tokens: outputTokens, promptTokens: promptTokenCount, cached: cached, blocks: blocks.count)
        }
        let sse = ResponseBody { writer in
            var cached = 0
            var index = 0
            do {
                for await event in events {
                    switch event {
                    case .firstToken(_, _, let tokens):
                        cached = tokens
                        reply.prefilled()
                    case .token:
                        break
                    case .finished, .rejected:
                        continue
                    }
                    if let abortAfter, index >= abortAfter { throw SimulatedFailure() }
                    try await writer.write(reply.token(index))
                    index += 1
                }
                try await writer.write(reply.end(promptTokens: promptTokenCount, completionTokens: index, cached: cached))
                reply.ended(prefilled: true)
            } catch {
                reply.ended(prefilled: false)
                throw error
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: sse)
    }
}

extension SimulatedEngine {
    /// The conversation as the simulator's chat template writes it: `role: content` lines.
    static func chatText(_ messages: Any?) -> String {
        ((messages as? [[String: Any]]) ?? []).map { message in
            "\(message["role"] as? String ?? ""): \(message["content"] as? String ?? "")\n"
        }.joined()
    }

    /// A completion's prompt as tokens: text through the simulator's tokenizer, token ids as
    /// they are (the first prompt of a batch).
    static func promptTokens(_ prompt: Any?) -> [UInt32] {
        switch prompt {
        case let text as String: return PromptBlocks.tokens(text: text)
        case let texts as [String]: return PromptBlocks.tokens(text: texts.first ?? "")
        case let ids as [NSNumber]: return ids.map { UInt32(truncatingIfNeeded: $0.int64Value) }
        case let batches as [[NSNumber]]: return (batches.first ?? []).map { UInt32(truncatingIfNeeded: $0.int64Value) }
        default: return []
        }
    }
}

/// Engines started with `--api-key` refuse what their dialect guards without the key.
struct EngineKeyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let engine: SimulatedEngine

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let key = engine.options.apiKey, engine.options.dialect.requiresKey(request.uri.path),
           request.headers[.authorization] != "Bearer \(key)" {
            return Response(status: .unauthorized, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"error":"Unauthorized"}"#)))
        }
        return try await next(request, context)
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
