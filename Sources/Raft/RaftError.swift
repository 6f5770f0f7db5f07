/// An error from the consensus core. The code is extensible; the message says what happened.
public struct RaftError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case notLeader
        case transferInProgress
        case configurationChangePending
        case invalidConfigurationChange
        case compacted
        case snapshotOutOfDate
        case malformedConfChange
        case invalidRequest
    }

    private let code: Code
    public let message: String

    private init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// A proposal reached a node that is not the leader; `leader` is the known leader, if any.
    public static func notLeader(leader: NodeID) -> RaftError {
        .init(.notLeader, leader == .none ? "not the leader; no leader known" : "not the leader; leader is \(leader)")
    }
    /// Proposals are refused while leadership is being handed over.
    public static func transferInProgress(to target: NodeID) -> RaftError {
        .init(.transferInProgress, "leadership is being transferred to \(target)")
    }
    public static func configurationChangePending(index: LogIndex) -> RaftError {
        .init(.configurationChangePending, "a configuration change is pending until index \(index) is applied")
    }
    public static func invalidConfigurationChange(_ why: String) -> RaftError {
        .init(.invalidConfigurationChange, "invalid configuration change: \(why)")
    }
    public static func compacted(index: LogIndex, firstIndex: LogIndex) -> RaftError {
        .init(.compacted, "index \(index) is compacted; the log starts at \(firstIndex)")
    }
    public static func snapshotOutOfDate(index: LogIndex, current: LogIndex) -> RaftError {
        .init(.snapshotOutOfDate, "snapshot at \(index) is not newer than the current one at \(current)")
    }
    public static func malformedConfChange(_ why: String) -> RaftError {
        .init(.malformedConfChange, "malformed configuration change entry: \(why)")
    }
    public static func invalidRequest(_ why: String) -> RaftError {
        .init(.invalidRequest, why)
    }

    public static func == (lhs: RaftError, rhs: RaftError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    /// True when both errors have the same code, whatever their messages.
    public func hasSameCode(as other: RaftError) -> Bool { code == other.code }
}
