public import Balancer

/// Turns one engine's KV-cache events into changes of Fulcrum's prefix index.
///
/// Engines name blocks by their own hashes (vLLM: SHA-256 over CBOR with a seed; SGLang: its
/// own), which Fulcrum does not recompute. `BlockStored` carries each block's token ids and its
/// parent, so the mapper hashes the same tokens with Fulcrum's chain (``BlockHasher``, the
/// scheme requests carrying token ids are hashed with) and remembers engine hash → Fulcrum
/// hash, to chain the next blocks and to translate `BlockRemoved`.
///
/// Memory is bounded: the map keeps at most `capacity` entries, in two generations (when the
/// newer one fills, the older is dropped). A block whose parent was forgotten or never seen
/// (stored before Fulcrum subscribed and out of the replay buffer) cannot be chained: it is
/// counted as unmapped and left out, so the index never holds a block under a wrong name.
public struct BlockMapper: Sendable {
    public struct Change: Sendable, Equatable {
        public var stored: [BlockHash] = []
        public var removed: [BlockHash] = []
        /// The engine dropped everything (`AllBlocksCleared`, or a restart).
        public var cleared = false
        /// Blocks whose chain could not be followed.
        public var unmapped = 0

        public init() {}

        public var isEmpty: Bool { stored.isEmpty && removed.isEmpty && !cleared }

        /// `next` applied after this change.
        public mutating func merge(_ next: Change) {
            if next.cleared {
                self = next
                return
            }
            let removedNow = Set(next.removed)
            stored.removeAll { removedNow.contains($0) }
            removed += next.removed
            stored += next.stored
            unmapped += next.unmapped
        }
    }

    public let root: BlockHash
    public let capacity: Int
    private var current: [UInt64: BlockHash] = [:]
    private var previous: [UInt64: BlockHash] = [:]

    /// `model`: the chain starts from the model's root, as requests' hashes do.
    public init(model: String, capacity: Int) {
        root = BlockHasher.root(model)
        self.capacity = max(2, capacity)
    }

    public var count: Int { current.count + previous.count }

    private func lookup(_ engineHash: UInt64) -> BlockHash? { current[engineHash] ?? previous[engineHash] }

    private mutating func remember(_ engineHash: UInt64, _ hash: BlockHash) {
        if current.count >= capacity / 2 {
            previous = current
            current = [:]
            current.reserveCapacity(capacity / 2)
        }
        current[engineHash] = hash
    }

    private mutating func forget(_ engineHash: UInt64) -> BlockHash? {
        current.removeValue(forKey: engineHash) ?? previous.removeValue(forKey: engineHash)
    }

    public mutating func apply(_ batch: KVEventBatch) -> Change {
        var change = Change()
        for event in batch.events { change.merge(apply(event)) }
        return change
    }

    public mutating func apply(_ event: KVCacheEvent) -> Change {
        var change = Change()
        switch event {
        case .stored(let hashes, let parent, let tokens, let blockSize):
            var chained: BlockHash
            if let parent {
                guard let known = lookup(parent) else {
                    change.unmapped = hashes.count
                    return change
                }
                chained = known
            } else {
                chained = root
            }
            for (index, engineHash) in hashes.enumerated() {
                let start = index * blockSize
                chained = BlockHasher.extend(chained, tokens: tokens[start..<(start + blockSize)])
                remember(engineHash, chained)
                change.stored.append(chained)
            }
        case .removed(let hashes):
            for engineHash in hashes {
                if let hash = forget(engineHash) { change.removed.append(hash) }
            }
        case .allCleared:
            reset()
            change.cleared = true
        }
        return change
    }

    public mutating func reset() {
        current = [:]
        previous = [:]
    }
}
