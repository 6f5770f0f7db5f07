import WireCoding

/// How a simulated engine turns a prompt into KV blocks, so that any router — one that sends
/// block hashes or one that only sees text — can be compared on the same workload.
///
/// - With the extension field `fulcrum_block_hashes` the hashes are the blocks, one per
///   `fulcrum_tokens_per_block` tokens (default: the engine's block size); the prompt's length
///   is `fulcrum_input_tokens`, else blocks × tokens per block.
/// - From text: a token is 4 bytes of UTF-8; block *i* is bytes `[4·B·i, 4·B·(i+1))` of the
///   prompt (the last may be partial), hashed together with block *i−1*'s hash (a chain, so a
///   block stands for its whole prefix). Equal prefixes give equal leading blocks.
public enum PromptBlocks {
    public static let bytesPerToken = 4

    public static func blocks(text: String, tokensPerBlock: Int) -> (blocks: [UInt64], tokens: Int) {
        let bytes = Array(text.utf8)
        let tokens = max(1, (bytes.count + bytesPerToken - 1) / bytesPerToken)
        let chunk = max(1, tokensPerBlock) * bytesPerToken
        var blocks: [UInt64] = []
        blocks.reserveCapacity(bytes.count / chunk + 1)
        var previous: UInt64 = 0
        var start = 0
        while start < bytes.count {
            var hasher = StableHasher()
            hasher.combine(previous)
            hasher.combine(bytes: bytes[start..<min(start + chunk, bytes.count)])
            previous = hasher.finalized
            blocks.append(previous)
            start += chunk
        }
        if blocks.isEmpty { blocks = [0] }
        return (blocks, tokens)
    }

    /// The text a replay sends for a trace request: each block id becomes `4·B` bytes derived
    /// from the id (so equal id prefixes give equal text prefixes), cut to `4·inputTokens` bytes.
    public static func text(forBlockIDs ids: [UInt64], inputTokens: Int, tokensPerBlock: Int) -> String {
        let chunk = tokensPerBlock * bytesPerToken
        var text = ""
        text.reserveCapacity(ids.count * chunk)
        for id in ids {
            let word = "b\(id) "
            var block = String(repeating: word, count: chunk / word.utf8.count)
            block += String(repeating: ".", count: chunk - block.utf8.count)
            text += block
        }
        let limit = max(1, inputTokens) * bytesPerToken
        if text.utf8.count > limit { text = String(text.utf8.prefix(limit))! }
        return text
    }
}
