public import Balancer
import Cluster
import Foundation
public import Logging

/// Asks a worker for its status: the HTTP shell implements it (engine status endpoints, or a
/// TCP connect); the leader's duties decide what the answers mean.
public protocol WorkerProber: Sendable {
    /// The worker's load, nil when its status source reports none (TCP), or an error when the
    /// worker did not answer well within `timeoutMilliseconds`.
    func probe(_ worker: Worker, format: StatusFormat, timeoutMilliseconds: Int) async throws -> EngineLoad?
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

    private var isLeader = false
    private var term: UInt64 = 0
    /// The term of the leadership the trackers belong to.
    private var leaderTerm: UInt64 = 0
    private var health: [String: HealthTracker] = [:]
    private var breakers: [String: CircuitBreaker] = [:]
    private var pendingHealth: [String: HealthVerdict] = [:]
    private var pendingCircuits: [String: CircuitState] = [:]
    private var pendingLoads: [String: EngineLoad] = [:]
    private var proposedLoads: [String: EngineLoad] = [:]
    private var pendingResources: [String: (WorkerResources, GeoLocation?)] = [:]

    public init(
        proposer: CommandProposer, clock: ClusterClock, settings: ServingSettings, metrics: ServerMetrics,
        prober: any WorkerProber, logger: Logger
    ) {
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
        if leadership.term > term {
            if term > 0 { metrics.elections.increment(by: Int64(leadership.term - term)) }
            term = leadership.term
        }
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
        let results = await withTaskGroup(of: (String, Result<EngineLoad?, any Error>, Double).self) { group in
            for worker in workers {
                let format = StatusFormat(worker: worker)
                if format == .none { continue }
                group.addTask {
                    let start = ContinuousClock.now
                    do {
                        let load = try await prober.probe(worker, format: format, timeoutMilliseconds: timeout)
                        return (worker.id, .success(load), (ContinuousClock.now - start).seconds * 1000)
                    } catch {
                        return (worker.id, .failure(error), 0)
                    }
                }
            }
            var results: [(String, Result<EngineLoad?, any Error>, Double)] = []
            for await result in group { results.append(result) }
            return results
        }
        guard isLeader else { return }
        let known = Set(workers.map(\.id))
        health = health.filter { known.contains($0.key) }
        breakers = breakers.filter { known.contains($0.key) }
        let stateByID = Dictionary(uniqueKeysWithValues: workers.map { ($0.id, $0) })
        for (id, result, latency) in results {
            var tracker = health[id] ?? HealthTracker(verdict: stateByID[id]?.health ?? .unknown)
            let success: Bool
            switch result {
            case .success(let load):
                success = true
                if let load { pendingLoads[id] = load }
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
