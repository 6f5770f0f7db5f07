public import Balancer
public import Cluster
public import Raft

/// The balancer's replicated state as the cluster's state machine: every committed entry is a
/// ``CommandEnvelope``; the result says whether it applied or why it was ignored.
///
/// Beside the replicated `state` it carries this node's ``Router``: reservations, cursors and
/// the overlay of decisions not yet in the log. The router is local and never replicated; the
/// serving layer reaches it through ``ClusterNode/withMachine(_:)`` so a decision reads the
/// state in place, without copying it.
public struct BalancerMachine: ReplicatedStateMachine {
    public private(set) var state = BalancerState()
    /// Local routing state (see above). Reset when a snapshot replaces the state.
    public var router = Router(seed: UInt64.random(in: 1...UInt64.max))
    /// Changes whenever the router is replaced, so release tokens of an earlier router are
    /// recognised as stale rather than releasing someone else's reservation.
    public private(set) var routerEpoch = UInt32.random(in: 1...UInt32.max)

    /// The cluster's time as this node reads it; follows every stamp the machine applies.
    public let clock: ClusterClock

    public init(clock: ClusterClock = ClusterClock()) { self.clock = clock }

    /// The term in which this node last led and routed; a router carried over from an earlier
    /// leadership holds reservations and cursors of a different era.
    private var routingTerm: UInt64 = 0

    /// Starts routing afresh (a node that becomes leader does, as reservations are local).
    public mutating func resetRouter() {
        router = Router(seed: UInt64.random(in: 1...UInt64.max))
        routerEpoch = routerEpoch &+ 1
    }

    /// Called before every decision the leader takes: the first one of a new term starts from
    /// a fresh router. Doing it here, not when a watcher notices the new term, means no
    /// decision can be taken by the old router after the change, nor wiped by a late reset.
    public mutating func prepareToRoute(asLeaderOf term: UInt64) {
        guard term != routingTerm else { return }
        routingTerm = term
        resetRouter()
    }

    public mutating func apply(_ command: [UInt8], at index: LogIndex) -> BalancerState.Outcome {
        guard let envelope = try? CommandEnvelope(decoding: command) else {
            // Proposers validate; a replica that cannot decode an entry skips it, like every other.
            return .ignored("undecodable command")
        }
        let outcome = state.apply(envelope)
        clock.observe(state.clock)
        return outcome
    }

    public func snapshot() -> [UInt8] { state.snapshot() }

    public static func validate(snapshot: [UInt8]) throws {
        _ = try BalancerState(snapshot: snapshot)
    }

    public mutating func restore(from snapshot: [UInt8]) throws {
        state = try BalancerState(snapshot: snapshot)
        clock.observe(state.clock)
        resetRouter()
    }

    /// Places a request on this node's view of the state, now on the cluster's time.
    public mutating func route(_ request: RoutingRequest) throws(BalancerError) -> RoutingDecision {
        try router.route(request, state: state, now: clock.now())
    }
}
