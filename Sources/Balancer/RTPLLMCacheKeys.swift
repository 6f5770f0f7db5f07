/// rtp-llm's block cache keys: a rolling 64-bit hash over each block of token ids, which an
/// rtp-llm frontend sends FlexLB as `block_cache_keys` and its engines report as the keys they
/// hold. Fulcrum computes them as rtp-llm does (`rtp_llm/cpp/utils/HashUtil.h` and
/// `initCacheKeys` in `rtp_llm/cpp/cache/KVCacheHashUtil.cc`, alibaba/rtp-llm 4b8d39cd5), so
/// keys from either side match its own.
public enum RTPLLMCacheKeys {
    /// One step of `hashInt64Func`: `hash ^= std::hash<int32_t>(value) + 0x9e3779b97f4a7c15 +
    /// (hash << 12) + (hash >> 32)`, with libstdc++'s identity hash (sign-extended), an
    /// arithmetic right shift of the signed hash, and wrapping unsigned sums.
    @inlinable
    public static func combine(_ hash: Int64, _ value: Int32) -> Int64 {
        let bits = UInt64(bitPattern: hash)
        let sum = UInt64(bitPattern: Int64(value)) &+ 0x9e37_79b9_7f4a_7c15 &+ (bits << 12) &+ UInt64(bitPattern: hash >> 32)
        return Int64(bitPattern: bits ^ sum)
    }

    /// The key of every block of `tokens`, `blockSize` tokens each; the last, partial block
    /// gets a key too unless `fullBlocksOnly` (engines report full blocks; a frontend's request
    /// keys include the partial one).
    public static func keys(tokens: [Int32], blockSize: Int, fullBlocksOnly: Bool = false) -> [Int64] {
        guard blockSize > 0 else { return [] }
        let blocks = fullBlocksOnly ? tokens.count / blockSize : (tokens.count + blockSize - 1) / blockSize
        var keys: [Int64] = []
        keys.reserveCapacity(blocks)
        var hash: Int64 = 0
        for block in 0..<blocks {
            let start = block * blockSize
            for token in tokens[start..<min(start + blockSize, tokens.count)] { hash = combine(hash, token) }
            keys.append(hash)
        }
        return keys
    }
}
