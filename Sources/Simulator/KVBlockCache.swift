/// An engine's KV cache in blocks: blocks of running requests are pinned; blocks of finished
/// requests stay cached (reusable by a later request with the same prefix) until evicted, least
/// recently used first. Blocks of generated output are anonymous (never shared).
struct KVBlockCache: Sendable {
    let capacity: Int
    /// Blocks in use: pinned, cached and anonymous.
    private(set) var used = 0
    private var pins: [UInt64: Int] = [:]
    private var lru = LRUList()
    private var anonymous = 0
    /// What changed since the last ``takeEvents()``, in order, as engines publish KV-cache events
    /// (vLLM's `BlockStored` / `BlockRemoved`): blocks newly stored, and blocks evicted.
    private(set) var events: [KVEvent] = []
    var recordsEvents = false
    /// Counts changes to the set of stored blocks (rtp-llm's cache version: it starts again at
    /// 0 when the engine restarts cold).
    private(set) var version: Int64 = 0

    /// Every block stored now, pinned or cached.
    var storedBlocks: [UInt64] { Array(pins.keys) + lru.keys }

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var cachedBlocks: Int { lru.count }

    /// Leading blocks of `blocks` present (pinned by another request or cached).
    func prefixLength(_ blocks: [UInt64]) -> Int {
        var length = 0
        for block in blocks {
            guard pins[block] != nil || lru.contains(block) else { break }
            length += 1
        }
        return length
    }

    /// Pins `blocks` and allocates `extra` anonymous blocks, evicting cached blocks as needed.
    /// Returns false (changing nothing) when they cannot fit.
    mutating func reserve(_ blocks: [UInt64], extra: Int) -> Bool {
        var fresh = 0
        var reusable = 0
        for block in blocks where pins[block] == nil {
            if lru.contains(block) { reusable += 1 } else { fresh += 1 }
        }
        let needed = fresh + extra
        let free = capacity - used
        guard needed <= free + lru.count - reusable else { return false }
        // Reused blocks leave the evictable list first, so eviction cannot take them.
        for block in blocks where lru.contains(block) {
            lru.remove(block)
            pins[block] = 0
        }
        var toEvict = max(0, needed - free)
        while toEvict > 0, let evicted = lru.popOldest() {
            used -= 1
            toEvict -= 1
            version += 1
            if recordsEvents { events.append(.removed(evicted)) }
        }
        for block in blocks {
            if let count = pins[block] {
                pins[block] = count + 1
            } else {
                pins[block] = 1
                used += 1
                version += 1
                if recordsEvents { events.append(.stored(block)) }
            }
        }
        anonymous += extra
        used += extra
        return true
    }

    /// Unpins `blocks` (they stay cached) and frees `extra` anonymous blocks.
    mutating func release(_ blocks: [UInt64], extra: Int) {
        for block in blocks {
            guard let count = pins[block] else { continue }
            if count <= 1 {
                pins[block] = nil
                lru.append(block)
            } else {
                pins[block] = count - 1
            }
        }
        anonymous -= extra
        used -= extra
    }
}

extension KVBlockCache {
    mutating func takeEvents() -> [KVEvent] {
        defer { events = [] }
        return events
    }
}

/// A change to an engine's KV cache, by chained block hash.
public enum KVEvent: Sendable, Hashable {
    case stored(UInt64)
    case removed(UInt64)
}

/// A least-recently-used order over block hashes: O(1) append, remove and pop.
struct LRUList: Sendable {
    private var links: [UInt64: (previous: UInt64?, next: UInt64?)] = [:]
    private var head: UInt64?
    private var tail: UInt64?

    var count: Int { links.count }
    var keys: Dictionary<UInt64, (previous: UInt64?, next: UInt64?)>.Keys { links.keys }
    func contains(_ key: UInt64) -> Bool { links[key] != nil }

    mutating func append(_ key: UInt64) {
        if links[key] != nil { remove(key) }
        links[key] = (tail, nil)
        if let tail { links[tail]!.next = key } else { head = key }
        tail = key
    }

    mutating func remove(_ key: UInt64) {
        guard let link = links.removeValue(forKey: key) else { return }
        if let previous = link.previous { links[previous]!.next = link.next } else { head = link.next }
        if let next = link.next { links[next]!.previous = link.previous } else { tail = link.previous }
    }

    mutating func popOldest() -> UInt64? {
        guard let head else { return nil }
        remove(head)
        return head
    }
}
