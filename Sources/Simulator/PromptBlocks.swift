import WireCoding

/// How a simulated engine turns a prompt into tokens and KV blocks, so that any router — one
/// that sends block hashes, one that sends token ids, or one that only sees text — can be
/// compared on the same workload.
///
/// - With the extension field `fulcrum_block_hashes` the hashes are the blocks, one per
///   `fulcrum_tokens_per_block` tokens (default: the engine's block size); the prompt's length
///   is `fulcrum_input_tokens`, else blocks × tokens per block.
/// - Otherwise the prompt's tokens: a prompt of token ids is its tokens; text is tokenised by
///   the simulator's tokenizer (``tokens(text:)``: a token is 4 bytes of UTF-8, read as a
///   little-endian integer; `/tokenize` serves the same). Block *i* is tokens
///   `[B·i, B·(i+1))` (the last may be partial), hashed together with block *i−1*'s hash: a
///   chain, so a block stands for its whole prefix, and equal prefixes give equal leading
///   blocks. These hashes are the engine's own; KV events name them with their token ids.
public enum PromptBlocks {
    public static let bytesPerToken = 4

    /// The simulator's tokenizer.
    public static func tokens(text: String) -> [UInt32] {
        let bytes = Array(text.utf8)
        var tokens: [UInt32] = []
        tokens.reserveCapacity((bytes.count + bytesPerToken - 1) / bytesPerToken)
        var start = 0
        while start < bytes.count {
            var token: UInt32 = 0
            for (shift, byte) in bytes[start..<min(start + bytesPerToken, bytes.count)].enumerated() { token |= UInt32(byte) << (8 * UInt32(shift)) }
            tokens.append(token)
            start += bytesPerToken
        }
        return tokens
    }

    /// The engine's block hashes of `tokens`, the last block possibly partial.
    public static func blocks(tokens: [UInt32], tokensPerBlock: Int) -> [UInt64] {
        let size = max(1, tokensPerBlock)
        var blocks: [UInt64] = []
        blocks.reserveCapacity(tokens.count / size + 1)
        var previous: UInt64 = 0
        var start = 0
        while start < tokens.count {
            var hasher = StableHasher()
            hasher.combine(previous)
            for token in tokens[start..<min(start + size, tokens.count)] { hasher.combine(UInt64(token)) }
            previous = hasher.finalized
            blocks.append(previous)
            start += size
        }
        return blocks.isEmpty ? [0] : blocks
    }

    public static func blocks(text: String, tokensPerBlock: Int) -> (blocks: [UInt64], tokens: Int) {
        let tokens = tokens(text: text)
        return (blocks(tokens: tokens, tokensPerBlock: tokensPerBlock), max(1, tokens.count))
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
