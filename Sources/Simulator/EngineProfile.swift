/// The cost model of one simulated inference engine (one model on one GPU), after
/// `../shared/traces/README.md` §5. Every field can be changed; the profile in use is printed
/// with results.
///
///     t_iter = t_lin(tokens in batch) + c_attn · Σ_chunks q·(p + q/2)
///            + kv_bytes · Σ_decodes context / BW_eff + t_overhead
public struct EngineProfile: Sendable, Codable, Equatable, CustomStringConvertible {
    public var name: String
    /// `t_lin(N) = linearBaseMilliseconds + N / linearTokensPerSecond`.
    public var linearBaseMilliseconds: Double
    public var linearTokensPerSecond: Double
    /// `c_attn`: nanoseconds per (query, key) pair of prefill attention.
    public var attentionNanosecondsPerPair: Double
    /// KV-cache bytes per token (Llama-3-8B: 131,072).
    public var kvBytesPerToken: Double
    /// Effective memory bandwidth for decode attention reads, bytes per second.
    public var memoryBandwidthBytesPerSecond: Double
    public var overheadMilliseconds: Double
    /// KV-cache capacity in tokens.
    public var kvCapacityTokens: Int
    /// Tokens per iteration (decodes and prefill chunks together).
    public var maxBatchedTokens: Int
    /// Sequences running at once.
    public var maxSequences: Int
    /// Tokens per KV block (and per prefix block hash).
    public var blockSize: Int

    public init(
        name: String, linearBaseMilliseconds: Double, linearTokensPerSecond: Double, attentionNanosecondsPerPair: Double,
        kvBytesPerToken: Double, memoryBandwidthBytesPerSecond: Double, overheadMilliseconds: Double, kvCapacityTokens: Int,
        maxBatchedTokens: Int, maxSequences: Int, blockSize: Int
    ) {
        self.name = name
        self.linearBaseMilliseconds = linearBaseMilliseconds
        self.linearTokensPerSecond = linearTokensPerSecond
        self.attentionNanosecondsPerPair = attentionNanosecondsPerPair
        self.kvBytesPerToken = kvBytesPerToken
        self.memoryBandwidthBytesPerSecond = memoryBandwidthBytesPerSecond
        self.overheadMilliseconds = overheadMilliseconds
        self.kvCapacityTokens = kvCapacityTokens
        self.maxBatchedTokens = maxBatchedTokens
        self.maxSequences = maxSequences
        self.blockSize = blockSize
    }

    /// An 8B model in bf16 on one H100 80 GB (the README's defaults).
    public static let h100_8b = EngineProfile(
        name: "h100-8b", linearBaseMilliseconds: 5.6, linearTokensPerSecond: 48_000, attentionNanosecondsPerPair: 1.0,
        kvBytesPerToken: 131_072, memoryBandwidthBytesPerSecond: 2.6e12, overheadMilliseconds: 1, kvCapacityTokens: 400_000,
        maxBatchedTokens: 8_192, maxSequences: 256, blockSize: 16
    )

    /// The same model on one A100 80 GB: prefill about 15 k tokens/s, t_lin(1) ≈ 9.7 ms, 1.6 TB/s.
    public static let a100_8b = EngineProfile(
        name: "a100-8b", linearBaseMilliseconds: 9.7, linearTokensPerSecond: 15_000, attentionNanosecondsPerPair: 3.2,
        kvBytesPerToken: 131_072, memoryBandwidthBytesPerSecond: 1.6e12, overheadMilliseconds: 1, kvCapacityTokens: 400_000,
        maxBatchedTokens: 8_192, maxSequences: 256, blockSize: 16
    )

    public static func named(_ name: String) -> EngineProfile? {
        [h100_8b, a100_8b].first { $0.name == name }
    }

    public var kvCapacityBlocks: Int { max(1, kvCapacityTokens / max(1, blockSize)) }

    /// One iteration's duration in seconds.
    /// - Parameters:
    ///   - chunks: prefill chunks as (new tokens q, tokens before them p).
    ///   - decodeContexts: the context length of every decoding sequence (one token each).
    public func iterationSeconds(chunks: [(q: Int, p: Int)], decodeContexts: [Int]) -> Double {
        let tokens = chunks.reduce(0) { $0 + $1.q } + decodeContexts.count
        let linear = linearBaseMilliseconds / 1_000 + Double(tokens) / linearTokensPerSecond
        let attention = chunks.reduce(0.0) { $0 + Double($1.q) * (Double($1.p) + Double($1.q) / 2) } * attentionNanosecondsPerPair * 1e-9
        let reads = kvBytesPerToken * Double(decodeContexts.reduce(0, +)) / memoryBandwidthBytesPerSecond
        return linear + attention + reads + overheadMilliseconds / 1_000
    }

    public var description: String {
        "\(name): t_lin = \(linearBaseMilliseconds) ms + N/\(Int(linearTokensPerSecond)) tok/s, c_attn = \(attentionNanosecondsPerPair) ns, "
            + "kv \(Int(kvBytesPerToken)) B/token at \(memoryBandwidthBytesPerSecond / 1e12) TB/s, overhead \(overheadMilliseconds) ms, "
            + "KV \(kvCapacityTokens) tokens in blocks of \(blockSize), batch \(maxBatchedTokens) tokens / \(maxSequences) sequences"
    }
}
