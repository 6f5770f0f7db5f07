public import Balancer
public import Cluster
import Foundation
public import Logging
public import Raft

/// Why a request was not placed.
public enum ServingError: Error, Sendable {
    /// The balancer refused (bad request, unknown model, no capacity).
    case refused(BalancerError)
    /// No leader could take the request in time (and `fail_open` is off), or a forwarded
    /// request reached a node that no longer leads.
    case noLeader(String)
}

/// Routing decisions from any node, on domain types. The leader decides on its own state with
/// its router; a follower names the leader to forward to (the HTTP shell does the forwarding);
/// with no leader a follower waits for one — on the node's leadership feed and applied entries,
/// not by polling — up to `leader_wait_ms`, then decides alone on its replicated state
/// (`fail_open`, marked degraded) or refuses.
public struct RoutingService: Sendable {
    public let node: ClusterNode<BalancerMachine>
    let duties: LeaderDuties
    let settings: ServingSettings
    let metrics: ServerMetrics
    public let logger: Logger

    public init(node: ClusterNode<BalancerMachine>, duties: LeaderDuties, settings: ServingSettings, metrics: ServerMetrics, logger: Logger) {
        self.node = node
        self.duties = duties
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
    }

    /// A decision taken on this node.
    public struct Decided: Sendable {
        public var decision: RoutingDecision
        /// Hands the reservations back (``release(_:outcome:workerID:forwarded:)``).
        public var token: ReleaseToken
        /// Taken by a follower with no leader reachable (`fail_open`).
        public var degraded: Bool
    }

    public enum Placement: Sendable {
        case decided(Decided)
        /// This node follows: the leader at `endpoint` (its HTTP base URL) decides.
        case forward(endpoint: String, leader: NodeID)
    }

    private enum Attempt: Sendable {
        case decided(RoutingDecision, epoch: UInt32)
        case refused(BalancerError)
        case follower(Leadership, endpoint: String?)
    }

    /// Places `request`, or names the leader that must. `forwarded`: it came from another node
    /// and must not travel on. `failedLeader`: forwarding to that leader just failed, so the
    /// next answer waits a moment (or for a change of leader) before naming a leader again;
    /// `deadline` bounds every wait of one request.
    public func place(
        _ request: RoutingRequest, forwarded: Bool, deadline: ContinuousClock.Instant, failedLeader: NodeID? = nil
    ) async throws(ServingError) -> Placement {
        let started = ContinuousClock.now
        var pause = failedLeader != nil
        var lastLeader = failedLeader
        while true {
            let generation = node.leadershipFeed.current.generation
            let attempt = await node.withMachine { machine, leadership -> Attempt in
                guard leadership.isLeader else {
                    return .follower(leadership, endpoint: leadership.leader.flatMap { machine.state.nodeEndpoints[$0] })
                }
                machine.prepareToRoute(asLeaderOf: leadership.term)
                do throws(BalancerError) {
                    return .decided(try machine.route(request), epoch: machine.routerEpoch)
                } catch {
                    return .refused(error)
                }
            }
            let seen: Leadership
            switch attempt {
            case .decided(let decision, let epoch):
                count(decision, duration: .now - started)
                return .decided(Decided(decision: decision, token: ReleaseToken(node: node.id, epoch: epoch, token: decision.releaseToken), degraded: false))
            case .refused(let error):
                metrics.routingError(model: request.model, code: error.code.rawValue)
                throw .refused(error)
            case .follower(let leadership, let endpoint):
                if forwarded {
                    throw .noLeader("this node is not the leader any more (node \(leadership.leader.map(String.init) ?? "none") is)")
                }
                lastLeader = leadership.leader ?? lastLeader
                if let leader = leadership.leader, let endpoint, !pause { return .forward(endpoint: endpoint, leader: leader) }
                seen = leadership
            }
            let now = ContinuousClock.now
            guard now < deadline else { break }
            // After a failed forward, retry the same leader after a short pause unless the
            // leadership changes first; without a leader (or its endpoint), wait for either.
            await waitForChange(after: generation, applied: seen.appliedIndex, until: pause ? min(deadline, now + .milliseconds(25)) : deadline)
            pause = false
        }
        guard settings.failOpen else {
            throw .noLeader(lastLeader == nil ? "no leader is known" : "the leader (node \(lastLeader!)) is not reachable")
        }
        return .decided(try await placeDegraded(request))
    }

    /// Returns when the leadership changes, an entry past `applied` applies here (a leader's
    /// endpoint arrives that way), or at `limit`, whichever comes first.
    private func waitForChange(after generation: UInt64, applied: LogIndex, until limit: ContinuousClock.Instant) async {
        let node = node
        let remaining = limit - .now
        guard remaining > .zero else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = await node.leadershipFeed.next(after: generation) }
            group.addTask { try? await node.waitUntilApplied(applied + 1, timeout: remaining) }
            group.addTask { try? await Task.sleep(until: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    /// Decides on this follower's replicated state. Its prefixes and bindings are not proposed
    /// (a follower cannot); its router remembers them for its next degraded decisions.
    private func placeDegraded(_ request: RoutingRequest) async throws(ServingError) -> Decided {
        let started = ContinuousClock.now
        let result = await node.withMachine { machine, _ -> Result<(RoutingDecision, UInt32), BalancerError> in
            do throws(BalancerError) {
                let decision = try machine.route(request)
                _ = machine.router.takePendingCommand()
                return .success((decision, machine.routerEpoch))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let (decision, epoch)):
            metrics.degradedRoutes.increment()
            count(decision, duration: .now - started)
            return Decided(decision: decision, token: ReleaseToken(node: node.id, epoch: epoch, token: decision.releaseToken), degraded: true)
        case .failure(let error):
            metrics.routingError(model: request.model, code: error.code.rawValue)
            throw .refused(error)
        }
    }

    private func count(_ decision: RoutingDecision, duration: Duration) {
        metrics.decisionDuration(model: decision.model, duration)
        for target in decision.targets {
            metrics.decision(model: decision.model, role: target.role.name, strategy: target.strategy.name, reason: target.reason.rawValue)
        }
    }

    // MARK: Releasing

    public enum Release: Sendable {
        /// This many reservations were handed back.
        case released(Int)
        /// Nothing here to release (released already, expired, or another node's decision).
        case unknown(String)
        /// The token is another node's and this node follows: ask the leader at `endpoint`.
        case forward(endpoint: String)
        /// The token is another node's and no leader is known.
        case noLeader
    }

    /// Releases a decision's reservations and counts its outcome against the circuits of the
    /// workers it held — only those, and only when something was released: a release names a
    /// reservation, and nothing else (another worker, a token already released, another node's
    /// token) lets a caller open or close a worker's circuit.
    public func release(_ token: ReleaseToken, outcome: UpstreamOutcome?, workerID: String?, forwarded: Bool) async -> Release {
        if token.node == node.id {
            let (released, leadership) = await node.withMachine { machine, leadership in
                guard machine.routerEpoch == token.epoch else { return ([Reservation](), leadership) }
                return ((try? machine.router.release(token: token.token)) ?? [], leadership)
            }
            guard !released.isEmpty else {
                return .unknown("no reservation \(token) here (released already, expired, or from an earlier leadership)")
            }
            if leadership.isLeader, let outcome {
                let held = Set(released.map(\.workerID))
                let workers = workerID.map { held.contains($0) ? [$0] : [] } ?? Array(held)
                for worker in workers { await duties.record(outcome, workerID: worker, term: leadership.term) }
            }
            return .released(released.count)
        }
        let (leadership, endpoint) = await leaderEndpoint()
        if leadership.isLeader || forwarded {
            return .unknown("reservation \(token) was made by node \(token.node), not by the leader; it expires on its own")
        }
        guard let endpoint else { return .noLeader }
        return .forward(endpoint: endpoint)
    }

    /// The workers named, as this node's replicated state has them (their labels say which
    /// engine serves them and how to call it); unknown ids are left out.
    public func workers(_ ids: [String]) async -> [String: Worker] {
        await node.withMachine { machine, _ in
            var found: [String: Worker] = [:]
            for id in ids { found[id] = machine.state.worker(id: id) }
            return found
        }
    }

    /// This node's view of the leadership and the leader's HTTP endpoint, when known.
    public func leaderEndpoint() async -> (leadership: Leadership, endpoint: String?) {
        let own = settings.advertisedURL
        return await node.withMachine { machine, leadership in
            (leadership, leadership.isLeader ? own : leadership.leader.flatMap { machine.state.nodeEndpoints[$0] })
        }
    }
}

/// A model (or an alias of one) that a request can be routed to now.
public struct ServedModel: Sendable, Hashable {
    /// What clients ask for.
    public var id: String
    /// The model it routes to (itself, unless `id` is an alias).
    public var model: String
}

extension RoutingService {
    /// The models a request can be routed to now, as this node's replicated state has them: a
    /// model with an available PDFUSION worker, or an available PREFILL and DECODE worker (not
    /// draining, not unhealthy, circuit not open), and every alias naming one. Sorted by id.
    public func servedModels() async -> [ServedModel] {
        await node.withMachine { machine, _ in
            var roles: [String: Set<WorkerRole>] = [:]
            // Under the machine's lock, which routing shares: no sorted copy of the registry.
            for case let worker? in machine.state.workersBySlot where worker.exclusion == nil {
                roles[worker.model, default: []].insert(worker.role)
            }
            let served = Set(roles.filter { $0.value.contains(.pdfusion) || $0.value.isSuperset(of: [.prefill, .decode]) }.keys)
            var models = served.map { ServedModel(id: $0, model: $0) }
            for (alias, model) in machine.state.config.aliases where served.contains(model) && !served.contains(alias) {
                models.append(ServedModel(id: alias, model: model))
            }
            return models.sorted { $0.id < $1.id }
        }
    }
}
