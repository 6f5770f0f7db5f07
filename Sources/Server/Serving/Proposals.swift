import Balancer
import Cluster
import Serving

extension ClusterNode where Machine == BalancerMachine {
    /// Proposes a balancer command stamped with this node's clock and returns the state
    /// machine's answer; cluster errors become API errors (421 on a follower, naming the leader).
    func proposeCommand(_ command: BalancerCommand, metrics: ServerMetrics?) async throws -> String {
        metrics?.proposals.increment()
        do {
            let issuedAt = withMachine { machine, _ in machine.clock.now() }
            switch try await propose(CommandEnvelope(issuedAt: issuedAt, command: command).encoded()) {
            case .applied: return "applied"
            case .ignored(let reason): return "ignored: \(reason)"
            }
        } catch let error as ClusterError {
            throw APIError(error)
        }
    }
}
