public import WireCoding

/// A session's binding to a worker, kept per (session, model, tier).
public struct StickyKey: Sendable, Hashable, Comparable {
    public var session: String
    public var model: String
    /// The resource tier, or "" for none.
    public var tier: String

    public init(session: String, model: String, tier: String = "") {
        self.session = session
        self.model = model
        self.tier = tier
    }

    /// Every part within ``RoutingRequest/maxNameBytes``, as routing requests are; a binding
    /// with a longer key (from the log, not from this build's router) is not kept.
    public var isBounded: Bool {
        let limit = RoutingRequest.maxNameBytes
        return session.utf8.count <= limit && model.utf8.count <= limit && tier.utf8.count <= limit
    }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.session, lhs.model, lhs.tier) < (rhs.session, rhs.model, rhs.tier)
    }
}

public struct StickyBinding: Sendable, Hashable {
    public var key: StickyKey
    public var workerID: String
    public var expiresAt: Milliseconds

    public init(key: StickyKey, workerID: String, expiresAt: Milliseconds) {
        self.key = key
        self.workerID = workerID
        self.expiresAt = expiresAt
    }
}

/// Blocks one worker holds (or evicted), most recent last.
public struct PrefixRecord: Sendable, Hashable {
    public var workerID: String
    public var blocks: [BlockHash]

    public init(workerID: String, blocks: [BlockHash]) {
        self.workerID = workerID
        self.blocks = blocks
    }
}

/// A change to the replicated balancer state. Every node applies the same commands in the same
/// order (the Raft log's) and reaches the same state.
public enum BalancerCommand: Sendable, Hashable {
    /// Adds a worker, or updates one with the same id (its health, circuit, load and cached
    /// blocks are kept when model and role are unchanged).
    case registerWorker(Worker)
    case deregisterWorker(id: String)
    case setDraining(id: String, draining: Bool)
    case setHealth(id: String, verdict: HealthVerdict)
    case setCircuit(id: String, state: CircuitState)
    case reportLoads([String: EngineLoad])
    case reportResources(id: String, resources: WorkerResources, location: GeoLocation?)
    /// Blocks that workers now hold: from routing history or from the workers' own reports.
    case recordPrefixes([PrefixRecord])
    /// Blocks that workers reported evicted.
    case evictPrefixes([PrefixRecord])
    case bindSticky([StickyBinding])
    case unbindSticky(StickyKey)
    case setPolicy(model: String, policy: ModelPolicy?)
    case setDefaultPolicy(ModelPolicy)
    case setSettings(RoutingSettings)
    case setTier(name: String, tier: ResourceTier?)
    /// Another name for a model (nil removes it): requests naming `alias` route to `model`.
    /// rtp-llm frontends send `engine_service`; OpenAI clients send whatever they were given.
    case setModelAlias(alias: String, model: String?)
    /// Where a cluster node serves its HTTP API (nil removes it), so followers can reach the
    /// leader's and clients can be told where the master is.
    case setNodeEndpoint(node: UInt64, url: String?)
    /// Several commands in one log entry (the coalesced flush of status changes).
    case batch([BalancerCommand])
}

/// A command as it travels through the log: the encoding version and the proposer's clock.
public struct CommandEnvelope: Sendable, Hashable {
    /// The wire version this build writes; it reads this one and older.
    public static let currentVersion: UInt8 = 1

    public var issuedAt: Milliseconds
    public var command: BalancerCommand

    public init(issuedAt: Milliseconds, command: BalancerCommand) {
        self.issuedAt = issuedAt
        self.command = command
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.currentVersion)
        writer.write(issuedAt)
        command.encode(to: &writer)
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        let version = try reader.readByte()
        guard version >= 1 && version <= Self.currentVersion else {
            throw DecodingError("command version \(version) is not supported (this build reads 1...\(Self.currentVersion))")
        }
        issuedAt = try reader.readUInt64()
        command = try BalancerCommand(from: &reader, depth: 0)
        try reader.expectEnd()
    }
}

// MARK: - Encoding

extension BalancerCommand {
    private enum Tag: UInt8 {
        case registerWorker = 1, deregisterWorker, setDraining, setHealth, setCircuit, reportLoads
        case reportResources, recordPrefixes, evictPrefixes, bindSticky, unbindSticky, setPolicy
        /// `setSettingsV1` is the layout before `cache_affinity`: still read, no longer written. An
        /// older node cannot decode `setSettings` and skips it (change settings only once every
        /// node runs this build).
        case setDefaultPolicy, setSettingsV1, setTier, batch, setNodeEndpoint, setSettings, setModelAlias
    }

    /// Batches nest at most this deep, so hostile input cannot exhaust the stack.
    static let maxBatchDepth = 4

    func encode(to writer: inout ByteWriter) {
        switch self {
        case .registerWorker(let worker):
            writer.write(Tag.registerWorker.rawValue)
            worker.encode(to: &writer)
        case .deregisterWorker(let id):
            writer.write(Tag.deregisterWorker.rawValue)
            writer.write(id)
        case .setDraining(let id, let draining):
            writer.write(Tag.setDraining.rawValue)
            writer.write(id)
            writer.write(draining)
        case .setHealth(let id, let verdict):
            writer.write(Tag.setHealth.rawValue)
            writer.write(id)
            writer.write(verdict.rawValue)
        case .setCircuit(let id, let state):
            writer.write(Tag.setCircuit.rawValue)
            writer.write(id)
            writer.write(state.rawValue)
        case .reportLoads(let loads):
            writer.write(Tag.reportLoads.rawValue)
            writer.write(loads.sorted { $0.key < $1.key }) { writer, entry in
                writer.write(entry.key)
                entry.value.encode(to: &writer)
            }
        case .reportResources(let id, let resources, let location):
            writer.write(Tag.reportResources.rawValue)
            writer.write(id)
            resources.encode(to: &writer)
            writer.write(optional: location) { $1.encode(to: &$0) }
        case .recordPrefixes(let records):
            writer.write(Tag.recordPrefixes.rawValue)
            writer.write(records) { $1.encode(to: &$0) }
        case .evictPrefixes(let records):
            writer.write(Tag.evictPrefixes.rawValue)
            writer.write(records) { $1.encode(to: &$0) }
        case .bindSticky(let bindings):
            writer.write(Tag.bindSticky.rawValue)
            writer.write(bindings) { $1.encode(to: &$0) }
        case .unbindSticky(let key):
            writer.write(Tag.unbindSticky.rawValue)
            key.encode(to: &writer)
        case .setPolicy(let model, let policy):
            writer.write(Tag.setPolicy.rawValue)
            writer.write(model)
            writer.write(optional: policy) { $1.encode(to: &$0) }
        case .setDefaultPolicy(let policy):
            writer.write(Tag.setDefaultPolicy.rawValue)
            policy.encode(to: &writer)
        case .setSettings(let settings):
            writer.write(Tag.setSettings.rawValue)
            settings.encode(to: &writer)
        case .setTier(let name, let tier):
            writer.write(Tag.setTier.rawValue)
            writer.write(name)
            writer.write(optional: tier) { $1.encode(to: &$0) }
        case .setModelAlias(let alias, let model):
            writer.write(Tag.setModelAlias.rawValue)
            writer.write(alias)
            writer.write(optional: model) { $0.write($1) }
        case .setNodeEndpoint(let node, let url):
            writer.write(Tag.setNodeEndpoint.rawValue)
            writer.write(node)
            writer.write(optional: url) { $0.write($1) }
        case .batch(let commands):
            writer.write(Tag.batch.rawValue)
            writer.write(commands) { $1.encode(to: &$0) }
        }
    }

    init(from reader: inout ByteReader, depth: Int) throws(DecodingError) {
        let raw = try reader.readByte()
        guard let tag = Tag(rawValue: raw) else { throw DecodingError("unknown command tag \(raw)") }
        switch tag {
        case .registerWorker: self = .registerWorker(try Worker(from: &reader))
        case .deregisterWorker: self = .deregisterWorker(id: try reader.readString())
        case .setDraining: self = .setDraining(id: try reader.readString(), draining: try reader.readBool())
        case .setHealth:
            let id = try reader.readString()
            self = .setHealth(id: id, verdict: try decodeEnum(HealthVerdict.self, &reader, "health verdict"))
        case .setCircuit:
            let id = try reader.readString()
            self = .setCircuit(id: id, state: try decodeEnum(CircuitState.self, &reader, "circuit state"))
        case .reportLoads:
            let entries = try reader.readArray(minimumBytes: 9) { reader throws(DecodingError) in
                (try reader.readString(), try EngineLoad(from: &reader))
            }
            var loads: [String: EngineLoad] = [:]
            for (id, load) in entries { loads[id] = load }
            self = .reportLoads(loads)
        case .reportResources:
            let id = try reader.readString()
            let resources = try WorkerResources(from: &reader)
            let location = try reader.readOptional { reader throws(DecodingError) in try GeoLocation(from: &reader) }
            self = .reportResources(id: id, resources: resources, location: location)
        case .recordPrefixes:
            self = .recordPrefixes(try reader.readArray(minimumBytes: 2) { reader throws(DecodingError) in try PrefixRecord(from: &reader) })
        case .evictPrefixes:
            self = .evictPrefixes(try reader.readArray(minimumBytes: 2) { reader throws(DecodingError) in try PrefixRecord(from: &reader) })
        case .bindSticky:
            self = .bindSticky(try reader.readArray(minimumBytes: 5) { reader throws(DecodingError) in try StickyBinding(from: &reader) })
        case .unbindSticky: self = .unbindSticky(try StickyKey(from: &reader))
        case .setPolicy:
            let model = try reader.readString()
            self = .setPolicy(model: model, policy: try reader.readOptional { reader throws(DecodingError) in try ModelPolicy(from: &reader) })
        case .setDefaultPolicy: self = .setDefaultPolicy(try ModelPolicy(from: &reader))
        case .setSettingsV1: self = .setSettings(try RoutingSettings(from: &reader, layout: .v1))
        case .setSettings: self = .setSettings(try RoutingSettings(from: &reader, layout: .current))
        case .setTier:
            let name = try reader.readString()
            self = .setTier(name: name, tier: try reader.readOptional { reader throws(DecodingError) in try ResourceTier(from: &reader) })
        case .setModelAlias:
            let alias = try reader.readString()
            self = .setModelAlias(alias: alias, model: try reader.readOptional { reader throws(DecodingError) in try reader.readString() })
        case .setNodeEndpoint:
            let node = try reader.readUInt64()
            self = .setNodeEndpoint(node: node, url: try reader.readOptional { reader throws(DecodingError) in try reader.readString() })
        case .batch:
            guard depth < Self.maxBatchDepth else { throw DecodingError("batches nested deeper than \(Self.maxBatchDepth)") }
            self = .batch(try reader.readArray { reader throws(DecodingError) in try BalancerCommand(from: &reader, depth: depth + 1) })
        }
    }
}

func decodeEnum<Value: RawRepresentable<UInt8>>(
    _ type: Value.Type, _ reader: inout ByteReader, _ what: String
) throws(DecodingError) -> Value {
    let raw = try reader.readByte()
    guard let value = Value(rawValue: raw) else { throw DecodingError("unknown \(what) \(raw)") }
    return value
}

extension Worker {
    func encode(to writer: inout ByteWriter) {
        writer.write(id)
        writer.write(model)
        writer.write(role.rawValue)
        writer.write(address)
        writer.write(group)
        writer.write(labels.sorted { $0.key < $1.key }) { writer, label in
            writer.write(label.key)
            writer.write(label.value)
        }
        capacity.encode(to: &writer)
        resources.encode(to: &writer)
        writer.write(optional: location) { $1.encode(to: &$0) }
        writer.write(draining)
        writer.write(health.rawValue)
        writer.write(circuit.rawValue)
        load.encode(to: &writer)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        let id = try reader.readString()
        let model = try reader.readString()
        let role = try decodeEnum(WorkerRole.self, &reader, "worker role")
        let address = try reader.readString()
        let group = try reader.readString()
        let pairs = try reader.readArray(minimumBytes: 2) { reader throws(DecodingError) in
            (try reader.readString(), try reader.readString())
        }
        var labels: [String: String] = [:]
        for (key, value) in pairs { labels[key] = value }
        self.init(
            id: id, model: model, role: role, address: address, group: group, labels: labels,
            capacity: try WorkerCapacity(from: &reader), resources: try WorkerResources(from: &reader),
            location: try reader.readOptional { reader throws(DecodingError) in try GeoLocation(from: &reader) },
            draining: try reader.readBool(),
            health: try decodeEnum(HealthVerdict.self, &reader, "health verdict"),
            circuit: try decodeEnum(CircuitState.self, &reader, "circuit state"),
            load: try EngineLoad(from: &reader)
        )
    }
}

extension WorkerCapacity {
    func encode(to writer: inout ByteWriter) {
        writer.write(kvBlocks)
        writer.write(blockSize)
        writer.write(maxBatch)
        writer.write(maxRequests)
        writer.write(prefillTokensPerSecond)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(
            kvBlocks: try reader.readInt(), blockSize: try reader.readInt(), maxBatch: try reader.readInt(),
            maxRequests: try reader.readInt(), prefillTokensPerSecond: try reader.readDouble()
        )
    }
}

extension WorkerResources {
    func encode(to writer: inout ByteWriter) {
        writer.write(coreLoads) { $0.write($1) }
        writer.write(memoryTotalBytes)
        writer.write(memoryUsedBytes)
        writer.write(diskTotalBytes)
        writer.write(diskUsedBytes)
        writer.write(gpus) { writer, gpu in
            writer.write(gpu.utilization)
            writer.write(gpu.memoryTotalBytes)
            writer.write(gpu.memoryUsedBytes)
        }
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(
            coreLoads: try reader.readArray(minimumBytes: 8) { reader throws(DecodingError) in try reader.readDouble() },
            memoryTotalBytes: try reader.readUInt64(), memoryUsedBytes: try reader.readUInt64(),
            diskTotalBytes: try reader.readUInt64(), diskUsedBytes: try reader.readUInt64(),
            gpus: try reader.readArray(minimumBytes: 10) { reader throws(DecodingError) in
                GPUStatus(
                    utilization: try reader.readDouble(), memoryTotalBytes: try reader.readUInt64(),
                    memoryUsedBytes: try reader.readUInt64()
                )
            }
        )
    }
}

extension GeoLocation {
    func encode(to writer: inout ByteWriter) {
        writer.write(latitude)
        writer.write(longitude)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(latitude: try reader.readDouble(), longitude: try reader.readDouble())
    }
}

extension EngineLoad {
    func encode(to writer: inout ByteWriter) {
        writer.write(runningRequests)
        writer.write(waitingRequests)
        writer.write(queuedPrefillTokens)
        writer.write(kvBlocksUsed)
        writer.write(kvBlocksTotal)
        writer.write(stepLatencyMilliseconds)
        writer.write(reportedAt)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(
            runningRequests: try reader.readInt(), waitingRequests: try reader.readInt(),
            queuedPrefillTokens: try reader.readInt(), kvBlocksUsed: try reader.readInt(),
            kvBlocksTotal: try reader.readInt(), stepLatencyMilliseconds: try reader.readDouble(),
            reportedAt: try reader.readUInt64()
        )
    }
}

extension PrefixRecord {
    func encode(to writer: inout ByteWriter) {
        writer.write(workerID)
        writer.write(blocks)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(workerID: try reader.readString(), blocks: try reader.readUInt64Array())
    }
}

extension StickyKey {
    func encode(to writer: inout ByteWriter) {
        writer.write(session)
        writer.write(model)
        writer.write(tier)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(session: try reader.readString(), model: try reader.readString(), tier: try reader.readString())
    }
}

extension StickyBinding {
    func encode(to writer: inout ByteWriter) {
        key.encode(to: &writer)
        writer.write(workerID)
        writer.write(expiresAt)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(key: try StickyKey(from: &reader), workerID: try reader.readString(), expiresAt: try reader.readUInt64())
    }
}

extension ModelPolicy {
    func encode(to writer: inout ByteWriter) {
        writer.write(strategies.sorted { $0.key < $1.key }) { writer, entry in
            writer.write(entry.key.rawValue)
            writer.write(entry.value.rawValue)
        }
        writer.write(split) { writer, arm in
            writer.write(arm.name)
            writer.write(arm.strategy.rawValue)
            writer.write(arm.weight)
        }
        writer.write(stickyFallback.rawValue)
        writer.write(sameGroup)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        let pairs = try reader.readArray(minimumBytes: 2) { reader throws(DecodingError) in
            (try decodeEnum(WorkerRole.self, &reader, "worker role"), try decodeEnum(StrategyKind.self, &reader, "strategy"))
        }
        var strategies: [WorkerRole: StrategyKind] = [:]
        for (role, strategy) in pairs { strategies[role] = strategy }
        let split = try reader.readArray(minimumBytes: 3) { reader throws(DecodingError) in
            StrategyArm(
                name: try reader.readString(), strategy: try decodeEnum(StrategyKind.self, &reader, "strategy"),
                weight: try reader.readInt()
            )
        }
        self.init(
            strategies: strategies, split: split,
            stickyFallback: try decodeEnum(StrategyKind.self, &reader, "strategy"), sameGroup: try reader.readBool()
        )
    }
}

extension ResourceTier {
    func encode(to writer: inout ByteWriter) {
        writer.write(vCPUs)
        writer.write(memoryBytes)
        writer.write(diskBytes)
        writer.write(gpus)
        writer.write(gpuMemoryBytes)
    }

    init(from reader: inout ByteReader) throws(DecodingError) {
        self.init(
            vCPUs: try reader.readInt(), memoryBytes: try reader.readUInt64(), diskBytes: try reader.readUInt64(),
            gpus: try reader.readInt(), gpuMemoryBytes: try reader.readUInt64()
        )
    }
}

extension RoutingSettings {
    /// Encodings of the settings: `v1` ends before `cacheAffinity`, which then keeps its default.
    enum Layout {
        case v1, current
    }

    func encode(to writer: inout ByteWriter, layout: Layout = .current) {
        writer.write(balanceAbsoluteThreshold)
        writer.write(balanceRelativeThreshold)
        writer.write(cacheHitThreshold)
        writer.write(kvHighWatermark)
        writer.write(kvLowWatermark)
        writer.write(boundedLoadFactor)
        writer.write(virtualNodesPerWorker)
        writer.write(nearBestFraction)
        writer.write(nearBestMilliseconds)
        writer.write(decodeMillisecondsPerRunningRequest)
        writer.write(stickyOverloadFactor)
        writer.write(stickyOverloadSlack)
        writer.write(stickyTTLMilliseconds)
        writer.write(reservationTTLMilliseconds)
        writer.write(prefixBlocksPerWorker)
        writer.write(busyCoreThreshold)
        writer.write(cpuWeight)
        writer.write(memoryWeight)
        writer.write(gpuWeight)
        writer.write(distanceWeightPer1000Kilometres)
        if layout == .current { writer.write(cacheAffinity) }
    }

    init(from reader: inout ByteReader, layout: Layout) throws(DecodingError) {
        self.init()
        balanceAbsoluteThreshold = try reader.readInt()
        balanceRelativeThreshold = try reader.readDouble()
        cacheHitThreshold = try reader.readDouble()
        kvHighWatermark = try reader.readDouble()
        kvLowWatermark = try reader.readDouble()
        boundedLoadFactor = try reader.readDouble()
        virtualNodesPerWorker = try reader.readInt()
        nearBestFraction = try reader.readDouble()
        nearBestMilliseconds = try reader.readDouble()
        decodeMillisecondsPerRunningRequest = try reader.readDouble()
        stickyOverloadFactor = try reader.readDouble()
        stickyOverloadSlack = try reader.readInt()
        stickyTTLMilliseconds = try reader.readUInt64()
        reservationTTLMilliseconds = try reader.readUInt64()
        prefixBlocksPerWorker = try reader.readInt()
        busyCoreThreshold = try reader.readDouble()
        cpuWeight = try reader.readDouble()
        memoryWeight = try reader.readDouble()
        gpuWeight = try reader.readDouble()
        distanceWeightPer1000Kilometres = try reader.readDouble()
        if layout == .current { cacheAffinity = try reader.readDouble() }
    }
}
