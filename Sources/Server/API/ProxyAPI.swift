import AsyncHTTPClient
import Balancer
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Serving
import FulcrumAPI

/// OpenAI-compatible `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and
/// `/v1/responses`: route, then proxy to the chosen worker, streaming the answer chunk by chunk as it arrives. PREFILL → DECODE pools get
/// the hand-off protocol of their engine (`Handoff`, `Docs/engines.md`). A failed connection is retried on another
/// worker before the first byte; never after. Reservations are released, with the outcome,
/// when the stream ends or the client goes away. `/v1/models` lists what can be routed to.
struct ProxyAPI: Sendable {
    let link: LeaderLink
    let client: HTTPClient
    let settings: ServingSettings
    let metrics: ServerMetrics
    let engineKeys: EngineKeys
    let tokenizer: Tokenizer
    let logger: Logger

    static let maxMessages = 4_096

    func addRoutes(to router: RouterGroup<FulcrumRequestContext>) {
        for endpoint in Endpoint.allCases {
            router.post(RouterPath(String(endpoint.rawValue.dropFirst()))) { request, context in try await proxy(request, context: context, endpoint: endpoint) }
        }
        router.get("v1/models") { _, _ -> ModelList in ModelList(data: await servedModels()) }
        router.get("v1/models/:id") { _, context -> ModelCard in
            let id = try context.parameters.require("id")
            guard let model = await servedModels().first(where: { $0.id == id }) else {
                throw APIError(.notFound, code: "model_not_found", "the model \(id) does not exist or has no available worker", field: "model")
            }
            return model
        }
    }

    /// The OpenAI endpoints proxied to engines.
    enum Endpoint: String, CaseIterable, Sendable {
        case chat = "/v1/chat/completions"
        case completions = "/v1/completions"
        case embeddings = "/v1/embeddings"
        case responses = "/v1/responses"

        /// Whether an engine's PD hand-off (a prefill then a decode) applies: generation only.
        var handsOff: Bool { self == .chat || self == .completions }
    }

    /// OpenAI's model list: the models a request can be routed to now, as this node's
    /// replicated state has them, and the aliases naming them (`root` says which).
    struct ModelList: ResponseEncodable {
        var object = "list"
        var data: [ModelCard]
    }

    struct ModelCard: ResponseEncodable {
        var id: String
        var object = "model"
        var created: Int
        var ownedBy = "fulcrum"
        var root: String
    }

    private func servedModels() async -> [ModelCard] {
        let created = Int(Date().timeIntervalSince1970)
        return await link.routing.servedModels().map { ModelCard(id: $0.id, created: created, root: $0.model) }
    }

    /// What the proxy reads of a completion request; the body itself is forwarded untouched.
    struct Completion {
        var model: String
        var prompt: Prompt
        /// From the extension fields `fulcrum_tokens_per_block` and `fulcrum_input_tokens`.
        var tokensPerBlock: Int?
        var inputTokens: Int?
        var stream: Bool
        var maxTokens: Int?
        var user: String?
        var object: [String: Any]
    }

    enum Prompt {
        case text(String)
        case tokens([UInt32])
        case blocks([UInt64])

        var routing: Balancer.Prompt {
            switch self {
            case .text(let text): .text(text)
            case .tokens(let tokens): .tokens(tokens)
            case .blocks(let blocks): .blocks(blocks)
            }
        }
    }

    /// Parses the body where it lies: a 64 MiB body is not copied to be read.
    static func parse(_ buffer: ByteBuffer, endpoint: Endpoint) throws -> Completion {
        try buffer.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress, !bytes.isEmpty else { return try parse(Data(), endpoint: endpoint) }
            return try parse(Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: bytes.count, deallocator: .none), endpoint: endpoint)
        }
    }

    static func parse(_ data: Data, endpoint: Endpoint) throws -> Completion {
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw APIError.badRequest(field: "body", "not valid JSON (or not UTF-8)")
        }
        guard let object = json as? [String: Any] else { throw APIError.badRequest(field: "body", "expected a JSON object") }
        guard let modelValue = object["model"] else { throw APIError.badRequest(field: "model", "is required") }
        guard let model = modelValue as? String, !model.isEmpty else { throw APIError.badRequest(field: "model", "expected a non-empty string") }
        var stream = false
        if let value = object["stream"], !(value is NSNull) {
            guard isJSONBoolean(value), let flag = value as? Bool else { throw APIError.badRequest(field: "stream", "expected a boolean") }
            stream = flag
        }
        var maxTokens: Int?
        for key in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            guard let value = object[key], !(value is NSNull) else { continue }
            guard let number = value as? NSNumber, !isJSONBoolean(value), number.doubleValue == number.doubleValue.rounded() else {
                throw APIError.badRequest(field: key, "expected an integer")
            }
            guard number.int64Value >= 0 && number.int64Value <= 10_000_000 else {
                throw APIError.badRequest(field: key, "must be in 0...10000000, got \(number)")
            }
            maxTokens = number.intValue
        }
        var user: String?
        if let value = object["user"], !(value is NSNull) {
            guard let text = value as? String else { throw APIError.badRequest(field: "user", "expected a string") }
            user = text
        }
        let prompt: Prompt
        if let hashes = object["fulcrum_block_hashes"] {
            guard let list = hashes as? [NSNumber], list.count <= RoutingRequest.maxBlocks,
                  list.allSatisfy({ !isJSONBoolean($0) && $0.doubleValue >= 0 }) else {
                throw APIError.badRequest(field: "fulcrum_block_hashes", "expected at most \(RoutingRequest.maxBlocks) unsigned integers")
            }
            prompt = .blocks(list.map(\.uint64Value))
        } else if let ids = object["input_ids"] {
            // SGLang's native field: the prompt as token ids.
            guard let list = ids as? [NSNumber], list.allSatisfy({ !isJSONBoolean($0) && $0.int64Value >= 0 && $0.int64Value <= Int64(UInt32.max) }) else {
                throw APIError.badRequest(field: "input_ids", "expected token ids (integers in 0...4294967295)")
            }
            prompt = .tokens(list.map(\.uint32Value))
        } else {
            switch endpoint {
            case .chat: prompt = .text(try chatText(object["messages"]))
            case .completions: prompt = try completionPrompt(object["prompt"], field: "prompt")
            case .embeddings: prompt = try completionPrompt(object["input"], field: "input")
            case .responses: prompt = .text(try responsesText(object))
            }
        }
        var tokensPerBlock: Int?
        var inputTokens: Int?
        for (key, range) in [("fulcrum_tokens_per_block", 1...1_000_000), ("fulcrum_input_tokens", 1...100_000_000)] {
            guard let value = object[key] else { continue }
            guard let number = value as? NSNumber, !isJSONBoolean(value), range.contains(number.intValue), number.doubleValue == Double(number.intValue) else {
                throw APIError.badRequest(field: key, "expected an integer in \(range)")
            }
            if key == "fulcrum_tokens_per_block" { tokensPerBlock = number.intValue } else { inputTokens = number.intValue }
        }
        return Completion(
            model: model, prompt: prompt, tokensPerBlock: tokensPerBlock, inputTokens: inputTokens, stream: stream, maxTokens: maxTokens,
            user: user, object: object
        )
    }

    /// The conversation as text, in order, so a longer conversation extends a shorter one's
    /// prefix (what prefix-cache affinity needs).
    static func chatText(_ value: Any?) throws -> String {
        guard let value else { throw APIError.badRequest(field: "messages", "is required") }
        guard let messages = value as? [Any], !messages.isEmpty else { throw APIError.badRequest(field: "messages", "expected a non-empty array") }
        guard messages.count <= maxMessages else { throw APIError.badRequest(field: "messages", "at most \(maxMessages) messages") }
        var text = ""
        for (index, item) in messages.enumerated() {
            guard let message = item as? [String: Any] else { throw APIError.badRequest(field: "messages[\(index)]", "expected an object") }
            guard let role = message["role"] as? String else { throw APIError.badRequest(field: "messages[\(index)].role", "expected a string") }
            text += role + ": "
            switch message["content"] {
            case let content as String:
                text += content
            case let parts as [Any]:
                for (partIndex, part) in parts.enumerated() {
                    guard let part = part as? [String: Any] else {
                        throw APIError.badRequest(field: "messages[\(index)].content[\(partIndex)]", "expected an object")
                    }
                    if let partText = part["text"] as? String { text += partText }
                }
            case nil, is NSNull:
                break
            default:
                throw APIError.badRequest(field: "messages[\(index)].content", "expected a string or an array of parts")
            }
            text += "\n"
        }
        return text
    }

    /// A completions `prompt` or an embeddings `input`: text, texts (the first is routed on), or
    /// token ids (a list, or a list of lists).
    static func completionPrompt(_ value: Any?, field: String) throws -> Prompt {
        func tokenIDs(_ value: Any) -> [UInt32]? {
            guard let numbers = value as? [NSNumber],
                  numbers.allSatisfy({ !isJSONBoolean($0) && $0.doubleValue == $0.doubleValue.rounded() && $0.int64Value >= 0 && $0.int64Value <= Int64(UInt32.max) })
            else { return nil }
            return numbers.map(\.uint32Value)
        }
        switch value {
        case nil: throw APIError.badRequest(field: field, "is required")
        case let text as String: return .text(text)
        case let list as [Any]:
            if let texts = list as? [String] { return .text(texts.first ?? "") }
            if let ids = tokenIDs(list) { return .tokens(ids) }
            if let first = list.first, let ids = tokenIDs(first), list.allSatisfy({ tokenIDs($0) != nil }) { return .tokens(ids) }
            throw APIError.badRequest(field: field, "expected a string, strings, or token ids (integers in 0...4294967295)")
        default:
            throw APIError.badRequest(field: field, "expected a string, strings, or token ids")
        }
    }

    /// A Responses API request as text: its `instructions`, then its `input` (a string, or items
    /// whose `content` is a string or parts with `text`), in order, as a conversation.
    static func responsesText(_ object: [String: Any]) throws -> String {
        var text = ""
        switch object["instructions"] {
        case let instructions as String: text += "system: " + instructions + "\n"
        case nil, is NSNull: break
        default: throw APIError.badRequest(field: "instructions", "expected a string")
        }
        switch object["input"] {
        case nil: throw APIError.badRequest(field: "input", "is required")
        case let input as String: return text + "user: " + input + "\n"
        case let items as [Any]:
            guard items.count <= maxMessages else { throw APIError.badRequest(field: "input", "at most \(maxMessages) items") }
            for (index, item) in items.enumerated() {
                guard let item = item as? [String: Any] else { throw APIError.badRequest(field: "input[\(index)]", "expected an object") }
                if let role = item["role"] as? String { text += role + ": " }
                switch item["content"] {
                case let content as String: text += content
                case let parts as [Any]:
                    for part in parts { if let part = part as? [String: Any], let partText = part["text"] as? String { text += partText } }
                case nil, is NSNull: if let output = item["output"] as? String { text += output }
                default: throw APIError.badRequest(field: "input[\(index)].content", "expected a string or an array of parts")
                }
                text += "\n"
            }
            return text
        default:
            throw APIError.badRequest(field: "input", "expected a string or an array of items")
        }
    }

    private struct ConnectFailure: Error {
        var workerID: String
        var underlying: any Error
    }

    private func proxy(_ request: Request, context: FulcrumRequestContext, endpoint: Endpoint) async throws -> Response {
        var request = request
        // The body is held once: parsed in place, then this same buffer goes upstream.
        let bodyBuffer = try await request.collectBody(upTo: context.maxUploadSize)
        let completion = try Self.parse(bodyBuffer, endpoint: endpoint)
        let started = ContinuousClock.now
        var prompt = completion.prompt.routing
        if case .text = completion.prompt, endpoint.handsOff,
           let tokens = await tokenizer.tokens(model: completion.model, object: completion.object, chat: endpoint == .chat) {
            prompt = .tokens(tokens)
        }
        var route = RoutingRequest(
            model: completion.model, requestID: request.headers[.xRequestID] ?? UUID().uuidString,
            sessionKey: request.headers[.xSessionID] ?? completion.user, prompt: prompt,
            promptTokens: completion.inputTokens ?? 0, tokensPerBlock: completion.tokensPerBlock ?? 16,
            expectedOutputTokens: completion.maxTokens ?? 0
        )
        var lastFailure: (any Error)?
        for _ in 0...settings.upstreamRetries {
            let answer: RouteResponse
            switch try await link.route(route, headers: request.headers) {
            case .decided(let decided): answer = decided
            case .relayed(let relayed):
                guard relayed.status == .ok else { return relayed.response }
                answer = try FulcrumJSON.decoder.decode(RouteResponse.self, from: Data(relayed.body.readableBytesView))
            }
            do {
                return try await send(answer, body: bodyBuffer, completion: completion, endpoint: endpoint, headers: request.headers, started: started)
            } catch let failure as ConnectFailure {
                logger.warning("worker \(failure.workerID) refused the connection; retrying elsewhere", metadata: ["error": "\(failure.underlying)"])
                metrics.upstream(model: completion.model, role: "any", outcome: UpstreamOutcome.connectError.rawValue)
                await release(answer, outcome: .connectError, workerID: failure.workerID, headers: request.headers)
                route.excludedWorkers.insert(failure.workerID)
                metrics.upstreamRetries.increment()
                lastFailure = failure.underlying
            }
        }
        throw APIError(.badGateway, code: "upstream_unreachable", "no worker could be reached after \(settings.upstreamRetries + 1) attempts: \(lastFailure.map { "\($0)" } ?? "")", retryAfter: 1)
    }

    private func send(
        _ answer: RouteResponse, body: ByteBuffer, completion: Completion, endpoint: Endpoint, headers: HTTPFields, started: ContinuousClock.Instant
    ) async throws -> Response {
        let path = endpoint.rawValue
        let byRole = Dictionary(answer.targets.map { ($0.role, $0) }, uniquingKeysWith: { first, _ in first })
        guard let final = byRole["DECODE"] ?? byRole["PDFUSION"] ?? byRole["PREFILL"] ?? answer.targets.last else {
            throw APIError(.badGateway, code: "no_target", "the decision named no worker")
        }
        let requestID = answer.requestId
        let engines = EngineCalls(workers: await link.routing.workers(answer.targets.map(\.workerId)), keys: engineKeys)
        // `upstream_timeout_ms` bounds the whole exchange: prefill, decode and the streamed body.
        let deadline = ContinuousClock.now + .milliseconds(settings.upstreamTimeoutMilliseconds)
        var common: [(String, String)] = [("X-Request-ID", requestID)]
        if let vit = byRole["VIT"] { common.append(("X-Fulcrum-Vit-Worker", vit.address)) }
        var finalBody = body
        var prefillLeg: ConcurrentLeg?
        var handoff: Handoff.Kind?
        if let prefill = byRole["PREFILL"], final.role == "DECODE" {
            guard endpoint.handsOff else {
                await release(answer, outcome: .clientError, workerID: final.workerId, headers: headers)
                throw APIError(
                    .badRequest, code: "unsupported_for_pd",
                    "\(path) is not served by a prefill/decode pair; give model \(completion.model) PDFUSION workers for it", field: "model"
                )
            }
            let step = PrefillStep(
                prefill: prefill, path: path, headers: common, answer: answer,
                requestHeaders: headers, deadline: deadline
            )
            let kind = engines.handoff(prefill: prefill, decode: final)
            handoff = kind
            switch kind {
            case .fulcrum:
                var object = completion.object
                Handoff.makeOneToken(&object)
                do {
                    _ = try await prefillStep(step, body: object, extraHeaders: [("X-Fulcrum-Decode-Worker", final.address)], engines: engines)
                } catch {
                    metrics.pdHandoff(protocol: kind.name, outcome: "prefill_failed")
                    throw error
                }
                common.append(("X-Fulcrum-Prefill-Worker", prefill.address))
            case .vllm:
                let answered: ByteBuffer
                do {
                    answered = try await prefillStep(step, body: Handoff.vllmPrefillBody(completion.object), extraHeaders: [], engines: engines)
                } catch {
                    metrics.pdHandoff(protocol: kind.name, outcome: "prefill_failed")
                    throw error
                }
                finalBody = try Handoff.vllmDecodeBody(completion.object, prefillAnswer: answered)
            case .sglang:
                let shared = Handoff.sglangBody(completion.object, prefillAddress: prefill.address, bootstrapPort: engines.bootstrapPort(prefill))
                finalBody = shared
                prefillLeg = startPrefillLeg(step, body: shared, engines: engines)
            }
        }
        var upstream = HTTPClientRequest(url: "http://\(final.address)\(path)")
        upstream.method = .POST
        upstream.headers.add(name: "Content-Type", value: "application/json")
        upstream.headers.add(name: "X-Fulcrum-Role", value: final.role.lowercased())
        for (name, value) in common { upstream.headers.add(name: name, value: value) }
        engines.authorize(&upstream, for: final)
        upstream.body = .bytes(finalBody)
        let response: HTTPClientResponse
        do {
            let client = client
            let request = upstream
            response = try await Handoff.race(prefillLeg) {
                try await client.execute(request, deadline: .now() + .nanoseconds(Int64((deadline - .now).nanoseconds)))
            }
        } catch let failure as ConcurrentLeg.Failure {
            // The prefill leg failed first: the decode leg (waiting for its KV) is abandoned.
            if let handoff { metrics.pdHandoff(protocol: handoff.name, outcome: "prefill_failed") }
            throw await prefillFailed(failure, answer: answer, headers: headers)
        } catch where Self.isConnectFailure(error) {
            prefillLeg?.cancel()
            if let handoff { metrics.pdHandoff(protocol: handoff.name, outcome: "decode_failed") }
            throw ConnectFailure(workerID: final.workerId, underlying: error)
        } catch {
            prefillLeg?.cancel()
            if let handoff { metrics.pdHandoff(protocol: handoff.name, outcome: "decode_failed") }
            metrics.upstream(model: answer.model, role: final.role, outcome: UpstreamOutcome.timeout.rawValue)
            await release(answer, outcome: .timeout, workerID: final.workerId, headers: headers)
            throw APIError(.gatewayTimeout, code: "upstream_failed", "worker \(final.workerId) failed before answering: \(error)")
        }
        var fields = HTTPFields()
        for name in ["Content-Type", "Cache-Control"] {
            if let value = response.headers.first(name: name), let field = HTTPField.Name(name) { fields[field] = value }
        }
        fields[.fulcrumWorker] = final.workerId
        let prefilling = byRole["PREFILL"] ?? byRole["PDFUSION"] ?? final
        fields[.fulcrumMatchedBlocks] = String(prefilling.matchedBlocks)
        metrics.prefixBlocks(worker: prefilling.workerId, matched: prefilling.matchedBlocks, total: answer.promptBlocks)
        fields[.fulcrumPromptBlocks] = String(answer.promptBlocks)
        if answer.degraded { fields[.fulcrumDegraded] = "1" }
        let status = Int(response.status.code)
        if let handoff { metrics.pdHandoff(protocol: handoff.name, outcome: (200..<300).contains(status) ? "ok" : "decode_failed") }
        let metrics = metrics
        let proxy = self
        let model = answer.model
        let role = final.role
        let leg = prefillLeg
        var abortWhen: (@Sendable () async -> (any Error)?)?
        if let leg {
            abortWhen = { () async -> (any Error)? in
                guard let failure = await leg.failure() else { return nil }
                return failure
            }
        }
        let abort = abortWhen
        let responseBody = ResponseBody { writer in
            var outcome = UpstreamOutcome(status: status)
            // Whatever ends the answer ends the prefill leg with it (it has finished by then
            // unless something failed).
            defer { leg?.cancel() }
            do {
                try await ChunkPump.pump(response.body, into: &writer, deadline: deadline, abortWhen: abort) {
                    metrics.upstreamTTFT(model: model, .now - started)
                }
                try await writer.finish(nil)
            } catch let failure as ChunkPump.Failure {
                if case .upstream(let error) = failure, let legFailure = error as? ConcurrentLeg.Failure {
                    _ = await proxy.prefillFailed(legFailure, answer: answer, headers: headers)
                    throw failure
                }
                let clientGone: Bool
                switch failure {
                case .client: clientGone = true
                case .upstream: clientGone = false
                }
                if !clientGone && outcome == .ok { outcome = .timeout }
                metrics.upstream(model: model, role: role, outcome: clientGone ? "client_gone" : outcome.rawValue)
                await proxy.release(answer, outcome: clientGone ? .ok : outcome, workerID: final.workerId, headers: headers)
                throw failure
            } catch {
                metrics.upstream(model: model, role: role, outcome: "client_gone")
                await proxy.release(answer, outcome: .ok, workerID: final.workerId, headers: headers)
                throw error
            }
            metrics.upstream(model: model, role: role, outcome: outcome.rawValue)
            await proxy.release(answer, outcome: outcome, workerID: final.workerId, headers: headers)
        }
        return Response(status: .init(code: status), headers: fields, body: responseBody)
    }

    /// What a prefill call needs to know of the exchange it belongs to.
    struct PrefillStep: Sendable {
        var prefill: RouteResponse.Target
        var path: String
        var headers: [(String, String)]
        var answer: RouteResponse
        var requestHeaders: HTTPFields
        var deadline: ContinuousClock.Instant
    }

    /// A sequential hand-off's first leg: the prefill worker computes the prompt's KV cache
    /// (a one-token, non-streaming request) before the decode worker is called. Returns the
    /// prefill worker's answer (vLLM's carries the `kv_transfer_params` the decode needs).
    private func prefillStep(
        _ step: PrefillStep, body object: [String: Any], extraHeaders: [(String, String)], engines: EngineCalls
    ) async throws -> ByteBuffer {
        let bytes = try JSONSerialization.data(withJSONObject: object)
        let request = prefillRequest(step, body: ByteBuffer(bytes: bytes), extraHeaders: extraHeaders, engines: engines)
        let answered: (status: Int, body: ByteBuffer)
        do {
            let client = client
            answered = try await withDeadline(step.deadline, "the prefill of \(step.prefill.workerId)") {
                let response = try await client.execute(request, deadline: .distantFuture)
                return (Int(response.status.code), try await response.body.collect(upTo: Handoff.maxPrefillAnswerBytes))
            }
        } catch where Self.isConnectFailure(error) {
            throw ConnectFailure(workerID: step.prefill.workerId, underlying: error)
        } catch {
            // A timeout, a broken or oversized answer: the reservation is released and the
            // prefill worker's breaker hears of it, as for an error status.
            throw await prefillFailed(.init(workerID: step.prefill.workerId, status: nil, reason: "\(error)"), answer: step.answer, headers: step.requestHeaders)
        }
        let outcome = UpstreamOutcome(status: answered.status)
        guard outcome == .ok else {
            throw await prefillFailed(
                .init(workerID: step.prefill.workerId, status: answered.status, reason: "answered \(answered.status)"), answer: step.answer,
                headers: step.requestHeaders
            )
        }
        metrics.upstream(model: step.answer.model, role: "PREFILL", outcome: outcome.rawValue)
        return answered.body
    }

    /// SGLang's hand-off: the same body goes to the prefill worker beside the decode call; the
    /// prefill's answer is read to its end and dropped (the client gets the decode's).
    private func startPrefillLeg(_ step: PrefillStep, body: ByteBuffer, engines: EngineCalls) -> ConcurrentLeg {
        let request = prefillRequest(step, body: body, extraHeaders: [], engines: engines)
        let client = client
        let metrics = metrics
        let workerID = step.prefill.workerId
        let model = step.answer.model
        return ConcurrentLeg(workerID: workerID) {
            do {
                let status = try await withDeadline(step.deadline, "the prefill of \(workerID)") {
                    let response = try await client.execute(request, deadline: .distantFuture)
                    for try await _ in response.body {}
                    return Int(response.status.code)
                }
                guard UpstreamOutcome(status: status) == .ok else { return .init(workerID: workerID, status: status, reason: "answered \(status)") }
                metrics.upstream(model: model, role: "PREFILL", outcome: UpstreamOutcome.ok.rawValue)
                return nil
            } catch is CancellationError {
                return nil
            } catch {
                return Task.isCancelled ? nil : .init(workerID: workerID, status: nil, reason: "\(error)")
            }
        }
    }

    private func prefillRequest(_ step: PrefillStep, body: ByteBuffer, extraHeaders: [(String, String)], engines: EngineCalls) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: "http://\(step.prefill.address)\(step.path)")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "X-Fulcrum-Role", value: "prefill")
        for (name, value) in step.headers + extraHeaders { request.headers.add(name: name, value: value) }
        engines.authorize(&request, for: step.prefill)
        request.body = .bytes(body)
        return request
    }

    /// A failed prefill leg: counted, the decision's reservations handed back with the prefill
    /// worker's outcome (its breaker hears of it), and the client's error.
    private func prefillFailed(_ failure: ConcurrentLeg.Failure, answer: RouteResponse, headers: HTTPFields) async -> APIError {
        let outcome = failure.status.map(UpstreamOutcome.init(status:)) ?? .timeout
        metrics.upstream(model: answer.model, role: "PREFILL", outcome: outcome.rawValue)
        await release(answer, outcome: outcome, workerID: failure.workerID, headers: headers)
        if failure.status != nil {
            return APIError(.badGateway, code: "prefill_failed", "prefill worker \(failure.workerID) \(failure.reason)")
        }
        return APIError(.gatewayTimeout, code: "prefill_failed", "prefill worker \(failure.workerID) failed: \(failure.reason)")
    }

    private func release(_ answer: RouteResponse, outcome: UpstreamOutcome, workerID: String, headers: HTTPFields) async {
        var forwarded = HTTPFields()
        for name in [HTTPField.Name.authorization, .xAPIKey] { forwarded[name] = headers[name] }
        _ = try? await link.release(
            ReleaseRequest(releaseToken: answer.releaseToken, outcome: outcome.rawValue, workerId: workerID), headers: forwarded
        )
    }

    /// Whether the request never reached the worker (safe to send elsewhere).
    static func isConnectFailure(_ error: any Error) -> Bool {
        if let error = error as? HTTPClientError, error == .connectTimeout { return true }
        if error is NIOConnectionError { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        if let error = error as? IOError, [ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH].contains(error.errnoCode) { return true }
        let text = String(describing: error)
        return text.contains("connectTimeout") || text.contains("Connection refused") || text.contains("connectionRefused")
    }
}

/// Whether a value from `JSONSerialization` is a JSON boolean (NSNumber also carries numbers).
func isJSONBoolean(_ value: Any) -> Bool {
    guard let number = value as? NSNumber else { return false }
    return String(cString: number.objCType) == "c"
}
