public import WireCoding

extension BalancerState {
    /// The snapshot format this build writes and reads.
    /// Each version appends to the one before: version 2 the nodes' HTTP endpoints, version 3
    /// the setting `cache_affinity`, version 4 the model aliases. Versions 1 to 3 are still read.
    public static let snapshotVersion: UInt8 = 4

    /// The whole state in a canonical encoding: two replicas in the same state produce the same
    /// bytes, and restoring them gives a state that snapshots to the same bytes again.
    public func snapshot() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.snapshotVersion)
        writer.write(appliedCommands)
        writer.write(registryVersion)
        writer.write(clock)
        writer.write(workersBySlot) { writer, worker in
            writer.write(optional: worker) { $1.encode(to: &$0) }
        }
        writer.write(prefixIndex.lrus.keys.sorted()) { writer, slot in
            writer.write(UInt64(slot))
            writer.write(prefixIndex.lrus[slot]!.keysOldestFirst)
        }
        writer.write(stickyBindings.keys.sorted()) { writer, key in stickyBindings[key]!.encode(to: &writer) }
        config.settings.encode(to: &writer, layout: .v1)
        config.defaultPolicy.encode(to: &writer)
        writer.write(config.policies.keys.sorted()) { writer, model in
            writer.write(model)
            config.policies[model]!.encode(to: &writer)
        }
        writer.write(config.tiers.keys.sorted()) { writer, name in
            writer.write(name)
            config.tiers[name]!.encode(to: &writer)
        }
        writer.write(nodeEndpoints.keys.sorted()) { writer, node in
            writer.write(node)
            writer.write(nodeEndpoints[node]!)
        }
        writer.write(config.settings.cacheAffinity)
        writer.write(config.aliases.keys.sorted()) { writer, alias in
            writer.write(alias)
            writer.write(config.aliases[alias]!)
        }
        return writer.bytes
    }

    /// A stable 64-bit fingerprint of the state (of its snapshot bytes).
    public var fingerprint: UInt64 {
        var hasher = StableHasher()
        hasher.combine(bytes: snapshot())
        return hasher.finalized
    }

    /// Restores a state from ``snapshot()`` bytes; malformed or foreign bytes throw.
    public init(snapshot bytes: [UInt8]) throws(DecodingError) {
        self.init()
        var reader = ByteReader(bytes)
        let version = try reader.readByte()
        guard version >= 1 && version <= Self.snapshotVersion else {
            throw DecodingError("snapshot version \(version) is not supported (this build reads 1...\(Self.snapshotVersion))")
        }
        appliedCommands = try reader.readUInt64()
        registryVersion = try reader.readUInt64()
        clock = try reader.readUInt64()
        let slots = try reader.readArray { reader throws(DecodingError) in
            try reader.readOptional { reader throws(DecodingError) in try Worker(from: &reader) }
        }
        workersBySlot = slots
        for (slot, worker) in slots.enumerated() {
            guard let worker else { continue }
            guard slotByID.updateValue(Int32(slot), forKey: worker.id) == nil else {
                throw DecodingError("worker \(worker.id) appears twice")
            }
            pools[worker.model, default: [:]][worker.role, default: []].append(Int32(slot))
        }
        for (model, roles) in pools {
            for (role, members) in roles {
                pools[model]![role] = members.sorted { workersBySlot[Int($0)]!.id < workersBySlot[Int($1)]!.id }
            }
        }
        let lruCount = try reader.readCount(minimumBytes: 2)
        for _ in 0..<lruCount {
            let slot = try reader.readUInt64()
            guard slot < UInt64(workersBySlot.count), workersBySlot[Int(slot)] != nil else {
                throw DecodingError("prefix index names an empty slot \(slot)")
            }
            prefixIndex.record(try reader.readUInt64Array(), slot: Int32(slot), cap: .max)
        }
        let bindings = try reader.readArray(minimumBytes: 5) { reader throws(DecodingError) in try StickyBinding(from: &reader) }
        for binding in bindings {
            stickyBindings[binding.key] = binding
            nextStickyExpiry = min(nextStickyExpiry, binding.expiresAt)
        }
        config.settings = try RoutingSettings(from: &reader, layout: .v1)
        let placeholder = Worker(id: "", model: "", role: .vit, address: "")
        statusBySlot = workersBySlot.map { status(of: $0 ?? placeholder) }
        config.defaultPolicy = try ModelPolicy(from: &reader)
        for (model, policy) in try reader.readArray(minimumBytes: 2, { reader throws(DecodingError) in
            (try reader.readString(), try ModelPolicy(from: &reader))
        }) {
            config.policies[model] = policy
        }
        for (name, tier) in try reader.readArray(minimumBytes: 2, { reader throws(DecodingError) in
            (try reader.readString(), try ResourceTier(from: &reader))
        }) {
            config.tiers[name] = tier
        }
        if version >= 2 {
            for (node, url) in try reader.readArray(minimumBytes: 2, { reader throws(DecodingError) in
                (try reader.readUInt64(), try reader.readString())
            }) {
                nodeEndpoints[node] = url
            }
        }
        if version >= 3 { config.settings.cacheAffinity = try reader.readDouble() }
        if version >= 4 {
            for (alias, model) in try reader.readArray(minimumBytes: 2, { reader throws(DecodingError) in
                (try reader.readString(), try reader.readString())
            }) where (try? BalancerConfig.validateAlias(alias, model: model, existing: config.aliases)) != nil {
                config.aliases[alias] = model
            }
        }
        try reader.expectEnd()
    }
}
