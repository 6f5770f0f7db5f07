public import Balancer
public import Cluster

/// The one way a node proposes a balancer command: stamped with the cluster's time, counted,
/// and answered with the state machine's typed outcome. Cluster errors (not the leader, a
/// timeout, a dropped entry, a stopped node) are thrown as they are.
public struct CommandProposer: Sendable {
    public let node: ClusterNode<BalancerMachine>
    let clock: ClusterClock
    let metrics: ServerMetrics

    public init(node: ClusterNode<BalancerMachine>, clock: ClusterClock, metrics: ServerMetrics) {
        self.node = node
        self.clock = clock
        self.metrics = metrics
    }

    public func propose(_ command: BalancerCommand) async throws -> BalancerState.Outcome {
        metrics.proposals.increment()
        metrics.proposalsPending.increment()
        defer { metrics.proposalsPending.decrement() }
        do {
            return try await node.propose(CommandEnvelope(issuedAt: clock.now(), command: command).encoded())
        } catch {
            metrics.proposalsFailed.increment()
            throw error
        }
    }
}

extension BalancerState.Outcome: CustomStringConvertible {
    /// `applied`, or `ignored: <why>`, as the HTTP API answers it.
    public var description: String {
        switch self {
        case .applied: "applied"
        case .ignored(let reason): "ignored: \(reason)"
        }
    }
}
