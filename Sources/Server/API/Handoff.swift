import AsyncHTTPClient
import Balancer
import Foundation
import FulcrumAPI
import NIOCore
import Serving
import Synchronization

/// How a request crosses from a PREFILL worker to a DECODE worker. Each engine has its own
/// protocol, read from its upstream proxy:
///
/// - `fulcrum` (the simulator's dialect, and rtp-llm, whose engines hand over among themselves):
///   a one-token, non-streaming prefill naming the decode worker in `X-Fulcrum-Decode-Worker`,
///   then the original request to the decode worker.
/// - `vllm`, the NIXL connector's protocol (vllm-project/vllm
///   `tests/v1/kv_connector/nixl_integration/toy_proxy_server.py`, 030ea52): the prefill gets
///   `kv_transfer_params` with `do_remote_decode: true`, `stream: false`, `max_tokens: 1` (and
///   `max_completion_tokens: 1` when present), no `stream_options`, `min_tokens` and
///   `min_completion_tokens` left out; the decode gets the original request with the
///   `kv_transfer_params` of the prefill's answer (the block ids and the prefill engine's side
///   channel), when it has any.
/// - `sglang`, the bootstrap protocol (sgl-project/sglang
///   `python/sglang/srt/disaggregation/mini_lb.py`, 001c2ae): one body with `bootstrap_host`
///   (the prefill worker's host), `bootstrap_port` (its `--disaggregation-bootstrap-port`, the
///   worker's `bootstrap_port` label, else null for the engine's default) and a random
///   `bootstrap_room` in 0...2^63−1 goes to both workers at once; the client gets the decode
///   answer and the prefill answer is read and dropped.
///
/// When one leg fails the other is abandoned (its connection closed, which aborts the request
/// in both engines) and the decision's reservations are handed back; a client that goes away
/// cancels both.
enum Handoff {
    enum Kind: Equatable {
        case fulcrum
        case vllm
        case sglang

        /// The protocol's name in metrics.
        var name: String {
            switch self {
            case .fulcrum: "fulcrum"
            case .vllm: "vllm"
            case .sglang: "sglang"
            }
        }
    }

    /// A prefill answer is one token: anything bigger than this is not one.
    static let maxPrefillAnswerBytes = 16 << 20

    /// Fulcrum's prefill request: one token, not streamed.
    static func makeOneToken(_ object: inout [String: Any]) {
        object["max_tokens"] = 1
        object.removeValue(forKey: "max_completion_tokens")
        object["stream"] = false
        object.removeValue(forKey: "stream_options")
    }

    /// vLLM's prefill request (NIXL): `do_remote_decode`, one token, not streamed.
    static func vllmPrefillBody(_ original: [String: Any]) -> [String: Any] {
        var object = original
        object["kv_transfer_params"] = [
            "do_remote_decode": true, "do_remote_prefill": false, "remote_engine_id": NSNull(), "remote_block_ids": NSNull(),
            "remote_host": NSNull(), "remote_port": NSNull(),
        ] as [String: Any]
        object["stream"] = false
        object["max_tokens"] = 1
        if object["max_completion_tokens"] != nil { object["max_completion_tokens"] = 1 }
        object.removeValue(forKey: "stream_options")
        // Not supported by a prefill-only request.
        object.removeValue(forKey: "min_tokens")
        object.removeValue(forKey: "min_completion_tokens")
        return object
    }

    /// vLLM's decode request: the client's, with the prefill answer's `kv_transfer_params` (a
    /// non-empty object). Without them the decode engine computes the prompt itself, as it
    /// does behind vLLM's own proxy.
    static func vllmDecodeBody(_ original: [String: Any], prefillAnswer: ByteBuffer) throws -> ByteBuffer {
        var object = original
        if let answer = try? JSONSerialization.jsonObject(with: Data(prefillAnswer.readableBytesView)) as? [String: Any],
           let params = answer["kv_transfer_params"] as? [String: Any], !params.isEmpty {
            object["kv_transfer_params"] = params
        }
        return ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: object))
    }

    /// SGLang's shared body: the client's request with the bootstrap fields added.
    static func sglangBody(
        _ original: [String: Any], prefillAddress: String, bootstrapPort: Int?, room: UInt64 = .random(in: 0...UInt64(Int64.max))
    ) -> ByteBuffer {
        var object = original
        var host = splitHostPort(prefillAddress).0
        if host.contains(":") { host = "[\(host)]" }
        object["bootstrap_host"] = host
        object["bootstrap_port"] = bootstrapPort.map { $0 as Any } ?? NSNull()
        object["bootstrap_room"] = NSNumber(value: room)
        // A dictionary of JSON values always serialises.
        return ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8))
    }

    /// Runs `body` while `leg` runs beside it: a failure of the leg first throws it (and
    /// cancels `body`).
    static func race<Value: Sendable>(_ leg: ConcurrentLeg?, _ body: @escaping @Sendable () async throws -> Value) async throws -> Value {
        guard let leg else { return try await body() }
        return try await withThrowingTaskGroup(of: Value?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                if let failure = await leg.failure() { throw failure }
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let value = result { return value }
            }
            throw CancellationError()
        }
    }
}

/// What the proxy needs to call the engines of one decision: each worker's engine kind,
/// SGLang's bootstrap port, and the key the engine wants.
struct EngineCalls: Sendable {
    let workers: [String: Worker]
    let keys: EngineKeys

    func kind(_ target: RouteResponse.Target) -> EngineKind {
        workers[target.workerId]?.labels["engine"].flatMap(EngineKind.init(rawValue:)) ?? .fulcrum
    }

    /// The protocol is the prefill engine's (both workers of a pool run the same engine).
    func handoff(prefill: RouteResponse.Target, decode: RouteResponse.Target) -> Handoff.Kind {
        switch kind(prefill) {
        case .vllm: .vllm
        case .sglang: .sglang
        case .fulcrum, .rtpLLM: .fulcrum
        }
    }

    func bootstrapPort(_ target: RouteResponse.Target) -> Int? {
        workers[target.workerId]?.labels["bootstrap_port"].flatMap(Int.init)
    }

    /// Adds `Authorization: Bearer <key>` when the worker names a key (never the client's own).
    func authorize(_ request: inout HTTPClientRequest, for target: RouteResponse.Target) {
        guard let worker = workers[target.workerId], let value = keys.authorization(for: worker) else { return }
        request.headers.replaceOrAdd(name: "Authorization", value: value)
    }
}

/// A request leg running beside another (SGLang's prefill beside its decode): its outcome can
/// be awaited by several, and awaiting it ends with the waiter's cancellation.
final class ConcurrentLeg: Sendable {
    struct Failure: Error, Sendable, CustomStringConvertible {
        var workerID: String
        /// The status the worker answered; nil when it never answered (timeout, broken).
        var status: Int?
        var reason: String
        var description: String { "prefill worker \(workerID) \(reason)" }
    }

    private enum State {
        case running([UInt64: CheckedContinuation<Failure?, Never>], next: UInt64)
        case done(Failure?)
    }

    let workerID: String
    private let state = Mutex(State.running([:], next: 0))
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(workerID: String, _ run: @escaping @Sendable () async -> Failure?) {
        self.workerID = workerID
        let started = Task { [self] in finish(await run()) }
        task.withLock { $0 = started }
    }

    /// Stops the leg (closing its connection); an outcome not yet known becomes success.
    func cancel() {
        task.withLock { $0 }?.cancel()
    }

    /// The leg's failure, or nil when it succeeded or the caller was cancelled first.
    func failure() async -> Failure? {
        let id = state.withLock { state -> UInt64? in
            guard case .running(let waiters, let next) = state else { return nil }
            state = .running(waiters, next: next + 1)
            return next
        }
        guard let id else {
            guard case .done(let failure) = state.withLock({ $0 }) else { return nil }
            return failure
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeWith = state.withLock { state -> Failure?? in
                    switch state {
                    case .done(let failure):
                        return .some(failure)
                    case .running(var waiters, let next):
                        if Task.isCancelled { return .some(nil) }
                        waiters[id] = continuation
                        state = .running(waiters, next: next)
                        return .none
                    }
                }
                if let resumeWith { continuation.resume(returning: resumeWith) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Failure?, Never>? in
                guard case .running(var waiters, let next) = state, let waiter = waiters.removeValue(forKey: id) else { return nil }
                state = .running(waiters, next: next)
                return waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    private func finish(_ failure: Failure?) {
        let waiters = state.withLock { state -> [CheckedContinuation<Failure?, Never>] in
            guard case .running(let waiters, _) = state else { return [] }
            state = .done(failure)
            return Array(waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: failure) }
    }
}
