public import Balancer
public import Cluster
public import Raft

/// The balancer's replicated state as the cluster's state machine: every committed entry is a
/// ``CommandEnvelope``; the result says whether it applied or why it was ignored.
public struct BalancerMachine: ReplicatedStateMachine {
    public private(set) var state = BalancerState()

    public init() {}

    public mutating func apply(_ command: [UInt8], at index: LogIndex) -> [UInt8] {
        guard let envelope = try? CommandEnvelope(decoding: command) else {
            // Proposers validate; a replica that cannot decode an entry skips it, like every other.
            return Array("ignored: undecodable command".utf8)
        }
        switch state.apply(envelope) {
        case .applied: return Array("applied".utf8)
        case .ignored(let reason): return Array("ignored: \(reason)".utf8)
        }
    }

    public func snapshot() -> [UInt8] { state.snapshot() }

    public mutating func restore(from snapshot: [UInt8]) throws {
        state = try BalancerState(snapshot: snapshot)
    }
}
