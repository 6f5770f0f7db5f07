import Balancer
import Cluster
import Foundation
public import Hummingbird
import NIOCore
import Serving
public import FulcrumAPI

/// Routing configuration at run time: strategies per model and role, A/B splits, resource
/// tiers, model aliases and the strategies' settings. Changes go through the log (leader only; 421 elsewhere).
struct ConfigAPI: Sendable {
    let proposer: CommandProposer

    var node: ClusterNode<BalancerMachine> { proposer.node }

    func addRoutes(to router: RouterGroup<FulcrumRequestContext>) {
        let config = router.group("admin/config")
        config.get { request, _ -> BalancerConfiguration in
            if request.uri.queryParameters.get("consistent") == "true" {
                do { try await node.readBarrier() } catch let error as ClusterError { throw APIError(error) }
            }
            let current = await node.withMachine { machine, _ in machine.state.config }
            return BalancerConfiguration(
                defaultPolicy: PolicyConfig(current.defaultPolicy),
                policies: current.policies.mapValues(PolicyConfig.init),
                tiers: current.tiers.mapValues(TierConfig.init),
                settings: RoutingSettingsConfig(current.settings),
                aliases: current.aliases
            )
        }
        config.put("aliases/:alias") { request, context -> CommandResult in
            var request = request
            let alias = try parameter("alias", context)
            let model = try await request.decodeJSON(ModelAlias.self, context: context).model
            let existing = await node.withMachine { machine, _ in machine.state.config.aliases }
            do throws(BalancerError) { try BalancerConfig.validateAlias(alias, model: model, existing: existing) } catch { throw APIError(error) }
            return CommandResult(result: try await propose(.setModelAlias(alias: alias, model: model)))
        }
        config.delete("aliases/:alias") { _, context -> CommandResult in
            CommandResult(result: try await propose(.setModelAlias(alias: try parameter("alias", context), model: nil)))
        }
        config.put("default_policy") { request, context -> CommandResult in
            var request = request
            let policy = try await request.decodeJSON(PolicyConfig.self, context: context).policy()
            return CommandResult(result: try await propose(.setDefaultPolicy(policy)))
        }
        config.put("policies/:model") { request, context -> CommandResult in
            var request = request
            let model = try parameter("model", context)
            let policy = try await request.decodeJSON(PolicyConfig.self, context: context).policy()
            return CommandResult(result: try await propose(.setPolicy(model: model, policy: policy)))
        }
        config.delete("policies/:model") { _, context -> CommandResult in
            CommandResult(result: try await propose(.setPolicy(model: try parameter("model", context), policy: nil)))
        }
        config.put("tiers/:name") { request, context -> CommandResult in
            var request = request
            let name = try parameter("name", context)
            let tier = try await request.decodeJSON(TierConfig.self, context: context).tier(name: name)
            return CommandResult(result: try await propose(.setTier(name: name, tier: tier)))
        }
        config.delete("tiers/:name") { _, context -> CommandResult in
            CommandResult(result: try await propose(.setTier(name: try parameter("name", context), tier: nil)))
        }
        config.patch("settings") { request, context -> CommandResult in
            var request = request
            let body = try await request.collectBody(upTo: context.maxUploadSize)
            let data = Data(body.readableBytesView)
            if let names = try? JSONDecoder().decode(KeyNames.self, from: data),
               let unknown = names.keys.sorted().first(where: { !RoutingSettingsConfig.keys.contains($0) }) {
                throw APIError.badRequest(field: unknown, "unknown setting; known: \(RoutingSettingsConfig.keys.sorted().joined(separator: ", "))")
            }
            let patch = try decodeJSONBody(RoutingSettingsConfig.self, data, decoder: context.requestDecoder)
            let current = await node.withMachine { machine, _ in machine.state.config.settings }
            return CommandResult(result: try await propose(.setSettings(try patch.applied(to: current))))
        }
        router.post("admin/workers/:id/drain") { _, context -> CommandResult in
            CommandResult(result: try await propose(.setDraining(id: try parameter("id", context), draining: true)))
        }
        router.post("admin/workers/:id/undrain") { _, context -> CommandResult in
            CommandResult(result: try await propose(.setDraining(id: try parameter("id", context), draining: false)))
        }
    }

    private func parameter(_ name: String, _ context: FulcrumRequestContext) throws -> String {
        guard let value = context.parameters.get(name), !value.isEmpty, value.utf8.count <= 256 else {
            throw APIError.badRequest(field: name, "must be 1 to 256 bytes")
        }
        return value
    }

    private func propose(_ command: BalancerCommand) async throws -> String {
        do {
            return try await proposer.propose(command).description
        } catch let error as ClusterError {
            throw APIError(error)
        }
    }
}

/// The keys of a JSON object, as sent (no key conversion).
private struct KeyNames: Decodable {
    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    var keys: [String]

    init(from decoder: any Decoder) throws {
        keys = try decoder.container(keyedBy: Key.self).allKeys.map(\.stringValue)
    }
}

extension PolicyConfig {
    init(_ policy: ModelPolicy) {
        self.init()
        strategies = Dictionary(uniqueKeysWithValues: policy.strategies.map { ($0.key.name, $0.value.name) })
        split = policy.split.map { Arm(name: $0.name, strategy: $0.strategy.name, weight: $0.weight) }
        stickyFallback = policy.stickyFallback.name
        sameGroup = policy.sameGroup
    }

    func policy() throws -> ModelPolicy {
        func strategy(_ name: String, _ field: String) throws -> StrategyKind {
            guard let kind = StrategyKind(name: name) else {
                throw APIError.badRequest(field: field, "unknown strategy '\(name)'; one of \(StrategyKind.allCases.map(\.name).joined(separator: ", "))")
            }
            return kind
        }
        var strategiesByRole: [WorkerRole: StrategyKind] = [:]
        for (roleName, name) in strategies ?? [:] {
            guard let role = WorkerRole(name: roleName) else {
                throw APIError.badRequest(field: "strategies.\(roleName)", "unknown role; one of VIT, PREFILL, DECODE, PDFUSION")
            }
            strategiesByRole[role] = try strategy(name, "strategies.\(roleName)")
        }
        let arms = try (split ?? []).enumerated().map { index, arm in
            StrategyArm(name: arm.name, strategy: try strategy(arm.strategy, "split[\(index)].strategy"), weight: arm.weight)
        }
        let policy = ModelPolicy(
            strategies: strategiesByRole, split: arms,
            stickyFallback: try stickyFallback.map { try strategy($0, "sticky_fallback") } ?? .cacheAware,
            sameGroup: sameGroup ?? false
        )
        do { try policy.validate() } catch { throw APIError(error) }
        return policy
    }
}

extension TierConfig {
    init(_ tier: ResourceTier) {
        self.init()
        vcpus = tier.vCPUs
        memoryBytes = Int64(clamping: tier.memoryBytes)
        diskBytes = Int64(clamping: tier.diskBytes)
        gpus = tier.gpus
        gpuMemoryBytes = Int64(clamping: tier.gpuMemoryBytes)
    }

    func tier(name: String) throws -> ResourceTier {
        func bytes(_ value: Int64?, _ field: String) throws -> UInt64 {
            guard let value else { return 0 }
            guard value >= 0 else { throw APIError.badRequest(field: "tiers.\(name).\(field)", "must not be negative") }
            return UInt64(value)
        }
        let tier = ResourceTier(
            vCPUs: vcpus ?? 0, memoryBytes: try bytes(memoryBytes, "memory_bytes"), diskBytes: try bytes(diskBytes, "disk_bytes"),
            gpus: gpus ?? 0, gpuMemoryBytes: try bytes(gpuMemoryBytes, "gpu_memory_bytes")
        )
        do { try tier.validate(name: name) } catch { throw APIError(error) }
        return tier
    }
}

extension RoutingSettingsConfig {
    init(_ settings: RoutingSettings) {
        self.init()
        balanceAbsThreshold = settings.balanceAbsoluteThreshold
        balanceRelThreshold = settings.balanceRelativeThreshold
        cacheHitThreshold = settings.cacheHitThreshold
        kvHighWatermark = settings.kvHighWatermark
        kvLowWatermark = settings.kvLowWatermark
        boundedLoadFactor = settings.boundedLoadFactor
        virtualNodesPerWorker = settings.virtualNodesPerWorker
        cacheAffinity = settings.cacheAffinity
        nearBestFraction = settings.nearBestFraction
        nearBestMs = settings.nearBestMilliseconds
        decodeMsPerRunningRequest = settings.decodeMillisecondsPerRunningRequest
        stickyOverloadFactor = settings.stickyOverloadFactor
        stickyOverloadSlack = settings.stickyOverloadSlack
        stickyTtlMs = Int64(clamping: settings.stickyTTLMilliseconds)
        reservationTtlMs = Int64(clamping: settings.reservationTTLMilliseconds)
        prefixBlocksPerWorker = settings.prefixBlocksPerWorker
        busyCoreThreshold = settings.busyCoreThreshold
        cpuWeight = settings.cpuWeight
        memoryWeight = settings.memoryWeight
        gpuWeight = settings.gpuWeight
        distanceWeight = settings.distanceWeightPer1000Kilometres
    }

    func applied(to base: RoutingSettings) throws -> RoutingSettings {
        var settings = base
        if let balanceAbsThreshold { settings.balanceAbsoluteThreshold = balanceAbsThreshold }
        if let balanceRelThreshold { settings.balanceRelativeThreshold = balanceRelThreshold }
        if let cacheHitThreshold { settings.cacheHitThreshold = cacheHitThreshold }
        if let kvHighWatermark { settings.kvHighWatermark = kvHighWatermark }
        if let kvLowWatermark { settings.kvLowWatermark = kvLowWatermark }
        if let boundedLoadFactor { settings.boundedLoadFactor = boundedLoadFactor }
        if let virtualNodesPerWorker { settings.virtualNodesPerWorker = virtualNodesPerWorker }
        if let cacheAffinity { settings.cacheAffinity = cacheAffinity }
        if let nearBestFraction { settings.nearBestFraction = nearBestFraction }
        if let nearBestMs { settings.nearBestMilliseconds = nearBestMs }
        if let decodeMsPerRunningRequest { settings.decodeMillisecondsPerRunningRequest = decodeMsPerRunningRequest }
        if let stickyOverloadFactor { settings.stickyOverloadFactor = stickyOverloadFactor }
        if let stickyOverloadSlack { settings.stickyOverloadSlack = stickyOverloadSlack }
        if let stickyTtlMs {
            guard stickyTtlMs > 0 else { throw APIError.badRequest(field: "sticky_ttl_ms", "must be positive") }
            settings.stickyTTLMilliseconds = UInt64(stickyTtlMs)
        }
        if let reservationTtlMs {
            guard reservationTtlMs > 0 else { throw APIError.badRequest(field: "reservation_ttl_ms", "must be positive") }
            settings.reservationTTLMilliseconds = UInt64(reservationTtlMs)
        }
        if let prefixBlocksPerWorker { settings.prefixBlocksPerWorker = prefixBlocksPerWorker }
        if let busyCoreThreshold { settings.busyCoreThreshold = busyCoreThreshold }
        if let cpuWeight { settings.cpuWeight = cpuWeight }
        if let memoryWeight { settings.memoryWeight = memoryWeight }
        if let gpuWeight { settings.gpuWeight = gpuWeight }
        if let distanceWeight { settings.distanceWeightPer1000Kilometres = distanceWeight }
        do { try settings.validate() } catch { throw APIError(error) }
        return settings
    }
}

extension BalancerConfiguration: ResponseEncodable {}
