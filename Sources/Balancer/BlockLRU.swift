/// The prompt blocks one worker holds, in least-recently-used order, with O(1) touch, remove
/// and eviction (an intrusive doubly-linked list over arrays).
struct BlockLRU: Sendable {
    private var keys: [BlockHash] = []
    private var previous: [Int32] = []
    private var next: [Int32] = []
    private var freeNodes: [Int32] = []
    private var position = BlockTable<Int32>()
    /// Most recently used.
    private var head: Int32 = -1
    /// Least recently used.
    private var tail: Int32 = -1

    var count: Int { position.count }

    func contains(_ key: BlockHash) -> Bool { position[key] != nil }

    /// Marks `key` most recently used; returns true when it was not held before.
    @discardableResult
    mutating func touch(_ key: BlockHash) -> Bool {
        if let node = position[key] {
            unlink(node)
            pushFront(node)
            return false
        }
        let node: Int32
        if let reused = freeNodes.popLast() {
            node = reused
            keys[Int(node)] = key
        } else {
            node = Int32(keys.count)
            keys.append(key)
            previous.append(-1)
            next.append(-1)
        }
        position.modify(key, initial: node) { _ in true }
        pushFront(node)
        return true
    }

    @discardableResult
    mutating func remove(_ key: BlockHash) -> Bool {
        guard let node = position.removeValue(forKey: key) else { return false }
        unlink(node)
        freeNodes.append(node)
        return true
    }

    /// Removes and returns the least recently used key.
    mutating func evictOldest() -> BlockHash? {
        guard tail >= 0 else { return nil }
        let key = keys[Int(tail)]
        remove(key)
        return key
    }

    /// Keys from least to most recently used: restoring them in this order rebuilds the same LRU.
    var keysOldestFirst: [BlockHash] {
        var result: [BlockHash] = []
        result.reserveCapacity(count)
        var node = tail
        while node >= 0 {
            result.append(keys[Int(node)])
            node = previous[Int(node)]
        }
        return result
    }

    private mutating func unlink(_ node: Int32) {
        let before = previous[Int(node)]
        let after = next[Int(node)]
        if before >= 0 { next[Int(before)] = after } else { head = after }
        if after >= 0 { previous[Int(after)] = before } else { tail = before }
        previous[Int(node)] = -1
        next[Int(node)] = -1
    }

    private mutating func pushFront(_ node: Int32) {
        previous[Int(node)] = -1
        next[Int(node)] = head
        if head >= 0 { previous[Int(head)] = node }
        head = node
        if tail < 0 { tail = node }
    }
}
