/// A hash map from block hashes to values: open addressing with linear probing and
/// backward-shift deletion. Block hashes are already uniformly mixed 64-bit values, so the
/// table indexes by the key's own bits instead of running a keyed hash per lookup (the prefix
/// walk does one lookup per prompt block, hundreds per decision).
struct BlockTable<Value: Sendable>: Sendable {
    private var keys: [UInt64] = []
    private var values: [Value?] = []
    /// Key 0 marks an empty bucket, so a real key 0 lives here.
    private var zeroValue: Value?
    private var used = 0

    var count: Int { used + (zeroValue == nil ? 0 : 1) }
    var isEmpty: Bool { count == 0 }

    init() {}

    @inline(__always)
    private func bucket(_ key: UInt64, mask: Int) -> Int {
        Int(truncatingIfNeeded: (key ^ (key >> 31)) &* 0x9E37_79B9_7F4A_7C15 >> 20) & mask
    }

    private func find(_ key: UInt64) -> Int? {
        guard !keys.isEmpty else { return nil }
        let mask = keys.count - 1
        var index = bucket(key, mask: mask)
        while true {
            let found = keys[index]
            if found == key { return index }
            if found == 0 { return nil }
            index = (index + 1) & mask
        }
    }

    subscript(key: UInt64) -> Value? {
        if key == 0 { return zeroValue }
        guard let index = find(key) else { return nil }
        return values[index]
    }

    /// Changes the value for `key` in place, starting from `initial` when absent. Returning
    /// false from `body` removes the entry.
    mutating func modify(_ key: UInt64, initial: @autoclosure () -> Value, _ body: (inout Value) -> Bool) {
        if key == 0 {
            var value = zeroValue ?? initial()
            zeroValue = nil
            if body(&value) { zeroValue = value }
            return
        }
        if let index = find(key) {
            var value = values[index].take()!
            if body(&value) { values[index] = value } else { removeBucket(index) }
            return
        }
        var value = initial()
        guard body(&value) else { return }
        if (used + 1) * 4 > keys.count * 3 { grow() }
        let mask = keys.count - 1
        var index = bucket(key, mask: mask)
        while keys[index] != 0 { index = (index + 1) & mask }
        keys[index] = key
        values[index] = value
        used += 1
    }

    @discardableResult
    mutating func removeValue(forKey key: UInt64) -> Value? {
        if key == 0 {
            defer { zeroValue = nil }
            return zeroValue
        }
        guard let index = find(key) else { return nil }
        let value = values[index]
        removeBucket(index)
        return value
    }

    /// Every key, in no particular order.
    var keysInStorageOrder: [UInt64] {
        var result = keys.filter { $0 != 0 }
        if zeroValue != nil { result.append(0) }
        return result
    }

    private mutating func removeBucket(_ removed: Int) {
        let mask = keys.count - 1
        var hole = removed
        keys[hole] = 0
        values[hole] = nil
        used -= 1
        // Shift later members of the probe run back into the hole.
        var index = (hole + 1) & mask
        while keys[index] != 0 {
            let home = bucket(keys[index], mask: mask)
            let distanceFromHome = (index - home) & mask
            let distanceToHole = (index - hole) & mask
            if distanceFromHome >= distanceToHole {
                keys[hole] = keys[index]
                values[hole] = values[index].take()
                keys[index] = 0
                hole = index
            }
            index = (index + 1) & mask
        }
    }

    private mutating func grow() {
        let oldKeys = keys
        var oldValues = values
        let capacity = max(16, keys.count * 2)
        keys = [UInt64](repeating: 0, count: capacity)
        values = [Value?](repeating: nil, count: capacity)
        let mask = capacity - 1
        for position in oldKeys.indices where oldKeys[position] != 0 {
            var index = bucket(oldKeys[position], mask: mask)
            while keys[index] != 0 { index = (index + 1) & mask }
            keys[index] = oldKeys[position]
            values[index] = oldValues[position].take()
        }
    }
}

extension BlockTable where Value == SlotSet {
    /// Records that `slot` holds `block`.
    mutating func insert(_ slot: Int32, holding block: BlockHash) {
        modify(block, initial: SlotSet()) { set in
            set.insert(slot)
            return true
        }
    }

    /// Records that `slot` no longer holds `block`; drops the block when nobody does.
    mutating func remove(_ slot: Int32, holding block: BlockHash) {
        modify(block, initial: SlotSet()) { set in
            set.remove(slot)
            return !set.isEmpty
        }
    }
}

extension BlockTable where Value == Int32 {
    /// Records `slot` as the latest holder of `block`.
    mutating func set(_ slot: Int32, for block: BlockHash) {
        modify(block, initial: slot) { value in
            value = slot
            return true
        }
    }

    /// Forgets `block` if `slot` is still its latest holder.
    mutating func remove(_ slot: Int32, ifLatestFor block: BlockHash) {
        modify(block, initial: -1) { value in value != slot && value != -1 }
    }
}
