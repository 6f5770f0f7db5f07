import Raft

/// What a finished simulation reports.
public struct SimulationReport: Sendable, CustomStringConvertible {
    public var options: SimulationOptions
    public var violation: SimulationViolation?
    public var steps: UInt64 = 0
    public var ticks: Int = 0
    public var writesAcknowledged = 0
    public var writesFailed = 0
    public var writesUnknown = 0
    public var readsCompleted = 0
    public var elections = 0
    public var crashes = 0
    public var crashPoints = 0
    public var partitions = 0
    public var membershipChanges = 0
    public var transfers = 0
    public var snapshotsSent = 0
    public var compactions = 0
    public var messagesDelivered = 0
    public var messagesDropped = 0
    /// Hostile messages injected, and messages (hostile or not) the screening dropped.
    public var hostileMessages = 0
    public var messagesScreened = 0
    /// Ticks from healing the faults to a leader committing a new entry everywhere.
    public var recoveryTicks: Int?
    /// Chronological trace of notable events, filled when tracing was asked for.
    public var trace: [String] = []

    public var passed: Bool { violation == nil }

    public var description: String {
        var text = "seed \(options.seed) (\(options.nodeCount) nodes, \(options.faults)): "
        text += violation.map { "FAILED \($0)" } ?? "ok"
        text += " | ticks=\(ticks) writes ok/failed/unknown=\(writesAcknowledged)/\(writesFailed)/\(writesUnknown)"
        text += " reads=\(readsCompleted) crashes=\(crashes)+\(crashPoints) partitions=\(partitions)"
        text += " conf=\(membershipChanges) transfers=\(transfers) snaps=\(snapshotsSent) compactions=\(compactions)"
        if let recoveryTicks { text += " recovery=\(recoveryTicks)t" }
        return text
    }
}

/// A seeded, deterministic cluster of Raft cores over a simulated network, with clients,
/// crashes, partitions and membership changes. After every step it checks the Raft safety
/// properties; after the faults heal it checks liveness, durability of acknowledged writes,
/// snapshot equivalence and linearizability of the client history.
///
/// The same options always produce the same run, so a failing seed replays exactly.
public final class ClusterSimulation {
    /// Steps per tick: messages can cross the network several times within one tick.
    static let stepsPerTick: UInt64 = 4

    let options: SimulationOptions
    var random: SplitMix64
    var step: UInt64 = 0
    var nodes: [NodeID: SimulatedNode] = [:]
    var nextNodeID: NodeID
    var network = SimulatedNetwork()
    var checker = SafetyChecker()
    var clients = ClientRecorder()
    var report: SimulationReport
    var faultsActive = true
    /// The configuration of the latest membership change anyone applied.
    var committedConfState: ConfState
    var latestConfChangeIndex: LogIndex = 0
    let tracing: Bool

    public init(options: SimulationOptions, tracing: Bool = false) {
        self.options = options
        self.tracing = tracing
        self.random = SplitMix64(seed: options.seed)
        self.report = SimulationReport(options: options)
        let voters = (1...NodeID(options.nodeCount)).map { $0 }
        let conf = ConfState(voters: voters)
        committedConfState = conf
        nextNodeID = NodeID(options.nodeCount) + 1
        for id in voters {
            nodes[id] = SimulatedNode(id: id, disk: MemoryStorage(.bootstrap(conf)))
            start(id)
        }
    }

    /// Runs the whole simulation and returns its report; never traps on a violation.
    public func run() -> SimulationReport {
        do {
            try runFaultPhase()
            try runRecoveryPhase()
            try checkFinalState()
        } catch {
            report.violation = error
        }
        report.steps = step
        report.ticks = Int(step / Self.stepsPerTick)
        let outcomes = clients.outcomeCounts()
        report.writesAcknowledged = outcomes.acknowledged
        report.writesFailed = outcomes.failed
        report.writesUnknown = outcomes.unknown
        report.readsCompleted = outcomes.reads
        return report
    }

    // MARK: Phases

    private func runFaultPhase() throws(SimulationViolation) {
        let end = UInt64(options.faultTicks) * Self.stepsPerTick
        while step < end {
            if step % Self.stepsPerTick == 0 {
                injectFaults()
                try driveClients()
            }
            try advanceOneStep()
        }
    }

    private func runRecoveryPhase() throws(SimulationViolation) {
        faultsActive = false
        network.healAll()
        trace("heal: all partitions removed, crashed nodes restart")
        for id in memberIDs where !nodes[id]!.isUp { start(id) }
        for id in nodes.keys.sorted() { nodes[id]!.tickPeriod = Self.stepsPerTick }
        let healedAt = step
        let deadline = step + UInt64(options.recoveryTicks) * Self.stepsPerTick
        var probe: ClientRecorder.Operation.ID?
        while step < deadline {
            if step % Self.stepsPerTick == 0 {
                try clients.expireTimedOut(now: step, nodes: nodes)
                if probe == nil || clients.hasFailed(probe!) {
                    if let leader = stableLeader() { probe = try proposeProbe(on: leader) }
                }
            }
            try advanceOneStep()
            if let probe, let index = clients.acknowledgedIndex(probe), allMembersApplied(through: index) {
                report.recoveryTicks = Int((step - healedAt) / Self.stepsPerTick)
                return
            }
        }
        throw checker.violation(
            "liveness",
            "no leader committed a write on every member within \(options.recoveryTicks) ticks of healing; \(memberSummary())"
        )
    }

    private func checkFinalState() throws(SimulationViolation) {
        // Every acknowledged write is in the log exactly once, at the index it was acknowledged at.
        var seen = Set<UInt64>()
        for entry in checker.appliedLog {
            guard let command = KeyValueCommand(decoding: entry.data) else { continue }
            guard seen.insert(command.id).inserted else {
                throw checker.violation("exactly once", "command \(command.id) applied twice")
            }
        }
        try clients.checkAcknowledged(against: checker.appliedLog)
        // Every member applied everything acknowledged, and snapshot + replay equals full replay.
        let acknowledgedMax = clients.maxAcknowledgedIndex
        for id in memberIDs {
            guard let node = nodes[id], let raft = node.raft else { continue }
            guard raft.appliedIndex >= acknowledgedMax else {
                throw checker.violation("durability", "member \(id) applied \(raft.appliedIndex) < acknowledged \(acknowledgedMax)")
            }
            let replayed = checker.replayedStore(through: raft.appliedIndex)
            guard replayed == node.store else {
                throw checker.violation(
                    "snapshot equivalence", "member \(id) state at \(raft.appliedIndex) differs from a full replay"
                )
            }
        }
        switch LinearizabilityChecker.check(clients.history()) {
        case .linearizable, .inconclusive:
            break
        case .violation(let violation):
            throw checker.violation("linearizability", violation.description)
        }
    }

    // MARK: One step

    func advanceOneStep() throws(SimulationViolation) {
        step += 1
        checker.step = step
        for id in nodes.keys.sorted() {
            guard var node = nodes[id], node.isUp, step % node.tickPeriod == 0 else { continue }
            node.raft!.tick()
            nodes[id] = node
        }
        for message in network.deliverable(at: step, random: &random) {
            guard let node = nodes[message.to], node.isUp else {
                report.messagesDropped += 1
                continue
            }
            // As the runtime does: a message the core must not see is dropped before it.
            if nodes[message.to]!.raft!.screen(message) != nil {
                report.messagesScreened += 1
                continue
            }
            report.messagesDelivered += 1
            nodes[message.to]!.raft!.step(message)
        }
        for id in nodes.keys.sorted() where nodes[id]!.isUp {
            try processReady(of: id)
        }
        for id in nodes.keys.sorted() {
            guard let raft = nodes[id]!.raft, nodes[id]!.isUp else { continue }
            if raft.role == .leader { try checker.observeLeader(raft) }
            try nodes[id]!.checkMonotonic(checker)
        }
    }

    /// Carries out a node's `Ready` batches the way the runtime must, possibly crashing it at one
    /// of the named points on the way.
    private func processReady(of id: NodeID) throws(SimulationViolation) {
        while let raft = nodes[id]!.raft, raft.hasReady {
            var node = nodes[id]!
            let previousCommit = node.raft!.commitIndex
            let ready = node.raft!.ready()
            let crashPoint = faultsActive && random.chance(options.faults.crashPointRate)
                ? CrashPoint.allCases[Int(random.next() % UInt64(CrashPoint.allCases.count))] : nil
            if let soft = ready.softState, soft.role == .leader {
                report.elections += 1
                let conf = node.raft!.confState
                trace("node \(id) leads term \(node.raft!.term) (voters \(conf.voters) outgoing \(conf.votersOutgoing))")
                if faultsActive && random.chance(options.faults.newLeaderCrashRate) {
                    node.crashAt = step + 1 + UInt64(random.below(3 * Int(Self.stepsPerTick)))
                } else if faultsActive && !network.isPartitioned && random.chance(options.faults.newLeaderIsolationRate) {
                    network.isolate([id], from: memberIDs.filter { $0 != id })
                    network.partitionEndsAt = step + UInt64(3 + random.below(12)) * Self.stepsPerTick
                    report.partitions += 1
                    trace("partition: new leader \(id) isolated")
                }
            }
            // A leader's batch may go out before it is written (thesis §10.2.1), as the runtime
            // does: a crash before persisting then loses entries followers already received.
            let sentEarly = ready.mayGoBeforePersist
            if sentEarly { try send(ready.messages) }
            if crashPoint == .beforePersist { return crash(id, at: .beforePersist) }
            if crashPoint == .tornWrite {
                node.persistTorn(ready, random: &random)
                nodes[id] = node
                return crash(id, at: .tornWrite)
            }
            // The predecessor of the first new entry, as the disk will hold it once the batch's
            // snapshot (persisted first) is installed.
            var afterSnapshot = node.disk
            if let snapshot = ready.snapshot { afterSnapshot.apply(snapshot: snapshot) }
            let previousTerm = ready.entries.first.flatMap { afterSnapshot.term(at: $0.index - 1) }
            try checker.observePersisted(ready.entries, previousTerm: previousTerm, node: id)
            node.disk.persist(ready)
            nodes[id] = node
            if crashPoint == .afterPersist { return crash(id, at: .afterPersist) }
            if !sentEarly { try send(ready.messages) }
            if crashPoint == .afterSend { return crash(id, at: .afterSend) }
            try checker.observeCommit(node.raft!, from: previousCommit)
            try apply(ready, on: id)
            // Applying its own removal retires a node.
            guard nodes[id]!.isUp else { return }
            nodes[id]!.raft!.advance(ready)
            maybeCompact(id)
        }
    }

    private func apply(_ ready: Ready, on id: NodeID) throws(SimulationViolation) {
        if let snapshot = ready.snapshot {
            nodes[id]!.store = KeyValueStore(snapshotData: snapshot.data)
            trace("node \(id) installs snapshot at \(snapshot.metadata.index)")
        }
        for entry in ready.committedEntries {
            let first = try checker.observeApplied(entry, node: id)
            nodes[id]!.store.apply(entry)
            clients.observeApplied(entry, on: id, now: step)
            if entry.kind == .confChange && first && entry.index > latestConfChangeIndex {
                latestConfChangeIndex = entry.index
                if let change = try? ConfChange(decoding: entry.data), let next = try? committedConfState.applying(change) {
                    committedConfState = next
                    trace("configuration at \(entry.index): voters \(next.voters) outgoing \(next.votersOutgoing) learners \(next.learners)")
                    retireRemovedNodes()
                }
            }
        }
        let readStates = ready.readStates
        nodes[id]!.pendingReads += readStates
        try clients.completeReads(on: id, nodes: &nodes, now: step)
    }

    func send(_ messages: [Message]) throws(SimulationViolation) {
        for message in messages {
            if message.kind == .voteResponse && !message.reject {
                try checker.observeVoteGranted(voter: message.from, candidate: message.to, term: message.term)
                trace("node \(message.from) votes for \(message.to) in term \(message.term)")
            }
            if message.kind == .snapshot { report.snapshotsSent += 1 }
            switch network.submit(message, at: step, faults: faultsActive ? options.faults : .calm, random: &random) {
            case .queued:
                break
            case .blocked:
                report.messagesDropped += 1
                // A partition looks like a failed connection to the sender's transport.
                if message.kind == .snapshot {
                    nodes[message.from]?.raft?.reportSnapshot(to: message.to, succeeded: false)
                } else if message.kind == .append {
                    nodes[message.from]?.raft?.reportUnreachable(message.to)
                }
            case .lost:
                report.messagesDropped += 1
            }
        }
    }

    private func maybeCompact(_ id: NodeID) {
        guard var node = nodes[id], let raft = node.raft else { return }
        guard raft.appliedIndex >= raft.firstIndex - 1 + LogIndex(options.faults.compactionThreshold) else { return }
        guard let snapshot = try? node.raft!.takeSnapshot(data: node.store.snapshotData()) else { return }
        node.disk.compact(to: snapshot)
        nodes[id] = node
        report.compactions += 1
    }

    // MARK: Node lifecycle

    /// Members of the latest applied configuration that are still running or may restart.
    var memberIDs: [NodeID] {
        committedConfState.allMembers.filter { nodes[$0] != nil && !nodes[$0]!.isRetired }
    }

    func start(_ id: NodeID) {
        nodes[id]!.start(settings: options.settings, seed: options.seed &+ nodes[id]!.incarnation)
    }

    func crash(_ id: NodeID, at point: CrashPoint?) {
        nodes[id]!.crash(restartAt: step + (5 + random.next() % 50) * Self.stepsPerTick)
        try? clients.nodeCrashed(id, now: step)
        if let point {
            report.crashPoints += 1
            trace("node \(id) crashes at \(point)")
        } else {
            report.crashes += 1
            trace("node \(id) crashes")
        }
    }

    /// Nodes that left the configuration are shut down for good, as an operator would.
    private func retireRemovedNodes() {
        let members = Set(committedConfState.allMembers)
        for id in nodes.keys.sorted() where !members.contains(id) && !nodes[id]!.isRetired {
            nodes[id]!.retire()
            try? clients.nodeCrashed(id, now: step)
            trace("node \(id) retired after removal")
        }
    }

    /// The single leader that every running member follows, if there is one.
    func stableLeader() -> NodeID? {
        let running = memberIDs.filter { nodes[$0]!.isUp }
        let leaders = running.filter { nodes[$0]!.raft!.role == .leader }
        guard leaders.count == 1, let leader = leaders.first else { return nil }
        return leader
    }

    private func allMembersApplied(through index: LogIndex) -> Bool {
        memberIDs.allSatisfy { nodes[$0]!.isUp && nodes[$0]!.raft!.appliedIndex >= index }
    }

    private func proposeProbe(on leader: NodeID) throws(SimulationViolation) -> ClientRecorder.Operation.ID? {
        clients.startWrite(key: 0, on: leader, nodes: &nodes, now: step)
    }

    /// One line per member: role, term, indexes, and the leader's view of it.
    func memberSummary() -> String {
        let leader = stableLeader().flatMap { nodes[$0]!.raft }
        return memberIDs.map { id in
            guard let raft = nodes[id]!.raft else { return "\(id): down" }
            var text = "\(id): \(raft.role) t\(raft.term) commit \(raft.commitIndex) applied \(raft.appliedIndex) last \(raft.lastIndex)"
            if let tracked = leader?.progress[id] { text += " [\(tracked.state) match \(tracked.match) next \(tracked.next)]" }
            return text
        }.joined(separator: "; ")
    }

    func trace(_ text: @autoclosure () -> String) {
        if tracing { report.trace.append("step \(step) t\(step / Self.stepsPerTick): \(text())") }
    }
}

/// Where a node can die while carrying out a `Ready`.
public enum CrashPoint: String, CaseIterable, Sendable {
    /// Nothing of the batch persisted or sent.
    case beforePersist
    /// Part of the batch persisted (a prefix of the entries; no hard state), nothing sent.
    case tornWrite
    /// The batch is durable but no message left.
    case afterPersist
    /// Durable and sent, but not applied or acknowledged to the core.
    case afterSend
}

extension SplitMix64 {
    mutating func chance(_ probability: Double) -> Bool {
        guard probability > 0 else { return false }
        return Double(next() >> 11) / Double(1 << 53) < probability
    }

    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
