import WireCoding

/// A consistent-hash ring over a pool's workers, with virtual nodes. Built from worker ids, so
/// every node of the cluster builds the same ring for the same pool.
struct HashRing: Sendable {
    let members: [Int32]
    private var points: [(hash: UInt64, slot: Int32)] = []

    init(members: [Int32], ids: [String], virtualNodes: Int) {
        self.members = members
        points.reserveCapacity(members.count * virtualNodes)
        for (slot, id) in zip(members, ids) {
            for replica in 0..<virtualNodes {
                var hasher = StableHasher(seed: UInt64(replica))
                hasher.combine(bytes: id.utf8)
                points.append((hasher.finalized, slot))
            }
        }
        points.sort { $0.hash < $1.hash || ($0.hash == $1.hash && $0.slot < $1.slot) }
    }

    /// The first slot clockwise from `hash` that `accept` takes (a slot may be offered more than
    /// once, once per virtual node), or nil when none does.
    func first(from hash: UInt64, where accept: (Int32) -> Bool) -> Int32? {
        guard !points.isEmpty else { return nil }
        var low = 0
        var high = points.count
        while low < high {
            let middle = (low + high) / 2
            if points[middle].hash < hash { low = middle + 1 } else { high = middle }
        }
        for step in 0..<points.count {
            let slot = points[(low + step) % points.count].slot
            if accept(slot) { return slot }
        }
        return nil
    }
}
