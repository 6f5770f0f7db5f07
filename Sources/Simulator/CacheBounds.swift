/// What prefix caching could reach on a trace, whatever the router: the figures a routing
/// strategy's hit ratio is read against (`fulcrum-sim evaluate`).
///
/// Both count hits as the engines do: a request's cached tokens are its hit blocks' tokens, at
/// most all but its last token.
public enum CacheBounds {
    /// One shared cache of unlimited size: a block hits when any earlier request had it.
    /// Nothing reaches more.
    public static func infiniteCache(_ trace: [TraceRequest], tokensPerBlock: Int) -> Double {
        var seen = Set<UInt64>()
        var hit = 0
        var total = 0
        for request in trace {
            var matched = 0
            for block in request.blockIDs {
                guard seen.contains(block) else { break }
                matched += 1
            }
            hit += min(matched * tokensPerBlock, request.inputTokens - 1)
            total += request.inputTokens
            seen.formUnion(request.blockIDs)
        }
        return total == 0 ? 0 : Double(hit) / Double(total)
    }

    /// The fleet's whole KV capacity as one cache run by Belady's optimal replacement (evict the
    /// block used again furthest in the future, or never): an upper bound for any placement on
    /// engines of `capacityBlocks` blocks in total. Any placement's prefix hits are block hits
    /// of its engines, and the union of the engines' caches is one cache of that size; no
    /// replacement policy of one cache hits more blocks than Belady's. It ignores that
    /// running requests pin their blocks and outputs take room, so real engines reach less.
    public static func pooledOptimal(_ trace: [TraceRequest], tokensPerBlock: Int, capacityBlocks: Int) -> Double {
        // Position of every access, and for each the position of the next access of its block.
        var accesses: [UInt64] = []
        for request in trace { accesses += request.blockIDs }
        var nextUse = [Int](repeating: .max, count: accesses.count)
        var last: [UInt64: Int] = [:]
        for position in accesses.indices.reversed() {
            nextUse[position] = last[accesses[position]] ?? .max
            last[accesses[position]] = position
        }
        var resident: [UInt64: Int] = [:]  // block → its next use
        var heap = MaxHeap()
        var position = 0
        var hit = 0
        var total = 0
        for request in trace {
            var tokens = 0
            for (index, block) in request.blockIDs.enumerated() {
                let size = index == request.blockIDs.count - 1 ? request.inputTokens - tokensPerBlock * index : tokensPerBlock
                if resident[block] != nil { tokens += size }
                let next = nextUse[position]
                position += 1
                if next == .max {
                    resident[block] = nil  // never used again: no reason to keep it
                    continue
                }
                resident[block] = next
                heap.push(next, block)
                while resident.count > capacityBlocks, let (use, victim) = heap.pop() {
                    if resident[victim] == use { resident[victim] = nil }  // else a stale entry
                }
            }
            hit += min(tokens, request.inputTokens - 1)
            total += request.inputTokens
        }
        return total == 0 ? 0 : Double(hit) / Double(total)
    }
}

/// A binary max-heap of (key, block).
private struct MaxHeap {
    private var items: [(Int, UInt64)] = []

    mutating func push(_ key: Int, _ block: UInt64) {
        items.append((key, block))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[parent].0 < items[child].0 else { break }
            items.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> (Int, UInt64)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var largest = parent
            if left < items.count, items[left].0 > items[largest].0 { largest = left }
            if right < items.count, items[right].0 > items[largest].0 { largest = right }
            guard largest != parent else { break }
            items.swapAt(parent, largest)
            parent = largest
        }
        return top
    }
}
