/// What one pick holds on a worker until the request ends.
public struct Reservation: Sendable, Hashable {
    public var token: UInt64
    public var slot: Int32
    public var workerID: String
    public var role: WorkerRole
    public var createdAt: Milliseconds
    /// Prompt tokens this worker still has to prefill for the request.
    public var prefillTokens: Int
    /// KV blocks the request will occupy (prompt and expected output).
    public var kvBlocks: Int
    public var tier: ResourceTier
}

/// In-flight reservations, local to the master (never replicated): rebuilt within one request
/// lifetime after a failover. Each worker's reservations stay ordered by creation time, so the
/// load that arrived after the engine's last report is a binary search away.
public struct ReservationLedger: Sendable, Hashable {
    /// Per slot (the index), oldest first.
    private var bySlot: [[Reservation]] = []
    /// Per slot, running totals of `bySlot[slot]` before each index (`[i]` covers entries
    /// `0..<i`), so the load since a time is a binary search and two reads however many
    /// requests a worker holds (rtp-llm frontends' schedules are held for seconds).
    private var prefixSums: [[PrefixSum]] = []
    /// token → the slots it holds.
    private var slotsByToken: [UInt64: [Int32]] = [:]
    /// Tokens by creation, for expiry after the configured TTL.
    private var expiryQueue = TimedQueue()
    /// Tokens that asked for their own hold, by the time it ends. In arrival order: with one
    /// hold length (a node's setting) that is the order they end; a longer hold ahead of a
    /// shorter one only delays the shorter one's end to its own.
    private var heldQueue = TimedQueue()
    /// Held requests by the id their engine reports them finished with (rtp-llm's
    /// `finished_task_list`), and back: the engine's word ends a hold before its time.
    private var tokenByRequestID: [String: UInt64] = [:]
    private var requestIDByToken: [UInt64: String] = [:]

    /// Tokens in arrival order with a time each, taken from the front.
    private struct TimedQueue: Sendable, Hashable {
        private var entries: [(token: UInt64, time: Milliseconds)] = []
        private var head = 0

        mutating func append(_ token: UInt64, _ time: Milliseconds) { entries.append((token, time)) }

        /// Removes and returns the tokens at the front whose time is at or before `limit`.
        mutating func popThrough(_ limit: Milliseconds) -> [UInt64] {
            var popped: [UInt64] = []
            while head < entries.count, entries[head].time <= limit {
                popped.append(entries[head].token)
                head += 1
            }
            if head > 1024 && head * 2 > entries.count {
                entries.removeFirst(head)
                head = 0
            }
            return popped
        }

        static func == (lhs: TimedQueue, rhs: TimedQueue) -> Bool {
            lhs.head == rhs.head && lhs.entries.elementsEqual(rhs.entries) { $0.token == $1.token && $0.time == $1.time }
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(head)
            for entry in entries { hasher.combine(entry.token); hasher.combine(entry.time) }
        }
    }

    public init() {}

    public var requestCount: Int { slotsByToken.count }
    public var reservationCount: Int { bySlot.reduce(0) { $0 + $1.count } }

    public func reservations(token: UInt64) -> [Reservation] {
        Set(slotsByToken[token] ?? []).sorted().flatMap { slot in bySlot[Int(slot)].filter { $0.token == token } }
    }

    public func inFlight(slot: Int32) -> Int { Int(slot) < bySlot.count ? bySlot[Int(slot)].count : 0 }

    mutating func add(_ reservation: Reservation, endsAt: Milliseconds? = nil, requestID: String? = nil) {
        let slot = Int(reservation.slot)
        if slot >= bySlot.count {
            bySlot.append(contentsOf: repeatElement([], count: slot - bySlot.count + 1))
            prefixSums.append(contentsOf: repeatElement([PrefixSum()], count: slot - prefixSums.count + 1))
        }
        // Creation times come from one clock and only grow; insert in order all the same.
        let position = bySlot[slot].lastIndex { $0.createdAt <= reservation.createdAt }.map { $0 + 1 } ?? 0
        bySlot[slot].insert(reservation, at: position)
        rebuildSums(slot: slot, from: position)
        if slotsByToken[reservation.token] == nil {
            if let endsAt { heldQueue.append(reservation.token, endsAt) } else { expiryQueue.append(reservation.token, reservation.createdAt) }
            if let requestID {
                if let previous = tokenByRequestID.updateValue(reservation.token, forKey: requestID) { requestIDByToken[previous] = nil }
                requestIDByToken[reservation.token] = requestID
            }
        }
        slotsByToken[reservation.token, default: []].append(reservation.slot)
    }

    /// Releases every pick of a request; returns what was released (empty for an unknown token).
    @discardableResult
    public mutating func release(token: UInt64) -> [Reservation] {
        guard let slots = slotsByToken.removeValue(forKey: token) else { return [] }
        forgetRequestID(of: token)
        var released: [Reservation] = []
        for slot in Set(slots).sorted() {
            guard let first = bySlot[Int(slot)].firstIndex(where: { $0.token == token }) else { continue }
            released += bySlot[Int(slot)][first...].filter { $0.token == token }
            bySlot[Int(slot)].removeAll { $0.token == token }
            rebuildSums(slot: Int(slot), from: first)
        }
        return released
    }

    /// Ends what the request the engine knows as `requestID` holds on `slot` (the engine there
    /// reported it finished); its picks on other workers stay, as a decode outlives its prefill.
    /// Nil when no held request has that id there.
    public mutating func finish(requestID: String, slot: Int32) -> Reservation? {
        guard let token = tokenByRequestID[requestID], var slots = slotsByToken[token], slots.contains(slot) else { return nil }
        guard let index = bySlot[Int(slot)].firstIndex(where: { $0.token == token }) else { return nil }
        let finished = bySlot[Int(slot)].remove(at: index)
        rebuildSums(slot: Int(slot), from: index)
        slots.removeAll { $0 == slot }
        if slots.isEmpty {
            slotsByToken[token] = nil
            forgetRequestID(of: token)
        } else {
            slotsByToken[token] = slots
        }
        return finished
    }

    /// Held requests the ledger knows by engine request id.
    public var identifiedRequestCount: Int { tokenByRequestID.count }

    private mutating func forgetRequestID(of token: UInt64) {
        guard let requestID = requestIDByToken.removeValue(forKey: token) else { return }
        if tokenByRequestID[requestID] == token { tokenByRequestID[requestID] = nil }
    }

    /// Drops requests reserved at or before `cutoff` that were never released, and those whose
    /// own hold ended by `now`.
    public mutating func expire(createdAtOrBefore cutoff: Milliseconds, now: Milliseconds = 0) -> Int {
        let due = expiryQueue.popThrough(cutoff) + heldQueue.popThrough(now)
        return due.reduce(0) { expired, token in release(token: token).isEmpty ? expired : expired + 1 }
    }

    /// Drops reservations on slots whose worker changed (left, or its slot was reused).
    mutating func dropStale(isCurrent: (Int32, String) -> Bool) {
        for slot in bySlot.indices {
            guard let first = bySlot[slot].first, !isCurrent(Int32(slot), first.workerID) else { continue }
            for token in Set(bySlot[slot].map(\.token)).sorted() { release(token: token) }
        }
    }

    /// Load that reached `slot` after `time`: requests, prompt tokens to prefill, KV blocks.
    func since(_ time: Milliseconds, slot: Int32) -> (requests: Int, prefillTokens: Int, kvBlocks: Int) {
        guard Int(slot) < prefixSums.count else { return (0, 0, 0) }
        // Called for every candidate of every decision: one contiguous array, no copies.
        return prefixSums[Int(slot)].withUnsafeBufferPointer { sums in
            let count = sums.count - 1
            guard count > 0 else { return (0, 0, 0) }
            var low = 0
            var high = count
            while low < high {
                let middle = (low + high) / 2
                if sums[middle].time <= time { low = middle + 1 } else { high = middle }
            }
            let total = sums[count]
            return (count - low, total.tokens - sums[low].tokens, total.blocks - sums[low].blocks)
        }
    }

    /// Totals of the entries before an index, and the creation time of the entry at it (the
    /// last one, past every entry, has none).
    struct PrefixSum: Sendable, Hashable {
        var tokens = 0
        var blocks = 0
        var time: Milliseconds = .max
    }

    /// Recomputes `prefixSums[slot]` from index `start` on, after `bySlot[slot]` changed there.
    private mutating func rebuildSums(slot: Int, from start: Int) {
        let list = bySlot[slot]
        prefixSums[slot].removeSubrange(min(start + 1, prefixSums[slot].count)...)
        var running = prefixSums[slot][start]
        prefixSums[slot].reserveCapacity(list.count + 1)
        for index in start..<list.count {
            prefixSums[slot][index].time = list[index].createdAt
            running.tokens &+= list[index].prefillTokens
            running.blocks &+= list[index].kvBlocks
            running.time = .max
            prefixSums[slot].append(running)
        }
    }

    /// Resources all reservations on `slot` hold.
    func reservedResources(slot: Int32) -> ResourceTier {
        var total = ResourceTier()
        guard Int(slot) < bySlot.count else { return total }
        for reservation in bySlot[Int(slot)] {
            total.vCPUs += reservation.tier.vCPUs
            total.memoryBytes += reservation.tier.memoryBytes
            total.diskBytes += reservation.tier.diskBytes
            total.gpus += reservation.tier.gpus
            total.gpuMemoryBytes += reservation.tier.gpuMemoryBytes
        }
        return total
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.bySlot.filter { !$0.isEmpty } == rhs.bySlot.filter { !$0.isEmpty } && lhs.slotsByToken.mapValues { $0.sorted() } == rhs.slotsByToken.mapValues { $0.sorted() }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bySlot.filter { !$0.isEmpty })
    }
}
