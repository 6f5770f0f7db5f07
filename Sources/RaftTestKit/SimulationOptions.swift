public import Raft

/// The faults a simulation injects and how often. Rates are probabilities per tick (per message
/// for the network ones, per `Ready` for crash points).
public struct FaultProfile: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var dropRate: Double = 0
    public var duplicateRate: Double = 0
    /// Message delay in steps (4 steps make a tick) is drawn from 1...maxDelaySteps ...
    public var maxDelaySteps: Int = 3
    /// ... except this share of messages, delayed up to `longDelaySteps` (reordering).
    public var longDelayRate: Double = 0
    public var longDelaySteps: Int = 40
    public var partitionRate: Double = 0
    public var crashRate: Double = 0
    /// Chance that processing one `Ready` crashes the node at a named point.
    public var crashPointRate: Double = 0
    /// Chance per tick that one node's clock runs fast or slow for a while.
    public var clockSkewRate: Double = 0
    public var membershipRate: Double = 0
    public var transferRate: Double = 0
    /// Chance that a newly elected leader is killed within three ticks of its election.
    public var newLeaderCrashRate: Double = 0
    /// Chance that a newly elected leader is cut off for a few ticks right after its election,
    /// keeping the entries it appends meanwhile to itself.
    public var newLeaderIsolationRate: Double = 0
    /// Applied entries after which a node snapshots and compacts.
    public var compactionThreshold: Int = 1_000_000
    /// Overrides the append size cap (bytes), so that entries travel in separate messages.
    public var maxMessageBytes: Int?
    /// Per node and tick: a message from a hostile peer (a non-member, or a member's with
    /// extreme fields) reaches the node through the same screening the runtime applies.
    public var hostileMessageRate: Double = 0

    public init(name: String) { self.name = name }

    public var description: String { name }

    /// No faults: a healthy network and nodes that never fail.
    public static let calm = FaultProfile(name: "calm")

    /// Lossy, duplicating, reordering network; no crashes.
    public static var flakyNetwork: FaultProfile {
        var profile = FaultProfile(name: "flaky-network")
        profile.dropRate = 0.08
        profile.duplicateRate = 0.05
        profile.longDelayRate = 0.05
        profile.compactionThreshold = 40
        return profile
    }

    /// Symmetric and asymmetric partitions over a mostly healthy network.
    public static var partitions: FaultProfile {
        var profile = FaultProfile(name: "partitions")
        profile.dropRate = 0.01
        profile.partitionRate = 0.02
        profile.transferRate = 0.005
        profile.compactionThreshold = 30
        return profile
    }

    /// Crashes and restarts, including at named points while persisting and sending.
    public static var crashes: FaultProfile {
        var profile = FaultProfile(name: "crashes")
        profile.dropRate = 0.02
        profile.crashRate = 0.01
        profile.crashPointRate = 0.003
        profile.compactionThreshold = 25
        return profile
    }

    /// Membership changes, leadership transfers and compaction under light faults.
    public static var membership: FaultProfile {
        var profile = FaultProfile(name: "membership")
        profile.dropRate = 0.02
        profile.duplicateRate = 0.02
        profile.membershipRate = 0.03
        profile.transferRate = 0.01
        profile.crashRate = 0.003
        profile.partitionRate = 0.005
        profile.compactionThreshold = 20
        return profile
    }

    /// Short-lived leaders: crashes aimed at the leader, heavy loss and reordering, and one entry
    /// per append, so a new leader's no-op often trails the older entries it re-replicates. This
    /// is the ground on which Figure 8 of the paper (committing an old-term entry by counting
    /// replicas) turns into lost writes.
    public static var leaderChurn: FaultProfile {
        var profile = FaultProfile(name: "leader-churn")
        profile.dropRate = 0.15
        profile.longDelayRate = 0.15
        profile.longDelaySteps = 60
        profile.crashRate = 0.02
        profile.newLeaderCrashRate = 0.4
        profile.newLeaderIsolationRate = 0.4
        profile.partitionRate = 0.01
        profile.compactionThreshold = 40
        profile.maxMessageBytes = 1
        return profile
    }

    /// Everything at once.
    public static var chaos: FaultProfile {
        var profile = FaultProfile(name: "chaos")
        profile.dropRate = 0.05
        profile.duplicateRate = 0.03
        profile.longDelayRate = 0.03
        profile.partitionRate = 0.01
        profile.crashRate = 0.006
        profile.crashPointRate = 0.002
        profile.clockSkewRate = 0.01
        profile.membershipRate = 0.015
        profile.transferRate = 0.008
        profile.compactionThreshold = 25
        return profile
    }

    /// A flaky network plus hostile peers: messages with terms and indexes at the integer
    /// limit, non-contiguous or lying appends, acknowledgements past the log, impossible
    /// snapshots, and vote requests from a non-member.
    public static var hostilePeers: FaultProfile {
        var profile = FaultProfile(name: "hostile-peers")
        profile.dropRate = 0.03
        profile.duplicateRate = 0.02
        profile.crashRate = 0.003
        profile.hostileMessageRate = 0.2
        profile.compactionThreshold = 30
        return profile
    }

    public static let all: [FaultProfile] = [.calm, .flakyNetwork, .partitions, .crashes, .membership, .leaderChurn, .chaos]
}

/// One simulation run: cluster size, how long faults last, the fault mix and the seed that
/// decides everything else.
public struct SimulationOptions: Sendable, Hashable {
    public var seed: UInt64
    public var nodeCount: Int
    public var faults: FaultProfile
    /// Ticks during which faults are injected and clients run.
    public var faultTicks: Int = 400
    /// After faults heal, a leader must commit a new entry everywhere within this many ticks.
    public var recoveryTicks: Int = 300
    /// Client operations started per tick, on average.
    public var clientRate: Double = 0.6
    public var readShare: Double = 0.35
    public var keyCount: Int = 3
    public var settings: RaftSettings

    public init(seed: UInt64, nodeCount: Int, faults: FaultProfile) {
        self.seed = seed
        self.nodeCount = nodeCount
        self.faults = faults
        var settings = RaftSettings()
        settings.electionTicks = 10
        settings.heartbeatTicks = 1
        settings.maxInflightMessages = 16
        settings.maxMessageBytes = 4096
        settings.snapshotTimeoutTicks = 30
        if let bytes = faults.maxMessageBytes { settings.maxMessageBytes = bytes }
        self.settings = settings
    }

    /// The mix the test suite and soak use: the seed picks the size (3, 5 or 7) and fault profile.
    public static func mixed(seed: UInt64) -> SimulationOptions {
        var random = SplitMix64(seed: seed ^ 0x5EED_0F_C1A5)
        let sizes = [3, 3, 5, 5, 7]
        let size = sizes[Int(random.next() % UInt64(sizes.count))]
        let profile = FaultProfile.all[Int(random.next() % UInt64(FaultProfile.all.count))]
        return SimulationOptions(seed: seed, nodeCount: size, faults: profile)
    }
}
