/// Tuning of one Raft node. Times are in ticks; the runtime decides how long a tick lasts.
public struct RaftSettings: Sendable, Hashable {
    /// Ticks without hearing from a leader before a follower campaigns. The actual timeout is
    /// drawn from `electionTicks ..< 2 * electionTicks` each time it resets (§5.2).
    public var electionTicks: Int = 10
    /// Ticks between leader heartbeats. Must be smaller than `electionTicks`.
    public var heartbeatTicks: Int = 1
    /// Ask peers before starting a real election, so a partitioned node cannot disrupt (thesis §9.6).
    public var preVote: Bool = true
    /// A leader that has not heard from a quorum within an election timeout steps down (thesis §6.2).
    public var checkQuorum: Bool = true
    /// Upper bound on the entry bytes of one append message (at least one entry is always sent).
    public var maxMessageBytes: Int = 1 << 20
    /// Append messages in flight to one follower before the leader pauses (pipelining window).
    public var maxInflightMessages: Int = 256
    /// Bytes in flight to one follower before the leader pauses; 0 disables the byte bound.
    public var maxInflightBytes: Int = 32 << 20
    /// Upper bound on the bytes of committed entries handed out in one `Ready`.
    public var maxCommittedBytesPerReady: Int = 16 << 20
    /// Ticks a leader waits for a snapshot to be acknowledged before it probes again.
    public var snapshotTimeoutTicks: Int = 50

    public init() {}

    /// Checks the settings, naming the first bad one.
    public func validate() throws(RaftError) {
        guard electionTicks > 0 else { throw .invalidRequest("electionTicks must be positive, got \(electionTicks)") }
        guard heartbeatTicks > 0 else { throw .invalidRequest("heartbeatTicks must be positive, got \(heartbeatTicks)") }
        guard heartbeatTicks < electionTicks else {
            throw .invalidRequest("heartbeatTicks (\(heartbeatTicks)) must be smaller than electionTicks (\(electionTicks))")
        }
        guard maxInflightMessages > 0 else {
            throw .invalidRequest("maxInflightMessages must be positive, got \(maxInflightMessages)")
        }
        guard maxMessageBytes > 0 else { throw .invalidRequest("maxMessageBytes must be positive, got \(maxMessageBytes)") }
        guard snapshotTimeoutTicks > 0 else {
            throw .invalidRequest("snapshotTimeoutTicks must be positive, got \(snapshotTimeoutTicks)")
        }
    }
}

/// A small, fast, seedable generator (SplitMix64). The core draws its election timeouts from
/// one, so a seeded simulation is reproducible.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
