/// A set of worker slots (small dense integers the state assigns to workers). Most prompt blocks
/// are held by one or two workers, so up to four slots live inline with no allocation; larger
/// sets are a sorted array, and sets held by many workers become a bitset, so that the prefix
/// walk costs a few word operations per block even when every worker holds a prefix.
struct SlotSet: Sendable, Hashable {
    private enum Storage: Sendable, Hashable {
        /// Up to four slots, ascending, unused ones at -1.
        case inline(count: UInt8, Int32, Int32, Int32, Int32)
        case sparse([Int32])
        case dense(words: [UInt64], count: Int)
    }

    private static let inlineCapacity = 4
    private static let denseAbove = 48
    private static let sparseBelow = 24

    private var storage: Storage = .inline(count: 0, -1, -1, -1, -1)

    var count: Int {
        switch storage {
        case .inline(let count, _, _, _, _): Int(count)
        case .sparse(let slots): slots.count
        case .dense(_, let count): count
        }
    }

    var isEmpty: Bool { count == 0 }

    func contains(_ slot: Int32) -> Bool {
        switch storage {
        case .inline(let count, let a, let b, let c, let d):
            return count > 0 && (a == slot || b == slot || c == slot || d == slot)
        case .sparse(let slots): return binarySearch(slots, slot).found
        case .dense(let words, _):
            let word = Int(slot) >> 6
            return word < words.count && words[word] & (1 << UInt64(slot & 63)) != 0
        }
    }

    @discardableResult
    mutating func insert(_ slot: Int32) -> Bool {
        switch storage {
        case .inline(let count, let a, let b, let c, let d):
            guard !contains(slot) else { return false }
            guard Int(count) < Self.inlineCapacity else {
                var slots = [a, b, c, d]
                slots.insert(slot, at: binarySearch(slots, slot).position)
                storage = .sparse(slots)
                return true
            }
            // Insertion into the sorted prefix, without allocating.
            var items = (a, b, c, d)
            withUnsafeMutableBytes(of: &items) { raw in
                let buffer = raw.bindMemory(to: Int32.self)
                var position = Int(count)
                while position > 0 && buffer[position - 1] > slot {
                    buffer[position] = buffer[position - 1]
                    position -= 1
                }
                buffer[position] = slot
            }
            storage = .inline(count: count + 1, items.0, items.1, items.2, items.3)
            return true
        case .sparse(var slots):
            let (found, position) = binarySearch(slots, slot)
            guard !found else { return false }
            storage = .sparse([])
            slots.insert(slot, at: position)
            if slots.count > Self.denseAbove {
                storage = .dense(words: Self.words(of: slots), count: slots.count)
            } else {
                storage = .sparse(slots)
            }
            return true
        case .dense(var words, let count):
            let word = Int(slot) >> 6
            let bit: UInt64 = 1 << UInt64(slot & 63)
            if word < words.count && words[word] & bit != 0 { return false }
            storage = .sparse([])
            if word >= words.count { words.append(contentsOf: repeatElement(0, count: word - words.count + 1)) }
            words[word] |= bit
            storage = .dense(words: words, count: count + 1)
            return true
        }
    }

    @discardableResult
    mutating func remove(_ slot: Int32) -> Bool {
        switch storage {
        case .inline:
            guard contains(slot) else { return false }
            storage = Self.inline(sorted.filter { $0 != slot })
            return true
        case .sparse(var slots):
            let (found, position) = binarySearch(slots, slot)
            guard found else { return false }
            storage = .sparse([])
            slots.remove(at: position)
            storage = slots.count <= Self.inlineCapacity ? Self.inline(slots) : .sparse(slots)
            return true
        case .dense(var words, let count):
            let word = Int(slot) >> 6
            let bit: UInt64 = 1 << UInt64(slot & 63)
            guard word < words.count && words[word] & bit != 0 else { return false }
            storage = .sparse([])
            words[word] &= ~bit
            if count - 1 < Self.sparseBelow {
                storage = .sparse(Self.slots(of: words))
            } else {
                storage = .dense(words: words, count: count - 1)
            }
            return true
        }
    }

    /// Sets in `result` the bits of `alive` that are also in this set; returns how many were new.
    func intersect(_ alive: [UInt64], into result: inout [UInt64]) -> Int {
        var total = 0
        func visit(_ slot: Int32) {
            let word = Int(slot) >> 6
            guard slot >= 0, word < alive.count else { return }
            let bit: UInt64 = 1 << UInt64(slot & 63)
            if alive[word] & bit != 0 && result[word] & bit == 0 {
                result[word] |= bit
                total += 1
            }
        }
        switch storage {
        case .inline(let count, let a, let b, let c, let d):
            if count > 0 { visit(a) }
            if count > 1 { visit(b) }
            if count > 2 { visit(c) }
            if count > 3 { visit(d) }
        case .sparse(let slots):
            for slot in slots { visit(slot) }
        case .dense(let words, _):
            for word in 0..<min(words.count, alive.count) {
                let before = result[word]
                result[word] = before | (words[word] & alive[word])
                total += (result[word] ^ before).nonzeroBitCount
            }
        }
        return total
    }

    /// Slots in ascending order.
    var sorted: [Int32] {
        switch storage {
        case .inline(let count, let a, let b, let c, let d): Array([a, b, c, d].prefix(Int(count)))
        case .sparse(let slots): slots
        case .dense(let words, _): Self.slots(of: words)
        }
    }

    private static func inline(_ slots: [Int32]) -> Storage {
        func at(_ index: Int) -> Int32 { index < slots.count ? slots[index] : -1 }
        return .inline(count: UInt8(slots.count), at(0), at(1), at(2), at(3))
    }

    private static func words(of slots: [Int32]) -> [UInt64] {
        var words = [UInt64](repeating: 0, count: Int(slots.last ?? 0) / 64 + 1)
        for slot in slots { words[Int(slot) >> 6] |= 1 << UInt64(slot & 63) }
        return words
    }

    private static func slots(of words: [UInt64]) -> [Int32] {
        var slots: [Int32] = []
        for (index, word) in words.enumerated() {
            var remaining = word
            while remaining != 0 {
                slots.append(Int32(index * 64 + remaining.trailingZeroBitCount))
                remaining &= remaining - 1
            }
        }
        return slots
    }
}

private func binarySearch(_ slots: [Int32], _ slot: Int32) -> (found: Bool, position: Int) {
    var low = 0
    var high = slots.count
    while low < high {
        let middle = (low + high) / 2
        if slots[middle] < slot { low = middle + 1 } else { high = middle }
    }
    return (low < slots.count && slots[low] == slot, low)
}
