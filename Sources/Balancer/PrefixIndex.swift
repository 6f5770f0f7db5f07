/// Which prompt blocks each worker holds in its KV cache, as far as the cluster knows: fed by
/// routing history (a worker that prefilled a prompt holds its blocks) and by the cache keys
/// workers report. Blocks are chained hashes, so a match of block *i* means the whole prefix up
/// to *i* is cached.
///
/// Each worker's blocks form an LRU bounded by a per-worker cap; an inverted index from block to
/// holders makes the longest-prefix walk cost one lookup per block.
struct PrefixIndex: Sendable {
    private(set) var lrus: [Int32: BlockLRU] = [:]
    private(set) var holders = BlockTable<SlotSet>()

    /// Records that `slot` holds `blocks`, most recent last; evicts its oldest blocks past `cap`.
    mutating func record(_ blocks: [BlockHash], slot: Int32, cap: Int) {
        guard cap > 0 else { return }
        var lru = lrus.removeValue(forKey: slot) ?? BlockLRU()
        for block in blocks where lru.touch(block) {
            holders.insert(slot, holding: block)
        }
        while lru.count > cap, let evicted = lru.evictOldest() {
            dropHolder(slot, of: evicted)
        }
        lrus[slot] = lru
    }

    /// Forgets that `slot` holds `blocks` (the worker evicted them).
    mutating func evict(_ blocks: [BlockHash], slot: Int32) {
        guard var lru = lrus.removeValue(forKey: slot) else { return }
        for block in blocks where lru.remove(block) {
            dropHolder(slot, of: block)
        }
        if lru.count > 0 { lrus[slot] = lru }
    }

    /// Forgets everything `slot` holds (the worker left or restarted).
    mutating func removeWorker(_ slot: Int32) {
        guard let lru = lrus.removeValue(forKey: slot) else { return }
        for block in lru.keysOldestFirst { dropHolder(slot, of: block) }
    }

    /// Trims every worker to `cap` blocks (after the cap was lowered).
    mutating func enforce(cap: Int) {
        for slot in lrus.keys.sorted() {
            var lru = lrus.removeValue(forKey: slot)!
            while lru.count > cap, let evicted = lru.evictOldest() { dropHolder(slot, of: evicted) }
            if lru.count > 0 { lrus[slot] = lru }
        }
    }

    func blockCount(of slot: Int32) -> Int { lrus[slot]?.count ?? 0 }

    private mutating func dropHolder(_ slot: Int32, of block: BlockHash) {
        holders.remove(slot, holding: block)
    }
}

/// Reusable buffers for the longest-prefix walk, so a routing decision allocates nothing.
struct PrefixMatcher: Sendable {
    private var alive: [UInt64] = []
    private var next: [UInt64] = []
    /// Matched blocks per slot, valid for the slots of the last ``match`` call.
    private(set) var matched: [Int32] = []

    /// For every slot in `candidates`, how many leading blocks of `blocks` it holds according to
    /// the replicated `index` or the router's `overlay` (a block counts when either lists the
    /// slot as a holder and every earlier block counted too).
    mutating func match(
        _ blocks: [BlockHash], candidates: [Int32], slotCapacity: Int, index: BlockTable<SlotSet>,
        overlay: BlockTable<Int32>
    ) {
        let words = (slotCapacity + 63) / 64
        if alive.count < words {
            alive = [UInt64](repeating: 0, count: words)
            next = alive
        }
        if matched.count < slotCapacity { matched.append(contentsOf: repeatElement(0, count: slotCapacity - matched.count)) }
        for word in 0..<words { alive[word] = 0 }
        for slot in candidates {
            alive[Int(slot) >> 6] |= 1 << UInt64(slot & 63)
            matched[Int(slot)] = 0
        }
        var aliveCount = candidates.count
        var depth: Int32 = 0
        for block in blocks {
            guard aliveCount > 0 else { break }
            for word in 0..<words { next[word] = 0 }
            var nextCount = 0
            if let set = index[block] { nextCount += set.intersect(alive, into: &next) }
            if !overlay.isEmpty, let slot = overlay[block] {
                let word = Int(slot) >> 6
                let bit: UInt64 = 1 << UInt64(slot & 63)
                if word < words && alive[word] & bit != 0 && next[word] & bit == 0 {
                    next[word] |= bit
                    nextCount += 1
                }
            }
            guard nextCount > 0 else { break }
            // Slots that drop out here matched exactly `depth` blocks.
            for word in 0..<words where alive[word] != next[word] {
                record(alive[word] & ~next[word], word: word, depth: depth)
            }
            depth += 1
            swap(&alive, &next)
            aliveCount = nextCount
        }
        for word in 0..<words where alive[word] != 0 {
            record(alive[word], word: word, depth: depth)
        }
    }

    private mutating func record(_ bits: UInt64, word: Int, depth: Int32) {
        var bits = bits
        while bits != 0 {
            matched[word * 64 + bits.trailingZeroBitCount] = depth
            bits &= bits - 1
        }
    }
}
