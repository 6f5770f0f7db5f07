public import Balancer
import Cluster
public import KVEvents
import Foundation
public import Logging

/// Asks a worker for its status: the HTTP shell implements it (engine status endpoints, rtp-llm's
/// engine gRPC, or a TCP connect); the leader's duties decide what the answers mean.
public protocol WorkerProber: Sendable {
    /// What the worker reports from `cursor` on, or an error when it did not answer well within
    /// `timeoutMilliseconds` (or reports itself not alive).
    func probe(_ worker: Worker, format: StatusFormat, cursor: EngineCursor, timeoutMilliseconds: Int) async throws -> EngineReport
}

/// The leader's duties towards workers and the log:
/// - polls every worker's status (native, vLLM or SGLang format) and health on an interval,
///   with a deadline, keeping health verdicts with thresholds and a latency EWMA;
/// - keeps a circuit breaker per worker, fed by the outcomes of proxied requests;
/// - proposes what changed — load snapshots, health and circuit transitions, heartbeat
///   resources, and the router's prefixes and sticky bindings — as one log entry per flush
///   interval, so a new leader starts with the same view.
/// On a follower it only follows the node's leadership feed. Reservations stay local to the
/// router. Every proposal goes through the one ``CommandProposer``.
public actor LeaderDuties {
    let node: ClusterNode<BalancerMachine>
    /// The cluster's time (the machine's clock).
    public nonisolated let clock: ClusterClock
    let settings: ServingSettings
    let metrics: ServerMetrics
    let proposer: CommandProposer
    let prober: any WorkerProber
    let logger: Logger
    /// Told the request ids engines report finished on their last stage (DECODE or PDFUSION),
    /// on the leader: FlexLB's request states follow them.
    let requestsFinished: @Sendable ([String]) -> Void

    private var isLeader = false
    private var knownLeader: UInt64?
    /// The term of the leadership the trackers belong to.
    private var leaderTerm: UInt64 = 0
    private var health: [String: HealthTracker] = [:]
    private var breakers: [String: CircuitBreaker] = [:]
    private var pendingHealth: [String: HealthVerdict] = [:]
    private var pendingCircuits: [String: CircuitState] = [:]
    private var pendingLoads: [String: EngineLoad] = [:]
    private var proposedLoads: [String: EngineLoad] = [:]
    private var pendingResources: [String: (WorkerResources, GeoLocation?)] = [:]
    /// Versioned status sources (rtp-llm): where each worker's next poll starts, and when its
    /// cached keys were last read.
    private var cursors: [String: EngineCursor] = [:]
    private var cacheReadAt: [String: ContinuousClock.Instant] = [:]
    private var cachedKeys = CachedKeysTracker()
    private var pendingRecords: [PrefixRecord] = []
    private var pendingEvictions: [PrefixRecord] = []

    public init(
        proposer: CommandProposer, clock: ClusterClock, settings: ServingSettings, metrics: ServerMetrics,
        prober: any WorkerProber, logger: Logger, requestsFinished: @escaping @Sendable ([String]) -> Void = { _ in }
    ) {
        self.requestsFinished = requestsFinished
        self.node = proposer.node
        self.proposer = proposer
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.prober = prober
        self.logger = logger
    }

    /// Runs until cancelled.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await leadership in self.node.leadershipFeed.updates() { await self.follow(leadership) }
            }
            group.addTask { try await self.every(milliseconds: self.settings.statusIntervalMilliseconds) { await self.pollRound() } }
            group.addTask { try await self.every(milliseconds: self.settings.flushIntervalMilliseconds) { await self.flush() } }
            // Engines' KV events: followed on every node, handed to the duties on the leader.
            let ingest = KVEventIngest(node: self.node, duties: self, metrics: self.metrics, logger: self.logger)
            group.addTask { try await ingest.run() }
            try await group.next()
            group.cancelAll()
        }
    }

    private nonisolated func every(milliseconds: Int, _ body: @Sendable () async throws -> Void) async throws {
        let clock = ContinuousClock()
        var deadline = clock.now
        while !Task.isCancelled {
            deadline = max(deadline.advanced(by: .milliseconds(milliseconds)), clock.now)
            try await Task.sleep(until: deadline, clock: clock)
            try await body()
        }
    }

    // MARK: Leadership

    private func follow(_ leadership: Leadership) async {
        if let leader = leadership.leader, leader != knownLeader { metrics.leaderChanges.increment() }
        if leadership.leader != nil { knownLeader = leadership.leader }
        if leadership.isLeader && (!isLeader || leaderTerm != leadership.term) {
            await becomeLeader(term: leadership.term)
            announceEndpoint(term: leadership.term)
        } else if !leadership.isLeader && isLeader {
            isLeader = false
            logger.info("no longer leader: stopped polling workers")
        }
    }

    /// Takes over warm: verdicts and circuits start from the replicated state, so nothing
    /// flaps; the router starts afresh (reservations are local).
    private func becomeLeader(term: UInt64) async {
        guard !isLeader || leaderTerm != term else { return }
        isLeader = true
        leaderTerm = term
        let now = clock.now()
        let workers = await node.withMachine { machine, leadership in
            machine.prepareToRoute(asLeaderOf: leadership.term)
            return machine.state.workers
        }
        health = [:]
        breakers = [:]
        for worker in workers {
            health[worker.id] = HealthTracker(verdict: worker.health)
            breakers[worker.id] = CircuitBreaker(state: worker.circuit, now: now)
        }
        pendingHealth = [:]
        pendingCircuits = [:]
        pendingLoads = [:]
        proposedLoads = [:]
        pendingResources = [:]
        cursors = [:]
        cacheReadAt = [:]
        cachedKeys.reset()
        pendingRecords = []
        pendingEvictions = []
        logger.info("leader: polling \(workers.count) workers")
    }

    /// Writes this node's HTTP endpoint into the log, so followers know where to forward;
    /// retried while this node still leads in `term`.
    private func announceEndpoint(term: UInt64) {
        let url = settings.advertisedURL
        let id = node.id
        Task {
            while leads(in: term) {
                let current = await node.withMachine { machine, _ in machine.state.nodeEndpoints[id] }
                if current == url { return }
                do {
                    _ = try await proposer.propose(.setNodeEndpoint(node: id, url: url))
                } catch {
                    logger.debug("announcing the endpoint failed, retrying: \(error)")
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
        }
    }

    private func leads(in term: UInt64) -> Bool { isLeader && leaderTerm == term }

    // MARK: Outcomes and heartbeats

    /// Counts a proxied request's outcome against the worker's circuit; the caller leads in
    /// `term` (the trackers follow at once, not at the next leadership check).
    public func record(_ outcome: UpstreamOutcome, workerID: String, term: UInt64) async {
        await becomeLeader(term: term)
        guard isLeader, leaderTerm == term else { return }
        let now = clock.now()
        var breaker = breakers[workerID] ?? CircuitBreaker(state: .closed, now: now)
        if let change = breaker.record(outcome, now: now, failureThreshold: settings.circuitFailures) {
            pendingCircuits[workerID] = change
            logger.notice("circuit of \(workerID) is now \(change)", metadata: ["outcome": "\(outcome.rawValue)"])
        }
        breakers[workerID] = breaker
    }

    /// A worker's pushed host resources (and optionally load), coalesced into the next flush.
    public func heartbeat(workerID: String, resources: WorkerResources, location: GeoLocation?, load: EngineLoad?, term: UInt64) async -> Bool {
        await becomeLeader(term: term)
        guard isLeader, leaderTerm == term else { return false }
        pendingResources[workerID] = (resources, location)
        if let load { pendingLoads[workerID] = load }
        return true
    }

    // MARK: Polling

    private func pollRound() async {
        guard isLeader else { return }
        let workers = await node.withMachine { machine, _ in machine.state.workers }
        let timeout = settings.statusTimeoutMilliseconds
        let prober = prober
        let started = ContinuousClock.now
        let cacheInterval = Duration.milliseconds(settings.engineCacheIntervalMilliseconds)
        let formats = workers.map(StatusFormat.init(worker:))
        var cursorByID: [String: EngineCursor] = [:]
        for (worker, format) in zip(workers, formats) where format == .rtpLLM {
            var cursor = cursors[worker.id] ?? EngineCursor()
            cursor.readsCache = worker.role.prefillsPrompt && cacheReadAt[worker.id].map { started - $0 >= cacheInterval } ?? true
            if cursor.readsCache { cacheReadAt[worker.id] = started }
            cursorByID[worker.id] = cursor
        }
        let results = await withTaskGroup(of: (String, Result<EngineReport, any Error>, Double).self) { group in
            for (worker, format) in zip(workers, formats) where format != .none {
                let cursor = cursorByID[worker.id] ?? EngineCursor()
                group.addTask {
                    let start = ContinuousClock.now
                    do {
                        let report = try await prober.probe(worker, format: format, cursor: cursor, timeoutMilliseconds: timeout)
                        return (worker.id, .success(report), (ContinuousClock.now - start).seconds * 1000)
                    } catch {
                        return (worker.id, .failure(error), 0)
                    }
                }
            }
            var results: [(String, Result<EngineReport, any Error>, Double)] = []
            for await result in group { results.append(result) }
            return results
        }
        guard isLeader else { return }
        let known = Set(workers.map(\.id))
        health = health.filter { known.contains($0.key) }
        breakers = breakers.filter { known.contains($0.key) }
        cursors = cursors.filter { known.contains($0.key) }
        cacheReadAt = cacheReadAt.filter { known.contains($0.key) }
        cachedKeys.keep(only: known)
        let stateByID = Dictionary(uniqueKeysWithValues: workers.map { ($0.id, $0) })
        var finished: [(workerID: String, requestIDs: [String])] = []
        var reportedKeys: [(workerID: String, keys: CachedKeys)] = []
        for (id, result, latency) in results {
            var tracker = health[id] ?? HealthTracker(verdict: stateByID[id]?.health ?? .unknown)
            let success: Bool
            switch result {
            case .success(let report):
                success = true
                if let load = report.load { pendingLoads[id] = load }
                if cursorByID[id] != nil { cursors[id] = report.cursor }
                if !report.finishedRequestIDs.isEmpty { finished.append((id, report.finishedRequestIDs)) }
                if let cache = report.cache { reportedKeys.append((id, cache)) }
                metrics.statusPoll(outcome: "ok")
            case .failure(let error):
                success = false
                metrics.statusPoll(outcome: "error")
                logger.debug("status poll of \(id) failed: \(error)")
            }
            if let change = tracker.record(
                success: success, latencyMilliseconds: success ? latency : nil,
                healthyAfter: settings.healthySuccesses, unhealthyAfter: settings.unhealthyFailures
            ) {
                pendingHealth[id] = change
                logger.notice("worker \(id) is now \(change)")
            }
            health[id] = tracker
        }
        if !finished.isEmpty || !reportedKeys.isEmpty { await apply(finished: finished, reportedKeys: reportedKeys) }
        let completed = finished.filter { stateByID[$0.workerID].map { $0.role == .decode || $0.role == .pdfusion } ?? false }
        if !completed.isEmpty { requestsFinished(completed.flatMap(\.requestIDs)) }
    }

    /// Ends the holds of requests engines report finished, and turns reported key sets into
    /// index changes for the next flush.
    private func apply(finished: [(workerID: String, requestIDs: [String])], reportedKeys: [(workerID: String, keys: CachedKeys)]) async {
        var tracker = cachedKeys
        let (ended, records, evictions) = await node.withMachine { machine, _ in
            let ended = finished.reduce(0) { $0 + machine.router.finished(requestIDs: $1.requestIDs, workerID: $1.workerID, state: machine.state) }
            let cap = machine.state.config.settings.prefixBlocksPerWorker
            var records: [PrefixRecord] = []
            var evictions: [PrefixRecord] = []
            for (workerID, keys) in reportedKeys {
                let change = tracker.changes(workerID: workerID, report: keys, held: machine.state.cachedBlocks(workerID: workerID), cap: cap)
                if !change.record.isEmpty { records.append(PrefixRecord(workerID: workerID, blocks: change.record)) }
                if !change.evict.isEmpty { evictions.append(PrefixRecord(workerID: workerID, blocks: change.evict)) }
            }
            return (ended, records, evictions)
        }
        cachedKeys = tracker
        pendingRecords += records
        pendingEvictions += evictions
        if ended > 0 { logger.trace("\(ended) holds ended by engines' finished-request reports") }
    }

    /// Index changes from engines' KV events (on the leader; a follower's are dropped, its
    /// own leader proposes the same). A cleared engine loses every block it is held for.
    public func absorb(engineEvents changes: [String: BlockMapper.Change]) async {
        guard isLeader else { return }
        let cleared = changes.filter(\.value.cleared).map(\.key)
        let (held, cap) = await node.withMachine { machine, _ in
            (Dictionary(uniqueKeysWithValues: cleared.map { ($0, machine.state.cachedBlocks(workerID: $0)) }),
             machine.state.config.settings.prefixBlocksPerWorker)
        }
        for workerID in changes.keys.sorted() {
            let change = changes[workerID]!
            if change.cleared { pendingRecords.removeAll { $0.workerID == workerID } }
            let evicted = (held[workerID] ?? []) + change.removed
            if !evicted.isEmpty {
                // The flush evicts before it records: a block stored earlier in this flush
                // interval and removed now must not be recorded after all.
                let gone = Set(evicted)
                for index in pendingRecords.indices where pendingRecords[index].workerID == workerID {
                    pendingRecords[index].blocks.removeAll { gone.contains($0) }
                }
                pendingEvictions.append(PrefixRecord(workerID: workerID, blocks: evicted))
            }
            // An engine can report more than the index keeps for a worker; only the newest
            // `cap` would survive the index's own bound, so no more enter the log.
            if !change.stored.isEmpty { pendingRecords.append(PrefixRecord(workerID: workerID, blocks: Array(change.stored.suffix(cap)))) }
        }
    }

    // MARK: Flushing to the log

    private func flush() async {
        guard isLeader else { return }
        let now = clock.now()
        for (id, var breaker) in breakers {
            if let change = breaker.tick(now: now, openMilliseconds: settings.circuitOpenMilliseconds) {
                pendingCircuits[id] = change
                breakers[id] = breaker
            }
        }
        var commands: [BalancerCommand] = []
        let routed = await node.withMachine { machine, _ in machine.router.takePendingCommand() }
        if let routed { commands.append(routed.command) }
        // Evictions before records: a key an engine dropped and stored again stays recorded.
        if !pendingEvictions.isEmpty { commands.append(.evictPrefixes(pendingEvictions)) }
        if !pendingRecords.isEmpty { commands.append(.recordPrefixes(pendingRecords)) }
        for id in pendingHealth.keys.sorted() { commands.append(.setHealth(id: id, verdict: pendingHealth[id]!)) }
        for id in pendingCircuits.keys.sorted() { commands.append(.setCircuit(id: id, state: pendingCircuits[id]!)) }
        let changedLoads = pendingLoads.filter { id, load in !Self.sameLoad(proposedLoads[id], load) }
        if !changedLoads.isEmpty { commands.append(.reportLoads(changedLoads)) }
        for id in pendingResources.keys.sorted() {
            let (resources, location) = pendingResources[id]!
            commands.append(.reportResources(id: id, resources: resources, location: location))
        }
        pendingHealth = [:]
        pendingCircuits = [:]
        pendingLoads = [:]
        pendingResources = [:]
        pendingRecords = []
        pendingEvictions = []
        guard !commands.isEmpty else { return }
        logger.trace("flushing \(commands.count) commands to the log")
        do {
            _ = try await propose(commands.count == 1 ? commands[0] : .batch(commands))
            proposedLoads.merge(changedLoads) { $1 }
            if let routed {
                await node.withMachine { machine, _ in machine.router.commandApplied(generation: routed.generation) }
            }
        } catch {
            logger.warning("status flush was not committed: \(error)")
            // The key sets it carried are lost: the next ones are reconciled from the index.
            cachedKeys.reset()
        }
    }

    /// Loads that differ only in their timestamp need no new entry.
    static func sameLoad(_ a: EngineLoad?, _ b: EngineLoad) -> Bool {
        guard var a else { return false }
        a.reportedAt = b.reportedAt
        return a == b
    }

    private func propose(_ command: BalancerCommand) async throws -> BalancerState.Outcome {
        try await proposer.propose(command)
    }
}
