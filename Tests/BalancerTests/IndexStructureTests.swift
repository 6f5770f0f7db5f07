@testable import Balancer
import Testing

/// The hand-written structures under the prefix index, checked against the standard library.
@Suite struct IndexStructureTests {
    @Test func blockTableBehavesLikeADictionaryUnderRandomOperations() {
        var generator = CommandLogGenerator(state: 17)
        var table = BlockTable<Int32>()
        var reference: [UInt64: Int32] = [:]
        for step in 0..<60_000 {
            // A small key space (with 0 in it) makes collisions, long probe runs and deletes frequent.
            let key = UInt64(generator.below(3_000)) &* (step % 2 == 0 ? 1 : 0x9E37_79B9)
            switch generator.below(3) {
            case 0, 1:
                let value = Int32(generator.below(1_000))
                table.set(value, for: key)
                reference[key] = value
            default:
                let removed = table.removeValue(forKey: key)
                #expect(removed == reference.removeValue(forKey: key))
            }
            if step % 997 == 0 {
                #expect(table.count == reference.count)
                for (key, value) in reference { #expect(table[key] == value) }
            }
        }
        #expect(Set(table.keysInStorageOrder) == Set(reference.keys))
    }

    @Test func slotSetBehavesLikeASetThroughEveryRepresentation() {
        var generator = CommandLogGenerator(state: 5)
        var set = SlotSet()
        var reference = Set<Int32>()
        for _ in 0..<20_000 {
            // Grow towards ~100 members (dense), then shrink back (sparse, inline).
            let slot = Int32(generator.below(150))
            if generator.below(100) < (reference.count < 90 ? 65 : 35) {
                let inserted = set.insert(slot)
                #expect(inserted == reference.insert(slot).inserted)
            } else {
                let removed = set.remove(slot)
                #expect(removed == (reference.remove(slot) != nil))
            }
            #expect(set.count == reference.count)
        }
        #expect(set.sorted == reference.sorted())
        for slot in reference.sorted() { set.remove(slot) }
        #expect(set.isEmpty)
        #expect(set.sorted.isEmpty)
    }

    @Test func theLRUEvictsInLeastRecentlyUsedOrder() {
        var lru = BlockLRU()
        for key: UInt64 in [1, 2, 3, 4] { lru.touch(key) }
        lru.touch(2)
        #expect(lru.keysOldestFirst == [1, 3, 4, 2])
        let evicted = lru.evictOldest()
        #expect(evicted == 1)
        let first = lru.remove(4)
        let second = lru.remove(4)
        #expect(first && !second)
        lru.touch(9)
        #expect(lru.keysOldestFirst == [3, 2, 9])
        #expect(lru.count == 3)
    }

    @Test func theMatcherCountsOnlyUnbrokenLeadingRuns() {
        var index = BlockTable<SlotSet>()
        // Slot 0 holds blocks 1, 2, 3; slot 1 holds 1 and 3 (not 2); slot 2 holds nothing.
        for block: UInt64 in [1, 2, 3] { index.insert(0, holding: block) }
        for block: UInt64 in [1, 3] { index.insert(1, holding: block) }
        var overlay = BlockTable<Int32>()
        var matcher = PrefixMatcher()
        matcher.match([1, 2, 3, 4], candidates: [0, 1, 2], slotCapacity: 3, index: index, overlay: overlay)
        #expect(Array(matcher.matched.prefix(3)) == [3, 1, 0])
        // The router's overlay extends a run: slot 1 was just sent block 2.
        overlay.set(1, for: 2)
        matcher.match([1, 2, 3, 4], candidates: [0, 1, 2], slotCapacity: 3, index: index, overlay: overlay)
        #expect(Array(matcher.matched.prefix(3)) == [3, 3, 0])
        // Only candidates are considered.
        matcher.match([1, 2, 3], candidates: [1], slotCapacity: 3, index: index, overlay: overlay)
        #expect(matcher.matched[1] == 3)
    }
}
