/// The replicated state of the balancer: worker registry, prefix-cache index, sticky bindings
/// and configuration. A value; ``apply(_:)`` is deterministic, so every node that applies the
/// same log reaches the same state, byte for byte (``snapshot()``, ``fingerprint``).
///
/// Workers live in numbered *slots* (dense small integers, lowest free first) so that routing
/// walks arrays and bitsets instead of dictionaries keyed by strings.
public struct BalancerState: Sendable {
    /// Workers by slot; nil marks a free slot.
    public internal(set) var workersBySlot: [Worker?] = []
    public internal(set) var slotByID: [String: Int32] = [:]
    /// Routing's plain-value view of each slot (meaningless for free slots).
    var statusBySlot: [WorkerStatus] = []
    /// model → role → slots, ascending by worker id.
    var pools: [String: [WorkerRole: [Int32]]] = [:]
    var prefixIndex = PrefixIndex()
    public internal(set) var stickyBindings: [StickyKey: StickyBinding] = [:]
    public internal(set) var config = BalancerConfig()
    /// HTTP endpoint of each cluster node that announced one (base URL, e.g. http://10.0.0.1:8100).
    public internal(set) var nodeEndpoints: [UInt64: String] = [:]
    /// Commands applied so far (a batch counts once).
    public internal(set) var appliedCommands: UInt64 = 0
    /// Bumped whenever a worker joins or leaves, so routers can drop slot-keyed caches.
    public internal(set) var registryVersion: UInt64 = 0
    /// The latest command time seen: the cluster's notion of "now" for expiry.
    public internal(set) var clock: Milliseconds = 0
    /// The earliest expiry among sticky bindings, so most commands skip the expiry scan.
    var nextStickyExpiry: Milliseconds = .max

    public init() {}

    // MARK: Reading

    public var workers: [Worker] { workersBySlot.compactMap { $0 }.sorted { $0.id < $1.id } }
    public var models: [String] { pools.keys.sorted() }
    public var slotCapacity: Int { workersBySlot.count }

    public func worker(id: String) -> Worker? {
        slotByID[id].flatMap { workersBySlot[Int($0)] }
    }

    /// Slots of a model's workers of one role, ascending by worker id.
    public func pool(model: String, role: WorkerRole) -> [Int32] { pools[model]?[role] ?? [] }

    public func hasModel(_ model: String) -> Bool { pools[model] != nil }

    /// Blocks the index holds for a worker.
    public func cachedBlockCount(workerID: String) -> Int {
        slotByID[workerID].map { prefixIndex.blockCount(of: $0) } ?? 0
    }

    /// The blocks the index holds for a worker, least recently recorded first.
    public func cachedBlocks(workerID: String) -> [BlockHash] {
        slotByID[workerID].flatMap { prefixIndex.lrus[$0]?.keysOldestFirst } ?? []
    }

    public func stickyBinding(_ key: StickyKey) -> StickyBinding? { stickyBindings[key] }

    // MARK: Applying

    /// What applying a command did; a command about an unknown worker changes nothing.
    public enum Outcome: Sendable, Hashable {
        case applied
        case ignored(String)
    }

    /// Applies one command from the log. Never fails: invalid or stale commands are ignored
    /// (and say why), because every replica must take the same decision.
    @discardableResult
    public mutating func apply(_ envelope: CommandEnvelope) -> Outcome {
        appliedCommands += 1
        clock = max(clock, envelope.issuedAt)
        expireStickyBindings()
        return apply(envelope.command)
    }

    private mutating func apply(_ command: BalancerCommand) -> Outcome {
        switch command {
        case .registerWorker(let worker):
            return register(worker)
        case .deregisterWorker(let id):
            guard let slot = slotByID[id] else { return .ignored("unknown worker \(id)") }
            remove(slot: slot)
            return .applied
        case .setDraining(let id, let draining):
            return update(id) { $0.draining = draining }
        case .setHealth(let id, let verdict):
            return update(id) { $0.health = verdict }
        case .setCircuit(let id, let state):
            return update(id) { $0.circuit = state }
        case .reportLoads(let loads):
            var ignored: [String] = []
            for id in loads.keys.sorted() {
                if case .ignored = update(id, { $0.load = loads[id]! }) { ignored.append(id) }
            }
            return ignored.isEmpty ? .applied : .ignored("unknown workers \(ignored)")
        case .reportResources(let id, let resources, let location):
            return update(id) { worker in
                worker.resources = resources
                if let location { worker.location = location }
            }
        case .recordPrefixes(let records):
            let cap = config.settings.prefixBlocksPerWorker
            for record in records {
                guard let slot = slotByID[record.workerID] else { continue }
                prefixIndex.record(record.blocks, slot: slot, cap: cap)
            }
            return .applied
        case .evictPrefixes(let records):
            for record in records {
                guard let slot = slotByID[record.workerID] else { continue }
                prefixIndex.evict(record.blocks, slot: slot)
            }
            return .applied
        case .bindSticky(let bindings):
            for binding in bindings where slotByID[binding.workerID] != nil && binding.expiresAt > clock && binding.key.isBounded {
                stickyBindings[binding.key] = binding
                nextStickyExpiry = min(nextStickyExpiry, binding.expiresAt)
            }
            if stickyBindings.count > Self.maxStickyBindings { shedStickyBindings() }
            return .applied
        case .unbindSticky(let key):
            return stickyBindings.removeValue(forKey: key) == nil ? .ignored("no binding") : .applied
        // Proposers validate; an entry that does not (an old build's, a hostile one) changes
        // nothing rather than leave every replica with a configuration no router can use.
        case .setPolicy(let model, let policy):
            if let policy, (try? policy.validate()) == nil { return .ignored("invalid policy for \(model)") }
            if let policy { config.policies[model] = policy } else { config.policies[model] = nil }
            return .applied
        case .setDefaultPolicy(let policy):
            if (try? policy.validate()) == nil { return .ignored("invalid default policy") }
            config.defaultPolicy = policy
            return .applied
        case .setNodeEndpoint(let node, let url):
            nodeEndpoints[node] = url
            return .applied
        case .setSettings(let settings):
            if (try? settings.validate()) == nil { return .ignored("invalid routing settings") }
            let lowered = settings.prefixBlocksPerWorker < config.settings.prefixBlocksPerWorker
            let rescore = settings.busyCoreThreshold != config.settings.busyCoreThreshold
            config.settings = settings
            if lowered { prefixIndex.enforce(cap: settings.prefixBlocksPerWorker) }
            if rescore {
                for (slot, worker) in workersBySlot.enumerated() {
                    if let worker { statusBySlot[slot] = status(of: worker) }
                }
            }
            return .applied
        case .setTier(let name, let tier):
            if let tier, (try? tier.validate(name: name)) == nil { return .ignored("invalid tier \(name)") }
            config.tiers[name] = tier
            return .applied
        case .setModelAlias(let alias, let model):
            guard let model else { return config.aliases.removeValue(forKey: alias) == nil ? .ignored("no alias \(alias)") : .applied }
            do { try BalancerConfig.validateAlias(alias, model: model, existing: config.aliases) } catch { return .ignored(error.message) }
            config.aliases[alias] = model
            return .applied
        case .batch(let commands):
            for command in commands { _ = apply(command) }
            return .applied
        }
    }

    private mutating func register(_ worker: Worker) -> Outcome {
        if let slot = slotByID[worker.id], let existing = workersBySlot[Int(slot)] {
            guard existing.model == worker.model && existing.role == worker.role else {
                // A worker that now serves something else starts afresh.
                remove(slot: slot)
                return register(worker)
            }
            var updated = worker
            updated.health = existing.health
            updated.circuit = existing.circuit
            updated.load = existing.load
            updated.draining = existing.draining || worker.draining
            workersBySlot[Int(slot)] = updated
            statusBySlot[Int(slot)] = status(of: updated)
            return .applied
        }
        let slot = workersBySlot.firstIndex { $0 == nil } ?? workersBySlot.count
        if slot == workersBySlot.count {
            workersBySlot.append(nil)
            statusBySlot.append(status(of: worker))
        }
        workersBySlot[slot] = worker
        statusBySlot[slot] = status(of: worker)
        slotByID[worker.id] = Int32(slot)
        var members = pools[worker.model]?[worker.role] ?? []
        let position = members.firstIndex { workersBySlot[Int($0)]!.id > worker.id } ?? members.count
        members.insert(Int32(slot), at: position)
        pools[worker.model, default: [:]][worker.role] = members
        registryVersion += 1
        return .applied
    }

    private mutating func remove(slot: Int32) {
        guard let worker = workersBySlot[Int(slot)] else { return }
        workersBySlot[Int(slot)] = nil
        slotByID[worker.id] = nil
        prefixIndex.removeWorker(slot)
        var roles = pools[worker.model] ?? [:]
        var members = roles[worker.role] ?? []
        members.removeAll { $0 == slot }
        roles[worker.role] = members.isEmpty ? nil : members
        pools[worker.model] = roles.isEmpty ? nil : roles
        for (key, binding) in stickyBindings where binding.workerID == worker.id {
            stickyBindings[key] = nil
        }
        while let last = workersBySlot.last, last == nil {
            workersBySlot.removeLast()
            statusBySlot.removeLast()
        }
        registryVersion += 1
    }

    private mutating func update(_ id: String, _ change: (inout Worker) -> Void) -> Outcome {
        guard let slot = slotByID[id], var worker = workersBySlot[Int(slot)] else {
            return .ignored("unknown worker \(id)")
        }
        workersBySlot[Int(slot)] = nil
        change(&worker)
        statusBySlot[Int(slot)] = status(of: worker)
        workersBySlot[Int(slot)] = worker
        return .applied
    }

    func status(of worker: Worker) -> WorkerStatus {
        worker.status(busyCore: config.settings.busyCoreThreshold)
    }

    /// At most this many sticky bindings are kept (at 256-byte keys, about 100 MB): unique
    /// session keys cannot grow the replicated state, and so every snapshot, without bound.
    public static let maxStickyBindings = 250_000

    /// Past the cap, drops the tenth of the bindings that expire soonest (ties by key), the
    /// same ones on every replica; in bulk, so a flood of new sessions sorts once per 25,000.
    private mutating func shedStickyBindings() {
        let keep = Self.maxStickyBindings - Self.maxStickyBindings / 10
        let ordered = stickyBindings.values.sorted { ($0.expiresAt, $0.key) < ($1.expiresAt, $1.key) }
        for binding in ordered.prefix(stickyBindings.count - keep) { stickyBindings[binding.key] = nil }
        nextStickyExpiry = stickyBindings.values.lazy.map(\.expiresAt).min() ?? .max
    }

    private mutating func expireStickyBindings() {
        guard nextStickyExpiry <= clock else { return }
        stickyBindings = stickyBindings.filter { $0.value.expiresAt > clock }
        nextStickyExpiry = stickyBindings.values.lazy.map(\.expiresAt).min() ?? .max
    }

    // MARK: Local views for the router

    var prefixHolders: BlockTable<SlotSet> { prefixIndex.holders }
}
