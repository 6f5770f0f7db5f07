import Foundation
import HTTPTypes
public import Hummingbird
import NIOCore
import Synchronization

/// A simulated inference engine behind an OpenAI-compatible HTTP API, with the status
/// endpoints of real engines (Fulcrum's `/status`, vLLM's `/metrics`, SGLang's `/get_load`)
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

        public init(id: String, model: String = "sim-model", role: String = "PDFUSION", tokenIntervalMilliseconds: Int = 0, defaultOutputTokens: Int = 16) {
            self.id = id
            self.model = model
            self.role = role
            self.tokenIntervalMilliseconds = tokenIntervalMilliseconds
            self.defaultOutputTokens = defaultOutputTokens
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

        public init() {}
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
        var running = 0
        var served: [Served] = []
        var faults = Faults()
        var random = SystemRandomNumberGenerator()
    }

    public let options: Options
    private let state = Mutex(State())

    public init(options: Options) { self.options = options }

    public var served: [Served] { state.withLock { $0.served } }
    public var running: Int { state.withLock { $0.running } }
    public func setFaults(_ faults: Faults) { state.withLock { $0.faults = faults } }

    public func makeRouter() -> Hummingbird.Router<BasicRequestContext> {
        let router = Router()
        router.get("health") { _, _ in HTTPResponse.Status.ok }
        router.get("status") { _, _ in try await self.status { running in
            #"{"running_requests":\#(running),"waiting_requests":0,"kv_blocks_used":\#(running * 8),"kv_blocks_total":8192,"step_latency_ms":\#(self.options.tokenIntervalMilliseconds)}"#
        } }
        router.get("metrics") { _, _ in try await self.status { running in
            """
            # TYPE vllm:num_requests_running gauge
            vllm:num_requests_running{model_name="\(self.options.model)"} \(running)
            vllm:num_requests_waiting{model_name="\(self.options.model)"} 0
            vllm:kv_cache_usage_perc{model_name="\(self.options.model)"} \(Double(running * 8) / 8192)

            """
        } }
        router.get("get_load") { _, _ in try await self.status { running in #"[{"dp_rank":0,"num_reqs":\#(running),"num_waiting_reqs":0,"num_tokens":0}]"# } }
        for path in ["model_info", "get_model_info"] {
            router.get(RouterPath(stringLiteral: path)) { _, _ in self.json(#"{"model_path":"\#(self.options.model)","is_generation":true}"#) }
        }
        // sglang-router reads server info at start; model_path is left out on purpose.
        for path in ["server_info", "get_server_info"] {
            router.get(RouterPath(stringLiteral: path)) { _, _ in self.json(#"{"disaggregation_mode":"null","tp_size":1,"dp_size":1}"#) }
        }
        router.get("v1/models") { _, _ in self.json(#"{"object":"list","data":[{"id":"\#(self.options.model)","object":"model"}]}"#) }
        router.post("fault") { request, context -> HTTPResponse.Status in
            let faults = try await request.decode(as: Faults.self, context: context)
            self.setFaults(faults)
            return .ok
        }
        router.post("v1/completions") { request, _ in try await self.complete(request, chat: false) }
        router.post("v1/chat/completions") { request, _ in try await self.complete(request, chat: true) }
        router.post("generate") { request, _ in try await self.complete(request, chat: false) }
        return router
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

/// A failure the engine was told to inject.
struct SimulatedFailure: Error {}
