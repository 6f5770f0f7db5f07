import WireCoding

/// Turns a prompt into chained block hashes, the keys of the prefix-cache index.
///
/// The scheme (documented in `Docs/routing.md`, and used by the simulated engines so that a
/// router that sees only text can be compared on the same workload):
/// - token ids: consecutive blocks of `tokensPerBlock` ids; only full blocks are hashed, as
///   engines cache only full blocks;
/// - text: its UTF-8 bytes in blocks of `bytesPerTextBlock`, full blocks only;
/// - block *i*'s hash mixes block *i − 1*'s hash with block *i*'s contents (the chain starts
///   from the model name's hash), so one hash names the whole prefix up to it.
public struct BlockHasher: Sendable, Hashable {
    public var tokensPerBlock: Int
    public var bytesPerTextBlock: Int

    public init(tokensPerBlock: Int = 16, bytesPerTextBlock: Int = 64) {
        precondition(tokensPerBlock > 0 && bytesPerTextBlock > 0, "block sizes must be positive")
        self.tokensPerBlock = tokensPerBlock
        self.bytesPerTextBlock = bytesPerTextBlock
    }

    public func blocks(tokens: [UInt32], model: String) -> [BlockHash] {
        Self.chain(tokens, blockSize: tokensPerBlock, model: model) { hasher, token in hasher.combine(UInt64(token)) }
    }

    public func blocks(text: String, model: String) -> [BlockHash] {
        Self.chain(Array(text.utf8), blockSize: bytesPerTextBlock, model: model) { hasher, byte in hasher.combine(byte: byte) }
    }

    /// Hashes each full block of `items` together with the previous block's hash.
    private static func chain<Item>(
        _ items: [Item], blockSize: Int, model: String, combine: (inout StableHasher, Item) -> Void
    ) -> [BlockHash] {
        var result: [BlockHash] = []
        result.reserveCapacity(items.count / blockSize)
        var previous = root(model)
        var start = 0
        while start + blockSize <= items.count {
            var hasher = StableHasher(seed: previous)
            for item in items[start..<(start + blockSize)] { combine(&hasher, item) }
            previous = hasher.finalized
            result.append(previous)
            start += blockSize
        }
        return result
    }

    /// Chains externally supplied per-block ids (e.g. a trace's `hash_ids`) so that equal ids at
    /// different positions or after different prefixes name different blocks.
    public func chain(blockIDs: [UInt64], model: String) -> [BlockHash] {
        var previous = Self.root(model)
        return blockIDs.map { id in
            var hasher = StableHasher(seed: previous)
            hasher.combine(id)
            previous = hasher.finalized
            return previous
        }
    }

    /// The hash of the block of `tokens` that follows `previous` (``root(_:)`` for a prompt's
    /// first block): what ``blocks(tokens:model:)`` computes block by block, for index updates
    /// built from an engine's own events.
    public static func extend(_ previous: BlockHash, tokens: some Collection<UInt32>) -> BlockHash {
        var hasher = StableHasher(seed: previous)
        for token in tokens { hasher.combine(UInt64(token)) }
        return hasher.finalized
    }

    public static func root(_ model: String) -> UInt64 {
        var hasher = StableHasher()
        hasher.combine(bytes: model.utf8)
        return hasher.finalized
    }
}
