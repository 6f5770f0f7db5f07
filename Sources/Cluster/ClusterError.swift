public import RaftTransport

/// Why a cluster operation did not happen (or may not have).
public struct ClusterError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// This node does not lead; `leader` says who does, when known.
        case notLeader = "not_leader"
        /// No answer within the deadline: the operation may or may not take effect.
        case timeout
        /// The entry was overwritten by a new leader's log: it will never apply.
        case dropped
        /// The request breaks a rule (unknown member, pending change, not caught up, …).
        case rejected
        /// The node stopped (shutdown, or a storage failure).
        case stopped
    }

    public let code: Code
    public let message: String
    public let leader: UInt64?
    public let leaderAddress: PeerAddress?

    init(_ code: Code, _ message: String, leader: UInt64? = nil, leaderAddress: PeerAddress? = nil) {
        self.code = code
        self.message = message
        self.leader = leader
        self.leaderAddress = leaderAddress
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
