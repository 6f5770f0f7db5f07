import Raft

/// One node of a simulation: its durable "disk", and while running, its core and state machine.
struct SimulatedNode {
    let id: NodeID
    var raft: RaftNode?
    var disk: MemoryStorage
    var store = KeyValueStore()
    var isRetired = false
    var incarnation: UInt64 = 0
    var restartAt: UInt64?
    /// A crash scheduled for this step (a leader killed soon after its election).
    var crashAt: UInt64?
    /// Steps between ticks; 4 is the nominal clock, other values model a skewed clock.
    var tickPeriod: UInt64 = ClusterSimulation.stepsPerTick
    /// Read points granted by the leader, waiting for the state machine to catch up.
    var pendingReads: [ReadState] = []
    private var seenTerm: Term = 0
    private var seenCommit: LogIndex = 0
    private var seenApplied: LogIndex = 0

    init(id: NodeID, disk: MemoryStorage) {
        self.id = id
        self.disk = disk
    }

    var isUp: Bool { raft != nil }

    /// Boots from the disk alone, as a restarted process would.
    mutating func start(settings: RaftSettings, seed: UInt64) {
        raft = try! RaftNode(id: id, settings: settings, state: disk.state, seed: seed)
        store = KeyValueStore(snapshotData: disk.state.snapshot.data)
        incarnation += 1
        restartAt = nil
        pendingReads = []
        seenTerm = raft!.term
        seenCommit = raft!.commitIndex
        seenApplied = raft!.appliedIndex
    }

    /// Loses everything volatile.
    mutating func crash(restartAt: UInt64) {
        raft = nil
        self.restartAt = restartAt
        crashAt = nil
        pendingReads = []
    }

    mutating func retire() {
        raft = nil
        isRetired = true
        restartAt = nil
    }

    /// Persists part of a batch, as a write torn by a crash would: a snapshot (atomic) and a
    /// prefix of the entries, but not the hard state.
    mutating func persistTorn(_ ready: Ready, random: inout SplitMix64) {
        if let snapshot = ready.snapshot {
            // Snapshot files are written whole or not at all; without it nothing after it lands.
            guard random.chance(0.5) else { return }
            disk.apply(snapshot: snapshot)
        }
        guard !ready.entries.isEmpty else { return }
        disk.append(Array(ready.entries.prefix(random.below(ready.entries.count))))
    }

    /// Term, commit and applied index never decrease while the node runs.
    mutating func checkMonotonic(_ checker: SafetyChecker) throws(SimulationViolation) {
        guard let raft else { return }
        guard raft.term >= seenTerm, raft.commitIndex >= seenCommit, raft.appliedIndex >= seenApplied else {
            throw checker.violation(
                "monotonic indexes",
                "node \(id): term \(seenTerm)->\(raft.term), commit \(seenCommit)->\(raft.commitIndex), applied \(seenApplied)->\(raft.appliedIndex)"
            )
        }
        seenTerm = raft.term
        seenCommit = raft.commitIndex
        seenApplied = raft.appliedIndex
    }
}

/// The simulated network: per-message delay, loss, duplication and directed link cuts.
struct SimulatedNetwork {
    struct InFlight {
        var deliverAt: UInt64
        var order: UInt64
        var message: Message
    }

    struct Link: Hashable {
        var from: NodeID
        var to: NodeID
    }

    enum Submission { case queued, blocked, lost }

    private(set) var inFlight: [InFlight] = []
    private(set) var blocked: Set<Link> = []
    var partitionEndsAt: UInt64?

    var isPartitioned: Bool { !blocked.isEmpty }

    mutating func submit(_ message: Message, at step: UInt64, faults: FaultProfile, random: inout SplitMix64) -> Submission {
        if blocked.contains(Link(from: message.from, to: message.to)) { return .blocked }
        if random.chance(faults.dropRate) { return .lost }
        schedule(message, at: step, faults: faults, random: &random)
        if random.chance(faults.duplicateRate) { schedule(message, at: step, faults: faults, random: &random) }
        return .queued
    }

    private mutating func schedule(_ message: Message, at step: UInt64, faults: FaultProfile, random: inout SplitMix64) {
        let delay = random.chance(faults.longDelayRate)
            ? 1 + random.below(faults.longDelaySteps)
            : 1 + random.below(max(faults.maxDelaySteps, 1))
        inFlight.append(InFlight(deliverAt: step + UInt64(delay), order: random.next(), message: message))
    }

    /// Takes out the messages due by `step`, in delivery order. Messages on a link cut while they
    /// were in flight are lost.
    mutating func deliverable(at step: UInt64, random: inout SplitMix64) -> [Message] {
        var due: [InFlight] = []
        var waiting: [InFlight] = []
        waiting.reserveCapacity(inFlight.count)
        for item in inFlight {
            if item.deliverAt <= step { due.append(item) } else { waiting.append(item) }
        }
        inFlight = waiting
        due.sort { ($0.deliverAt, $0.order) < ($1.deliverAt, $1.order) }
        return due.compactMap { blocked.contains(Link(from: $0.message.from, to: $0.message.to)) ? nil : $0.message }
    }

    mutating func block(from: NodeID, to: NodeID) { blocked.insert(Link(from: from, to: to)) }

    mutating func isolate(_ group: [NodeID], from others: [NodeID]) {
        for a in group {
            for b in others {
                block(from: a, to: b)
                block(from: b, to: a)
            }
        }
    }

    mutating func healAll() {
        blocked = []
        partitionEndsAt = nil
    }
}
