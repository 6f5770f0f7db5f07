import WireCoding

/// Everything a strategy needs to know about the request being placed.
struct PickContext {
    let request: RoutingRequest
    let state: BalancerState
    let now: Milliseconds
    let blocks: [BlockHash]
    let promptTokens: Int
    let tier: ResourceTier
    let policy: ModelPolicy
    /// Prefix matches per slot, computed once per request and pool when a strategy needs them.
    var matchedPools: Set<WorkerRole> = []

    var settings: RoutingSettings { state.config.settings }
}

/// A strategy's choice.
struct Pick {
    var slot: Int32
    var reason: RoutingReason
    var matchedBlocks: Int = 0
    var estimatedTTFT: Double?
    /// A session binding to create or refresh.
    var binding: StickyBinding?
}

/// A candidate worker with its effective load.
struct Candidate {
    var slot: Int32
    /// Engine-reported running + waiting requests, plus requests reserved since that report.
    var load: Int
}

extension Router {
    // MARK: Candidates

    /// The workers of a role that may take the request: not draining, not unhealthy, circuit not
    /// open, under their request cap, and in `group` when given. Throws the most telling reason
    /// when none is left.
    func eligibleCandidates(role: WorkerRole, context: PickContext, group: String?) throws(BalancerError) -> [Candidate] {
        let state = context.state
        let model = context.request.model
        let pool = state.pool(model: model, role: role)
        guard !pool.isEmpty else {
            throw .noWorker(role, model: model, detail: "the model has no worker of this role")
        }
        var result: [Candidate] = []
        result.reserveCapacity(pool.count)
        var unhealthy = 0
        var draining = 0
        var full = 0
        var outOfGroup = 0
        let excluded = context.request.excludedWorkers
        for slot in pool {
            if let group, state.workersBySlot[Int(slot)]!.group != group {
                outOfGroup += 1
                continue
            }
            if !excluded.isEmpty && excluded.contains(state.workersBySlot[Int(slot)]!.id) {
                unhealthy += 1
                continue
            }
            let worker = state.statusBySlot[Int(slot)]
            switch worker.exclusion {
            case .draining: draining += 1; continue
            case .unhealthy, .circuitOpen: unhealthy += 1; continue
            case .overCapacity, nil: break
            }
            let load = effectiveLoad(slot: slot, worker: worker)
            if worker.capacity.maxRequests > 0 && load >= worker.capacity.maxRequests {
                full += 1
                continue
            }
            result.append(Candidate(slot: slot, load: load))
        }
        if !result.isEmpty { return result }
        let considered = pool.count - outOfGroup
        if considered == 0, let group {
            throw .noWorker(role, model: model, detail: "none in group '\(group)' of the earlier pick")
        }
        if unhealthy == considered { throw .allUnhealthy(role, model: model, count: considered) }
        if draining == considered { throw .allDraining(role, model: model, count: considered) }
        if full == considered { throw .allOverCapacity(role, model: model, count: considered) }
        throw .noWorker(
            role, model: model,
            detail: "\(unhealthy) unhealthy or tripped, \(draining) draining, \(full) at capacity"
        )
    }

    func effectiveLoad(slot: Int32, worker: WorkerStatus) -> Int {
        let engine = worker.load.runningRequests + worker.load.waitingRequests
        return engine + ledger.since(worker.load.reportedAt, slot: slot).requests
    }

    // MARK: Dispatch

    mutating func choose(
        strategy: StrategyKind, role: WorkerRole, candidates: [Candidate], context: inout PickContext
    ) throws(BalancerError) -> Pick {
        switch strategy {
        case .random:
            return Pick(slot: candidates[random.below(candidates.count)].slot, reason: .random)
        case .roundRobin:
            return pickRoundRobin(role: role, candidates: candidates, context: context)
        case .leastLoad:
            return Pick(slot: leastLoaded(candidates), reason: .leastLoad)
        case .powerOfTwo:
            return pickPowerOfTwo(candidates)
        case .cacheAware:
            return pickCacheAware(role: role, candidates: candidates, context: context)
        case .shortestTTFT:
            return pickShortestTTFT(role: role, candidates: candidates, context: context)
        case .kvPressure:
            return pickKVPressure(candidates: candidates, context: context)
        case .consistentHash:
            return pickConsistentHash(role: role, candidates: candidates, context: context)
        case .resourceAware:
            return try pickResourceAware(role: role, candidates: candidates, context: context)
        case .sticky:
            return try pickSticky(role: role, candidates: candidates, context: &context)
        }
    }

    // MARK: Simple strategies

    mutating func pickRoundRobin(role: WorkerRole, candidates: [Candidate], context: PickContext) -> Pick {
        let key = PoolKey(model: context.request.model, role: role)
        let cursor = roundRobinCursors[key, default: 0]
        roundRobinCursors[key] = cursor &+ 1
        return Pick(slot: candidates[cursor % candidates.count].slot, reason: .roundRobin)
    }

    mutating func pickPowerOfTwo(_ candidates: [Candidate]) -> Pick {
        guard candidates.count > 1 else { return Pick(slot: candidates[0].slot, reason: .powerOfTwo) }
        let first = random.below(candidates.count)
        var second = random.below(candidates.count - 1)
        if second >= first { second += 1 }
        return Pick(slot: leastLoaded([candidates[first], candidates[second]]), reason: .powerOfTwo)
    }

    /// The least loaded candidate; ties go to the one picked least recently, then at random, so
    /// workers that are equally idle share the traffic instead of the first one taking it all.
    mutating func leastLoaded(_ candidates: [Candidate]) -> Int32 {
        var best = candidates[0]
        var ties = 1
        for candidate in candidates.dropFirst() {
            if candidate.load < best.load {
                best = candidate
                ties = 1
            } else if candidate.load == best.load {
                let recency = lastPicked[Int(candidate.slot)]
                let bestRecency = lastPicked[Int(best.slot)]
                if recency < bestRecency {
                    best = candidate
                    ties = 1
                } else if recency == bestRecency {
                    // Reservoir sampling among exact ties.
                    ties += 1
                    if random.below(ties) == 0 { best = candidate }
                }
            }
        }
        return best.slot
    }

    // MARK: Prefix matching

    /// Leading prompt blocks each candidate holds (replicated index plus the local overlay).
    mutating func matchPrefixes(candidates: [Candidate], context: PickContext) {
        matcher.match(
            context.blocks, candidates: candidates.map(\.slot), slotCapacity: context.state.slotCapacity,
            index: context.state.prefixHolders, overlay: overlay
        )
    }

    mutating func pickCacheAware(role: WorkerRole, candidates: [Candidate], context: PickContext) -> Pick {
        let settings = context.settings
        var minLoad = Int.max
        var maxLoad = Int.min
        for candidate in candidates {
            minLoad = min(minLoad, candidate.load)
            maxLoad = max(maxLoad, candidate.load)
        }
        if maxLoad - minLoad > settings.balanceAbsoluteThreshold
            && Double(maxLoad) > Double(minLoad) * settings.balanceRelativeThreshold
        {
            return Pick(slot: leastLoaded(candidates), reason: .imbalanceFallback)
        }
        guard !context.blocks.isEmpty else { return Pick(slot: leastLoaded(candidates), reason: .cacheMiss) }
        matchPrefixes(candidates: candidates, context: context)
        var best: Int32 = 0
        for candidate in candidates { best = max(best, matcher.matched[Int(candidate.slot)]) }
        // A short match (a shared first block, a common system prompt) is not worth concentrating
        // traffic for, and one that every candidate shares tells nothing: least load.
        let holders = candidates.filter { matcher.matched[Int($0.slot)] == best }
        let ratio = Double(best) / Double(context.blocks.count)
        if best == 0 || ratio < settings.cacheHitThreshold || holders.count == candidates.count {
            let slot = leastLoaded(candidates)
            return Pick(slot: slot, reason: best == 0 ? .cacheMiss : .cacheHit, matchedBlocks: Int(matcher.matched[Int(slot)]))
        }
        return Pick(slot: leastLoaded(holders), reason: .cacheHit, matchedBlocks: Int(best))
    }

    // MARK: Shortest TTFT

    /// Estimated time to first token on `slot`: queued prefill work (reported, plus reserved
    /// since), the request's uncached prompt at the worker's prefill speed, the engine's step
    /// time, and a slowdown per running decode.
    func estimateTTFT(slot: Int32, matchedBlocks: Int, context: PickContext) -> Double {
        let worker = context.state.statusBySlot[Int(slot)]
        let since = ledger.since(worker.load.reportedAt, slot: slot)
        let cached = min(context.promptTokens, matchedBlocks * context.request.tokensPerBlock)
        let queued = Double(worker.load.queuedPrefillTokens + since.prefillTokens)
        let uncached = Double(context.promptTokens - cached)
        let speed = max(worker.capacity.prefillTokensPerSecond, 1)
        let running = Double(worker.load.runningRequests + since.requests)
        return (queued + uncached) / speed * 1000
            + worker.load.stepLatencyMilliseconds
            + running * context.settings.decodeMillisecondsPerRunningRequest
    }

    /// The lowest score, where a candidate's score is its estimated TTFT less `cacheAffinity`
    /// times the prefill time its cached prefix saves when that prefix covers at least
    /// `cacheHitThreshold` of the prompt: a greedy shortest-TTFT choice is myopic, since the
    /// worker that prefills a conversation's prompt is the one its next turns find cached. Among candidates scoring within the near-best margin of the best, the
    /// longest match wins (keeping the prefix in one place), then the least recently picked,
    /// then a random one, so equally idle workers share the traffic.
    mutating func pickShortestTTFT(role: WorkerRole, candidates: [Candidate], context: PickContext) -> Pick {
        if !context.blocks.isEmpty { matchPrefixes(candidates: candidates, context: context) }
        let affinity = context.settings.cacheAffinity
        var estimates: [(slot: Int32, ttft: Double, score: Double, matched: Int)] = []
        estimates.reserveCapacity(candidates.count)
        var bestScore = Double.infinity
        var bestTTFT = Double.infinity
        for candidate in candidates {
            let matched = context.blocks.isEmpty ? 0 : Int(matcher.matched[Int(candidate.slot)])
            let ttft = estimateTTFT(slot: candidate.slot, matchedBlocks: matched, context: context)
            var score = ttft
            // A short match (a shared system prompt) is not worth concentrating traffic for: only
            // one covering `cacheHitThreshold` of the prompt earns the affinity.
            if matched > 0 && affinity > 0 && Double(matched) >= context.settings.cacheHitThreshold * Double(context.blocks.count) {
                let cached = min(context.promptTokens, matched * context.request.tokensPerBlock)
                let speed = max(context.state.statusBySlot[Int(candidate.slot)].capacity.prefillTokensPerSecond, 1)
                score -= affinity * Double(cached) / speed * 1000
            }
            estimates.append((candidate.slot, ttft, score, matched))
            bestScore = min(bestScore, score)
            bestTTFT = min(bestTTFT, ttft)
        }
        let margin = max(bestTTFT * context.settings.nearBestFraction, context.settings.nearBestMilliseconds)
        var chosen = estimates[0]
        var chosenRecency = UInt64.max
        var ties = 0
        for estimate in estimates where estimate.score <= bestScore + margin {
            let recency = lastPicked[Int(estimate.slot)]
            let better = ties == 0 || estimate.matched > chosen.matched
                || (estimate.matched == chosen.matched
                    && (recency < chosenRecency || (recency == chosenRecency && estimate.score < chosen.score)))
            if better {
                chosen = estimate
                chosenRecency = recency
                ties = 1
            } else if estimate.matched == chosen.matched && recency == chosenRecency && estimate.score == chosen.score {
                ties += 1
                if random.below(ties) == 0 { chosen = estimate }
            }
        }
        return Pick(slot: chosen.slot, reason: .shortestTTFT, matchedBlocks: chosen.matched, estimatedTTFT: chosen.ttft)
    }

    // MARK: KV pressure (decode)

    /// Avoids workers above the KV high watermark (until they fall below the low one), then draws
    /// among the rest with weights favouring free KV cache and low load.
    mutating func pickKVPressure(candidates: [Candidate], context: PickContext) -> Pick {
        let settings = context.settings
        var open: [(slot: Int32, weight: Double)] = []
        var leastFull: (slot: Int32, usage: Double) = (candidates[0].slot, .infinity)
        for candidate in candidates {
            let worker = context.state.statusBySlot[Int(candidate.slot)]
            let total = worker.load.kvBlocksTotal > 0 ? worker.load.kvBlocksTotal : worker.capacity.kvBlocks
            let reserved = ledger.since(worker.load.reportedAt, slot: candidate.slot).kvBlocks
            let usage = total > 0 ? Double(worker.load.kvBlocksUsed + reserved) / Double(total) : 0
            let slot = Int(candidate.slot)
            if kvPressured[slot] {
                if usage < settings.kvLowWatermark { kvPressured[slot] = false }
            } else if usage >= settings.kvHighWatermark {
                kvPressured[slot] = true
            }
            if usage < leastFull.usage { leastFull = (candidate.slot, usage) }
            if !kvPressured[slot] {
                open.append((candidate.slot, max(1 - usage, 0.01) / Double(1 + candidate.load)))
            }
        }
        guard !open.isEmpty else { return Pick(slot: leastFull.slot, reason: .kvPressureFallback) }
        let total = open.reduce(0) { $0 + $1.weight }
        var ticket = random.unit() * total
        for entry in open {
            ticket -= entry.weight
            if ticket < 0 { return Pick(slot: entry.slot, reason: .kvHeadroom) }
        }
        return Pick(slot: open[open.count - 1].slot, reason: .kvHeadroom)
    }

    // MARK: Consistent hashing with bounded load

    mutating func pickConsistentHash(role: WorkerRole, candidates: [Candidate], context: PickContext) -> Pick {
        let request = context.request
        let key = PoolKey(model: request.model, role: role)
        let pool = context.state.pool(model: request.model, role: role)
        if rings[key]?.members != pool {
            rings[key] = HashRing(
                members: pool, ids: pool.map { context.state.workersBySlot[Int($0)]!.id },
                virtualNodes: context.settings.virtualNodesPerWorker
            )
        }
        var hasher = StableHasher()
        if let session = request.sessionKey {
            hasher.combine(bytes: session.utf8)
        } else if let first = context.blocks.first {
            hasher.combine(first)
        } else {
            hasher.combine(bytes: request.requestID.utf8)
        }
        // Bound (Mirrokni et al.): no worker above ceil(c · (total + 1) / n) requests.
        let total = candidates.reduce(0) { $0 + $1.load }
        let bound = Int((context.settings.boundedLoadFactor * Double(total + 1) / Double(candidates.count)).rounded(.up))
        // Load per slot, -1 for workers that are not candidates.
        var loads = [Int](repeating: -1, count: context.state.slotCapacity)
        for candidate in candidates { loads[Int(candidate.slot)] = candidate.load }
        var owner: Int32?
        let found = rings[key]!.first(from: hasher.finalized) { slot in
            if owner == nil { owner = slot }
            let load = loads[Int(slot)]
            return load >= 0 && load < bound
        }
        guard let found else { return Pick(slot: leastLoaded(candidates), reason: .boundedLoadSpill) }
        return Pick(slot: found, reason: found == owner ? .consistentHash : .boundedLoadSpill)
    }

    // MARK: Resource-aware

    /// Workers whose host has the tier's resources free (after what other reservations hold),
    /// scored by free cores (least-loaded first), free memory and free GPUs (weighted higher),
    /// less the distance to the request.
    mutating func pickResourceAware(role: WorkerRole, candidates: [Candidate], context: PickContext) throws(BalancerError) -> Pick {
        let settings = context.settings
        let tier = context.tier
        var best: (slot: Int32, score: Double)?
        for candidate in candidates {
            let status = context.state.statusBySlot[Int(candidate.slot)]
            let held = ledger.reservedResources(slot: candidate.slot)
            let freeCores = status.idleCores - held.vCPUs
            let freeMemory = Int64(clamping: status.memoryFreeBytes) - Int64(clamping: held.memoryBytes)
            let freeDisk = Int64(clamping: status.diskFreeBytes) - Int64(clamping: held.diskBytes)
            var usableGPUs = 0
            if status.gpuCount > 0 {
                for gpu in context.state.workersBySlot[Int(candidate.slot)]!.resources.gpus
                where gpu.memoryFreeBytes >= tier.gpuMemoryBytes && gpu.utilization < settings.busyCoreThreshold {
                    usableGPUs += 1
                }
            }
            let freeGPUs = usableGPUs - held.gpus
            guard freeCores >= tier.vCPUs, freeMemory >= Int64(clamping: tier.memoryBytes),
                freeDisk >= Int64(clamping: tier.diskBytes), freeGPUs >= tier.gpus
            else { continue }
            // Free cores, weighted by how idle the free cores are.
            let meanIdleness = status.idleCores > 0 ? status.idleCoreIdleness / Double(status.idleCores) : 0
            let cpuScore = status.totalCores > 0 ? meanIdleness * Double(freeCores) / Double(status.totalCores) : 0
            let memoryScore = status.memoryTotalBytes > 0 ? Double(max(freeMemory, 0)) / Double(status.memoryTotalBytes) : 0
            let gpuScore = status.gpuCount > 0 ? Double(freeGPUs) / Double(status.gpuCount) : 0
            var score = settings.cpuWeight * cpuScore + settings.memoryWeight * memoryScore + settings.gpuWeight * gpuScore
            if let origin = context.request.location, let location = context.state.workersBySlot[Int(candidate.slot)]!.location {
                score -= settings.distanceWeightPer1000Kilometres * origin.distanceKilometres(to: location) / 1000
            }
            score -= 0.001 * Double(candidate.load)
            if best == nil || score > best!.score
                || (score == best!.score && lastPicked[Int(candidate.slot)] < lastPicked[Int(best!.slot)])
            {
                best = (candidate.slot, score)
            }
        }
        guard let best else {
            throw .noResourceFit(role, model: context.request.model, tier: context.request.tier ?? "(none)")
        }
        return Pick(slot: best.slot, reason: .resourceFit)
    }

    // MARK: Sticky sessions

    /// Keeps a session on its worker while that worker is eligible and not overloaded; otherwise
    /// (or for a new session) prefers the worker the session uses on another tier, then the
    /// policy's fallback strategy, and binds the session to the result.
    mutating func pickSticky(role: WorkerRole, candidates: [Candidate], context: inout PickContext) throws(BalancerError) -> Pick {
        let request = context.request
        let settings = context.settings
        guard let session = request.sessionKey, !session.isEmpty else {
            var pick = try choose(strategy: context.policy.stickyFallback, role: role, candidates: candidates, context: &context)
            pick.reason = .stickyFallback
            return pick
        }
        let key = StickyKey(session: session, model: request.model, tier: request.tier ?? "")
        let totalLoad = candidates.reduce(0) { $0 + $1.load }
        func usable(_ binding: StickyBinding?) -> Candidate? {
            guard let binding, let slot = context.state.slotByID[binding.workerID] else { return nil }
            guard let candidate = candidates.first(where: { $0.slot == slot }) else { return nil }
            guard candidates.count > 1 else { return candidate }
            // Overloaded: well above the mean of the other candidates.
            let othersMean = Double(totalLoad - candidate.load) / Double(candidates.count - 1)
            let limit = settings.stickyOverloadFactor * othersMean + Double(settings.stickyOverloadSlack)
            return Double(candidate.load) <= limit ? candidate : nil
        }
        let expires = context.now + settings.stickyTTLMilliseconds
        if let current = binding(for: key, state: context.state), let candidate = usable(current) {
            // Refresh the binding once half its lifetime is gone.
            let refresh = current.expiresAt < context.now + settings.stickyTTLMilliseconds / 2
            return Pick(
                slot: candidate.slot, reason: .sticky,
                binding: refresh ? StickyBinding(key: key, workerID: current.workerID, expiresAt: expires) : nil
            )
        }
        for tierName in [""] + context.state.config.tiers.keys.sorted() where tierName != key.tier {
            let other = StickyKey(session: session, model: request.model, tier: tierName)
            if let candidate = usable(binding(for: other, state: context.state)) {
                let workerID = context.state.workersBySlot[Int(candidate.slot)]!.id
                return Pick(
                    slot: candidate.slot, reason: .stickyAffinity,
                    binding: StickyBinding(key: key, workerID: workerID, expiresAt: expires)
                )
            }
        }
        var pick = try choose(strategy: context.policy.stickyFallback, role: role, candidates: candidates, context: &context)
        pick.reason = .stickyFallback
        let workerID = context.state.workersBySlot[Int(pick.slot)]!.id
        pick.binding = StickyBinding(key: key, workerID: workerID, expiresAt: expires)
        return pick
    }

    /// The freshest binding for `key`: decided here but not yet flushed, flushed but maybe not
    /// applied, or replicated.
    func binding(for key: StickyKey, state: BalancerState) -> StickyBinding? {
        pendingSticky[key] ?? recentSticky[key] ?? state.stickyBinding(key)
    }
}
