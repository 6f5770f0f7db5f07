public import Balancer
public import Cluster
import Foundation
public import KVEvents
public import Logging

/// Follows the KV-cache events of every worker registered with `kv_events` and turns them into
/// changes of the replicated prefix index.
///
/// **Every node subscribes**, and keeps each engine's hash map (``BlockMapper``) warm; only the
/// leader hands the changes to its duties, which propose them, coalesced, with the next flush.
/// So the index itself is replicated (a new leader routes on it the moment it leads), and the
/// new leader's maps are already current, so the events that follow a failover are translated
/// at once: no re-subscription, no replay, no cold period.
public actor KVEventIngest {
    let node: ClusterNode<BalancerMachine>
    let duties: LeaderDuties
    let metrics: ServerMetrics
    let logger: Logger
    nonisolated let hub: KVEventHub
    private let deliveries: AsyncStream<(String, KVEventHub.Delivery)>
    private var mappers: [String: BlockMapper] = [:]
    private var pending: [String: BlockMapper.Change] = [:]
    private var subscribed: [String: KVEventHub.Endpoints] = [:]

    /// How often the registered workers are compared with the subscriptions.
    static let followInterval: Duration = .milliseconds(250)
    /// Changes are handed to the duties at most this often (they flush on their own interval).
    static let handInterval: Duration = .milliseconds(10)

    public init(node: ClusterNode<BalancerMachine>, duties: LeaderDuties, metrics: ServerMetrics, logger: Logger) {
        self.node = node
        self.duties = duties
        self.metrics = metrics
        self.logger = logger
        let (stream, continuation) = AsyncStream<(String, KVEventHub.Delivery)>.makeStream(bufferingPolicy: .bufferingNewest(65_536))
        deliveries = stream
        let hubLogger = logger
        hub = KVEventHub(deliver: { id, delivery in continuation.yield((id, delivery)) }, log: { hubLogger.info("\($0)") })
    }

    /// The endpoints of a worker's publisher, from its labels.
    public static func endpoints(of worker: Worker) -> KVEventHub.Endpoints? {
        guard let events = worker.labels["kv_events"] else { return nil }
        return KVEventHub.Endpoints(events: events, replay: worker.labels["kv_events_replay"])
    }

    public func run() async throws {
        defer { hub.stop() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.followWorkers() }
            group.addTask { await self.consume() }
            group.addTask { try await self.handOver() }
            try await group.next()
            group.cancelAll()
        }
    }

    private func followWorkers() async throws {
        while !Task.isCancelled {
            let workers = await node.withMachine { machine, _ in machine.state.workers }
            var wanted: [String: KVEventHub.Endpoints] = [:]
            var models: [String: String] = [:]
            for worker in workers {
                guard let endpoints = Self.endpoints(of: worker) else { continue }
                wanted[worker.id] = endpoints
                models[worker.id] = worker.model
            }
            if wanted != subscribed {
                for (id, endpoints) in wanted where subscribed[id] != endpoints {
                    logger.info("following the KV events of \(id) at \(endpoints.events)")
                    mappers[id] = nil
                }
                subscribed = wanted
                hub.follow(wanted)
            }
            let capacity = await node.withMachine { machine, _ in machine.state.config.settings.prefixBlocksPerWorker }
            for (id, model) in models where mappers[id] == nil {
                mappers[id] = BlockMapper(model: model, capacity: max(1_024, capacity))
            }
            mappers = mappers.filter { wanted[$0.key] != nil }
            pending = pending.filter { wanted[$0.key] != nil }
            let counts = hub.counts
            metrics.kvEventFrames([
                "batches": counts.batches, "malformed": counts.malformed, "replayed": counts.replayed, "gaps": counts.gaps, "resets": counts.resets,
            ])
            try await Task.sleep(for: Self.followInterval)
        }
    }

    private func consume() async {
        for await (id, delivery) in deliveries {
            guard var mapper = mappers[id] else { continue }
            var change: BlockMapper.Change
            switch delivery {
            case .batch(let batch):
                change = mapper.apply(batch)
                metrics.kvEvents(outcome: "applied", count: batch.events.count)
                if change.unmapped > 0 { metrics.kvEvents(outcome: "unmapped_blocks", count: change.unmapped) }
            case .reset(let reason):
                mapper.reset()
                change = BlockMapper.Change()
                change.cleared = true
                metrics.kvEvents(outcome: "reset", count: 1)
                logger.notice("KV events of \(id) reset: \(reason)")
            }
            mappers[id] = mapper
            if !change.isEmpty { pending[id, default: BlockMapper.Change()].merge(change) }
        }
    }

    private func handOver() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: Self.handInterval)
            guard !pending.isEmpty else { continue }
            let changes = pending
            pending = [:]
            await duties.absorb(engineEvents: changes)
        }
    }

    /// The events counted by the hub (frames and batches dropped, gaps, replays).
    public nonisolated var counts: KVEventHub.Counts { hub.counts }
}
