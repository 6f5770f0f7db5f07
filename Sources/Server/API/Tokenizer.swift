import AsyncHTTPClient
import Foundation
import NIOCore
import Serving
import Synchronization
import WireCoding

/// Token ids for text prompts, from a model's tokenizer endpoint (`tokenizers` in the node's
/// configuration), so that text requests match the blocks engines report in their KV events.
///
/// Two dialects, told apart by the URL's path:
/// - vLLM's `POST /tokenize` (vllm `entrypoints/serve/tokenize`): `{"model", "prompt"}`, or
///   `{"model", "messages", "add_generation_prompt": true}` — it applies the chat template;
/// - SGLang's `POST /v1/tokenize`: `{"model", "prompt"}` only, so chat requests keep the
///   history index.
/// Both answer `{"tokens": [...], "count", "max_model_len"}`. The call is bounded by
/// `tokenizer_timeout_ms`; a failure or a slow answer routes on the history index instead (and
/// is counted). Answers are cached, bounded in tokens: prompts by their text, conversations by
/// their message prefixes (see ``tokens(model:object:chat:)``).
final class Tokenizer: Sendable {
    enum Dialect { case vllm, sglang }

    static let maxTokens = 4 << 20

    private struct Cache {
        var entries: [UInt64: [UInt32]] = [:]
        var order: [UInt64] = []
        var tokens = 0
    }

    let client: HTTPClient
    let urls: [String: String]
    let timeoutMilliseconds: Int
    let cacheTokens: Int
    let metrics: ServerMetrics
    private let cache = Mutex(Cache())

    init(client: HTTPClient, urls: [String: String], timeoutMilliseconds: Int, cacheTokens: Int = 16 << 20, metrics: ServerMetrics) {
        self.client = client
        self.urls = urls
        self.timeoutMilliseconds = timeoutMilliseconds
        self.cacheTokens = cacheTokens
        self.metrics = metrics
    }

    static func dialect(_ url: String) -> Dialect { url.hasSuffix("/v1/tokenize") ? .sglang : .vllm }

    /// The prompt's token ids, or nil when the model has no tokenizer or it did not answer.
    ///
    /// Conversations are cached by their message prefixes: a follow-up turn whose earlier
    /// messages were tokenised routes at once on those tokens (the part an engine can hold;
    /// the new turn is not cached anywhere yet), while the whole conversation is tokenised in
    /// the background for the turn after. Only a conversation's first turn waits.
    func tokens(model: String, object: [String: Any], chat: Bool) async -> [UInt32]? {
        guard let url = urls[model] else { return nil }
        if chat {
            guard Self.dialect(url) == .vllm, let messages = object["messages"] as? [Any], !messages.isEmpty else { return nil }
            let keys = Self.prefixKeys(model: model, messages: messages)
            let body: [String: Any] = ["model": model, "messages": messages, "add_generation_prompt": true]
            if let whole = cached(keys[keys.count - 1]) {
                metrics.tokenizer(outcome: "cached")
                return whole
            }
            for key in keys.dropLast().reversed() {
                guard let prefix = cached(key) else { continue }
                metrics.tokenizer(outcome: "prefix")
                let last = keys[keys.count - 1]
                if let bytes = try? JSONSerialization.data(withJSONObject: body) {
                    Task { _ = await self.fetch(url: url, body: bytes, key: last) }
                }
                return prefix
            }
            guard let bytes = try? JSONSerialization.data(withJSONObject: body) else { return nil }
            return await fetch(url: url, body: bytes, key: keys[keys.count - 1])
        }
        guard let prompt = object["prompt"] as? String else { return nil }
        var hasher = StableHasher()
        hasher.combine(bytes: model.utf8)
        hasher.combine(bytes: prompt.utf8)
        let key = hasher.finalized
        if let hit = cached(key) {
            metrics.tokenizer(outcome: "cached")
            return hit
        }
        guard let bytes = try? JSONSerialization.data(withJSONObject: ["model": model, "prompt": prompt]) else { return nil }
        return await fetch(url: url, body: bytes, key: key)
    }

    /// One key per message prefix: key *k* names messages `0..<k+1` of `model`'s conversation.
    static func prefixKeys(model: String, messages: [Any]) -> [UInt64] {
        var hasher = StableHasher()
        hasher.combine(bytes: model.utf8)
        var keys: [UInt64] = []
        keys.reserveCapacity(messages.count)
        for message in messages {
            let bytes = (try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys, .fragmentsAllowed])) ?? Data()
            hasher.combine(UInt64(bytes.count))
            hasher.combine(bytes: bytes)
            keys.append(hasher.finalized)
        }
        return keys
    }

    private func cached(_ key: UInt64) -> [UInt32]? { cache.withLock { $0.entries[key] } }

    private func fetch(url: String, body: Data, key: UInt64) async -> [UInt32]? {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await client.execute(request, timeout: .milliseconds(Int64(timeoutMilliseconds)))
            let answer = try await response.body.collect(upTo: 64 << 20)
            guard response.status.code == 200,
                  let object = try JSONSerialization.jsonObject(with: Data(answer.readableBytesView)) as? [String: Any],
                  let list = object["tokens"] as? [NSNumber], list.count <= Self.maxTokens else {
                metrics.tokenizer(outcome: "error")
                return nil
            }
            var tokens: [UInt32] = []
            tokens.reserveCapacity(list.count)
            for token in list {
                let value = token.int64Value
                guard value >= 0 && value <= Int64(UInt32.max) else {
                    metrics.tokenizer(outcome: "error")
                    return nil
                }
                tokens.append(UInt32(value))
            }
            remember(key, tokens)
            metrics.tokenizer(outcome: "ok")
            return tokens
        } catch {
            metrics.tokenizer(outcome: "error")
            return nil
        }
    }

    private func remember(_ key: UInt64, _ tokens: [UInt32]) {
        guard tokens.count <= cacheTokens / 4 else { return }
        cache.withLock { cache in
            guard cache.entries.updateValue(tokens, forKey: key) == nil else { return }
            cache.order.append(key)
            cache.tokens += tokens.count
            var dropped = 0
            while cache.tokens > cacheTokens, dropped < cache.order.count {
                if let old = cache.entries.removeValue(forKey: cache.order[dropped]) { cache.tokens -= old.count }
                dropped += 1
            }
            if dropped > 0 { cache.order.removeFirst(dropped) }
        }
    }
}
