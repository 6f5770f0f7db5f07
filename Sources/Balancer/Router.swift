import WireCoding

/// Makes routing decisions on the master. Reads the replicated ``BalancerState`` and keeps what
/// is local and per request: reservations, round-robin cursors, recency of picks, KV-pressure
/// hysteresis, and an overlay of the prefixes and sticky bindings it decided since they were last
/// flushed to the log.
///
/// A decision never waits for the log: its side effects on replicated state (blocks the chosen
/// worker now caches, new session bindings) are queued and handed out by
/// ``takePendingCommand()`` for the node to propose, coalesced.
public struct Router: Sendable {
    var random: SeededGenerator
    public private(set) var ledger = ReservationLedger()
    public let hasher: BlockHasher

    var roundRobinCursors: [PoolKey: Int] = [:]
    /// Pick sequence number per slot (0: never picked), for least-recently-picked tie-breaks.
    var lastPicked: [UInt64] = []
    var pickSequence: UInt64 = 0
    /// KV hysteresis: slots currently considered above the watermark.
    var kvPressured: [Bool] = []
    var rings: [PoolKey: HashRing] = [:]
    var matcher = PrefixMatcher()
    var seenRegistryVersion: UInt64 = .max
    var nextToken: UInt64 = 1

    /// Prefixes decided but not yet in the replicated index: for each block, the latest slot it
    /// was sent to (the one that matters for the next decision).
    var overlay = BlockTable<Int32>()
    var overlayGenerations: [(generation: UInt64, records: [(slot: Int32, blocks: [BlockHash])])] = []
    var pendingPrefixes: [(slot: Int32, workerID: String, blocks: [BlockHash])] = []
    var pendingSticky: [StickyKey: StickyBinding] = [:]
    /// Bindings decided and flushed but maybe not applied yet.
    var recentSticky: [StickyKey: StickyBinding] = [:]
    var generation: UInt64 = 0

    /// Requests per A/B arm, per model.
    public private(set) var armCounts: [String: [String: Int]] = [:]

    /// Flushed generations kept in the overlay while waiting for their commit.
    static let maxOverlayGenerations = 64

    struct PoolKey: Hashable, Sendable {
        var model: String
        var role: WorkerRole
    }

    public init(seed: UInt64 = 0x5EED, hasher: BlockHasher = BlockHasher()) {
        random = SeededGenerator(seed: seed)
        self.hasher = hasher
    }

    // MARK: Routing

    /// Places `request`: one worker per role, a reservation on each, or an error naming why not.
    /// On error nothing is reserved (earlier picks of the request are rolled back).
    public mutating func route(
        _ request: RoutingRequest, state: BalancerState, now: Milliseconds
    ) throws(BalancerError) -> RoutingDecision {
        var request = request
        if !state.hasModel(request.model), let model = state.config.aliases[request.model] { request.model = model }
        try validate(request, state: state)
        synchronize(with: state, now: now)
        guard state.hasModel(request.model) else { throw .unknownModel(request.model) }
        let roles = try resolveRoles(request, state: state)
        let policy = state.config.policy(for: request.model)
        let arm = drawArm(policy: policy, request: request)
        let blocks = promptBlocks(request)
        let promptTokens = promptLength(request, blockCount: blocks.count)
        let tier = request.tier.flatMap { state.config.tiers[$0] } ?? ResourceTier()
        let token = nextToken
        nextToken += 1

        var context = PickContext(
            request: request, state: state, now: now, blocks: blocks, promptTokens: promptTokens,
            tier: tier, policy: policy
        )
        var targets: [RoutingTarget] = []
        var pickedSlots: [Int32] = []
        var firstGroup: String?
        var prefillTTFT: Double?
        var effects: [Effect] = []
        for role in roles {
            let strategy = role.prefillsPrompt && arm != nil ? arm!.strategy : policy.strategy(for: role)
            let pick: Pick
            do {
                var candidates = try eligibleCandidates(role: role, context: context, group: firstGroup)
                if role.prefillsPrompt, let ceiling = request.admissionCeiling {
                    // Admitted under a class's ceiling: only the workers under it may take it
                    // (the strategy's favourite may be saturated); all of them if none is.
                    if !blocks.isEmpty { matchPrefixes(candidates: candidates, context: context) }
                    let under = candidates.filter { prediction(for: $0.slot, context: context, policy: ceiling.policy).queueing <= ceiling.milliseconds }
                    if !under.isEmpty { candidates = under }
                }
                pick = try choose(strategy: strategy, role: role, candidates: candidates, context: &context)
            } catch {
                ledger.release(token: token)
                throw error
            }
            let worker = state.workersBySlot[Int(pick.slot)]!
            if firstGroup == nil && policy.sameGroup { firstGroup = worker.group }
            let uncachedTokens = role.prefillsPrompt
                ? max(0, promptTokens - pick.matchedBlocks * request.tokensPerBlock) : 0
            let blockSize = max(worker.capacity.blockSize, 1)
            var estimate: Double?
            if role.prefillsPrompt {
                estimate = pick.estimatedTTFT ?? estimateTTFT(slot: pick.slot, matchedBlocks: pick.matchedBlocks, context: context)
                prefillTTFT = prefillTTFT ?? estimate
            }
            ledger.add(
                Reservation(
                    token: token, slot: pick.slot, workerID: worker.id, role: role, createdAt: now,
                    prefillTokens: uncachedTokens,
                    kvBlocks: role == .vit ? 0 : (promptTokens + request.expectedOutputTokens + blockSize - 1) / blockSize,
                    tier: tier
                ),
                endsAt: request.holdMilliseconds.map { now + $0 },
                requestID: request.holdMilliseconds == nil ? nil : request.requestID
            )
            if role.prefillsPrompt && !blocks.isEmpty {
                effects.append(.prefix(slot: pick.slot, workerID: worker.id, blocks: blocks))
            }
            if let binding = pick.binding { effects.append(.sticky(binding)) }
            pickedSlots.append(pick.slot)
            targets.append(RoutingTarget(
                role: role, workerID: worker.id, address: worker.address, group: worker.group,
                strategy: strategy, reason: pick.reason, matchedBlocks: pick.matchedBlocks,
                estimatedTTFTMilliseconds: estimate
            ))
        }
        for slot in pickedSlots { notePicked(slot: slot) }
        for effect in effects { record(effect) }
        if let arm { armCounts[request.model, default: [:]][arm.name, default: 0] += 1 }
        return RoutingDecision(
            requestID: request.requestID, model: request.model, targets: targets, arm: arm?.name,
            estimatedTTFTMilliseconds: prefillTTFT ?? 0, releaseToken: token, promptBlocks: blocks.count
        )
    }

    /// The estimated time to first token on the best candidate of the request's prefilling
    /// role, as shortest-TTFT estimates it (queued prefill, the uncached prompt at the worker's
    /// speed, step time, running decodes), without deciding or reserving anything: what
    /// admission control reads. A candidate saturated by `policy`'s measures (requests waiting
    /// at its engine, its KV cache) counts as an infinite queue. nil when no role prefills the
    /// prompt. Throws what ``route(_:state:now:)`` would for a request it cannot place.
    public mutating func predictTTFT(
        _ request: RoutingRequest, state: BalancerState, now: Milliseconds, policy: AdmissionPolicy = AdmissionPolicy()
    ) throws(BalancerError) -> TTFTPrediction? {
        var request = request
        if !state.hasModel(request.model), let model = state.config.aliases[request.model] { request.model = model }
        try validate(request, state: state)
        synchronize(with: state, now: now)
        guard state.hasModel(request.model) else { throw .unknownModel(request.model) }
        guard let role = try resolveRoles(request, state: state).first(where: \.prefillsPrompt) else { return nil }
        let blocks = promptBlocks(request)
        let context = PickContext(
            request: request, state: state, now: now, blocks: blocks,
            promptTokens: promptLength(request, blockCount: blocks.count),
            tier: request.tier.flatMap { state.config.tiers[$0] } ?? ResourceTier(), policy: state.config.policy(for: request.model)
        )
        let candidates = try eligibleCandidates(role: role, context: context, group: nil)
        if !blocks.isEmpty { matchPrefixes(candidates: candidates, context: context) }
        var best: TTFTPrediction?
        for candidate in candidates {
            let prediction = prediction(for: candidate.slot, context: context, policy: policy)
            if best == nil || (prediction.queueing, prediction.ttft) < (best!.queueing, best!.ttft) { best = prediction }
        }
        return best
    }

    /// What ``predictTTFT(_:state:now:policy:)`` expects of one candidate (the prefixes matched
    /// for `context` already).
    func prediction(for slot: Int32, context: PickContext, policy: AdmissionPolicy) -> TTFTPrediction {
        let matched = context.blocks.isEmpty ? 0 : Int(matcher.matched[Int(slot)])
        let ttft = estimateTTFT(slot: slot, matchedBlocks: matched, context: context)
        let worker = context.state.statusBySlot[Int(slot)]
        let waiting = worker.load.waitingRequests + ledger.since(worker.load.reportedAt, slot: slot).requests
        let total = worker.load.kvBlocksTotal > 0 ? worker.load.kvBlocksTotal : worker.capacity.kvBlocks
        let kvFraction = total > 0 ? Double(worker.load.kvBlocksUsed) / Double(total) : 0
        let uncached = max(0, context.promptTokens - matched * context.request.tokensPerBlock)
        let speed = max(worker.capacity.prefillTokensPerSecond, 1)
        let saturated = waiting >= policy.saturatedWaitingRequests || kvFraction >= policy.saturatedKVFraction
        return TTFTPrediction(ttft: ttft, own: Double(uncached) / speed * 1_000, saturated: saturated)
    }

    /// How fast `model`'s prefilling pool works through prompt tokens, per millisecond (the sum
    /// of its available workers' prefill speeds): what admission control estimates a queue's
    /// wait with.
    public func prefillTokensPerMillisecond(model: String, state: BalancerState) -> Double {
        let model = state.hasModel(model) ? model : (state.config.aliases[model] ?? model)
        let role: WorkerRole = state.pool(model: model, role: .pdfusion).isEmpty ? .prefill : .pdfusion
        var total = 0.0
        for slot in state.pool(model: model, role: role) {
            let status = state.statusBySlot[Int(slot)]
            if status.exclusion == nil || status.exclusion == .overCapacity { total += status.capacity.prefillTokensPerSecond }
        }
        return total / 1_000
    }

    /// Returns a request's reservations when it ends.
    @discardableResult
    public mutating func release(token: UInt64) throws(BalancerError) -> [Reservation] {
        let released = ledger.release(token: token)
        if released.isEmpty { throw .unknownReservation(token) }
        return released
    }

    /// Ends the holds of requests that `workerID`'s engine reports finished (by the request ids
    /// it was scheduled with); returns how many ended. Unknown ids are ignored: most finished
    /// requests were released already, or never held.
    @discardableResult
    public mutating func finished(requestIDs: [String], workerID: String, state: BalancerState) -> Int {
        guard !requestIDs.isEmpty, let slot = state.slotByID[workerID] else { return 0 }
        return requestIDs.reduce(0) { count, id in ledger.finish(requestID: id, slot: slot) == nil ? count : count + 1 }
    }

    /// Drops reservations older than the configured lifetime; returns how many requests expired.
    @discardableResult
    public mutating func expireReservations(now: Milliseconds, ttl: Milliseconds) -> Int {
        ledger.expire(createdAtOrBefore: now >= ttl ? now - ttl : 0, now: now)
    }

    // MARK: Replication of side effects

    /// The coalesced changes decided since the last call, for the node to propose (nil when
    /// there are none). Call ``commandApplied(generation:)`` once the log applied it.
    public mutating func takePendingCommand() -> (generation: UInt64, command: BalancerCommand)? {
        guard !pendingPrefixes.isEmpty || !pendingSticky.isEmpty else { return nil }
        generation += 1
        var commands: [BalancerCommand] = []
        if !pendingPrefixes.isEmpty {
            commands.append(.recordPrefixes(pendingPrefixes.map { PrefixRecord(workerID: $0.workerID, blocks: $0.blocks) }))
            overlayGenerations.append((generation, pendingPrefixes.map { ($0.slot, $0.blocks) }))
            if overlayGenerations.count > Self.maxOverlayGenerations { dropOverlay(overlayGenerations.removeFirst().records) }
        }
        if !pendingSticky.isEmpty {
            let bindings = pendingSticky.keys.sorted().map { pendingSticky[$0]! }
            commands.append(.bindSticky(bindings))
            for binding in bindings { recentSticky[binding.key] = binding }
        }
        pendingPrefixes = []
        pendingSticky = [:]
        return (generation, commands.count == 1 ? commands[0] : .batch(commands))
    }

    /// The command of `generation` (and all before it) is applied to the replicated state: the
    /// overlay no longer needs to carry it.
    public mutating func commandApplied(generation applied: UInt64) {
        while let first = overlayGenerations.first, first.generation <= applied {
            dropOverlay(overlayGenerations.removeFirst().records)
        }
        recentSticky = [:]
    }

    // MARK: Internals

    enum Effect {
        case prefix(slot: Int32, workerID: String, blocks: [BlockHash])
        case sticky(StickyBinding)
    }

    private mutating func record(_ effect: Effect) {
        switch effect {
        case .prefix(let slot, let workerID, let blocks):
            for block in blocks { overlay.set(slot, for: block) }
            pendingPrefixes.append((slot, workerID, blocks))
        case .sticky(let binding):
            pendingSticky[binding.key] = binding
        }
    }

    private mutating func dropOverlay(_ records: [(slot: Int32, blocks: [BlockHash])]) {
        for record in records {
            for block in record.blocks { overlay.remove(record.slot, ifLatestFor: block) }
        }
    }

    /// Resets slot-keyed caches when workers joined or left, and grows per-slot arrays.
    private mutating func synchronize(with state: BalancerState, now: Milliseconds) {
        expireReservations(now: now, ttl: state.config.settings.reservationTTLMilliseconds)
        guard state.registryVersion != seenRegistryVersion else { return }
        seenRegistryVersion = state.registryVersion
        let capacity = state.slotCapacity
        if lastPicked.count < capacity {
            lastPicked.append(contentsOf: repeatElement(0, count: capacity - lastPicked.count))
            kvPressured.append(contentsOf: repeatElement(false, count: capacity - kvPressured.count))
        }
        for slot in 0..<lastPicked.count where slot >= capacity || state.workersBySlot[slot] == nil {
            lastPicked[slot] = 0
            kvPressured[slot] = false
        }
        rings = [:]
        overlay = BlockTable()
        overlayGenerations = []
        pendingPrefixes.removeAll { state.workersBySlot.indices.contains(Int($0.slot)) == false || state.workersBySlot[Int($0.slot)]?.id != $0.workerID }
        for record in pendingPrefixes {
            for block in record.blocks { overlay.set(record.slot, for: block) }
        }
        ledger.dropStale { slot, workerID in
            Int(slot) < capacity && state.workersBySlot[Int(slot)]?.id == workerID
        }
    }

    private mutating func notePicked(slot: Int32) {
        pickSequence += 1
        lastPicked[Int(slot)] = pickSequence
    }

    private func validate(_ request: RoutingRequest, state: BalancerState) throws(BalancerError) {
        try request.validate()
        if case .tokens(let tokens) = request.prompt, tokens.count > RoutingRequest.maxBlocks * hasher.tokensPerBlock {
            throw .invalidRequest(field: "token_ids", "at most \(RoutingRequest.maxBlocks * hasher.tokensPerBlock) tokens, got \(tokens.count)")
        }
        if let tier = request.tier, state.config.tiers[tier] == nil {
            throw .invalidRequest(field: "tier", "unknown tier '\(tier)'; known: \(state.config.tiers.keys.sorted())")
        }
        if Set(request.roles).count != request.roles.count {
            throw .invalidRequest(field: "roles", "a role is listed twice: \(request.roles)")
        }
    }

    /// Puts the requested roles in execution order and checks the combination.
    private func resolveRoles(_ request: RoutingRequest, state: BalancerState) throws(BalancerError) -> [WorkerRole] {
        if request.roles.isEmpty {
            let has = { (role: WorkerRole) in !state.pool(model: request.model, role: role).isEmpty }
            if has(.pdfusion) { return [.pdfusion] }
            if has(.prefill) && has(.decode) { return [.prefill, .decode] }
            if has(.decode) { return [.decode] }
            if has(.prefill) { return [.prefill] }
            return [.vit]
        }
        let roles = request.roles.sorted()
        if roles.contains(.pdfusion) && (roles.contains(.prefill) || roles.contains(.decode)) {
            throw .invalidRequest(field: "roles", "PDFUSION does prefill and decode itself; it cannot be combined with PREFILL or DECODE")
        }
        return roles
    }

    private func drawArm(policy: ModelPolicy, request: RoutingRequest) -> StrategyArm? {
        guard !policy.split.isEmpty else { return nil }
        let total = policy.split.reduce(0) { $0 + $1.weight }
        var hasher = StableHasher()
        hasher.combine(bytes: request.requestID.utf8)
        var ticket = Int(hasher.finalized % UInt64(total))
        for arm in policy.split {
            if ticket < arm.weight { return arm }
            ticket -= arm.weight
        }
        return policy.split.last
    }

    private func promptBlocks(_ request: RoutingRequest) -> [BlockHash] {
        switch request.prompt {
        case .blocks(let blocks): blocks
        case .tokens(let tokens): hasher.blocks(tokens: tokens, model: request.model)
        case .text(let text): hasher.blocks(text: text, model: request.model)
        case .none: []
        }
    }

    private func promptLength(_ request: RoutingRequest, blockCount: Int) -> Int {
        if request.promptTokens > 0 { return request.promptTokens }
        switch request.prompt {
        case .tokens(let tokens): return tokens.count
        // About four bytes of English text per token.
        case .text(let text): return (text.utf8.count + 3) / 4
        case .blocks: return blockCount * request.tokensPerBlock
        case .none: return 0
        }
    }
}
