import Foundation
public import Logging
public import Raft
import RaftStorage
import RaftTransport
import WireCoding

/// One node of a Fulcrum cluster: drives the Raft core with a clock, SQLite storage and the TCP
/// transport, and applies committed entries to a ``ReplicatedStateMachine``.
///
/// This file holds the node's state and its Ready loop. Every `Ready` is carried out in the
/// order Raft requires: persisted (one fsynced transaction), then sent, then applied. The
/// callers' side — proposals, reads, applied-index waits — is in `ClusterNode+Proposals.swift`;
/// membership and leadership transfer in `ClusterNode+Membership.swift`.
///
/// The state machine is not the actor's: it sits behind a lock of its own (``MachineCell``),
/// which the Ready loop takes to apply entries and readers take to read or route. A reader
/// therefore never queues behind the actor, and the actor's fsyncs never delay a routing
/// decision; the lock is held only for applying entries or for one decision.
public actor ClusterNode<Machine: ReplicatedStateMachine> {
    public nonisolated let id: NodeID
    public nonisolated let settings: NodeSettings
    let cell: MachineCell<Machine>

    var raft: RaftNode
    let storage: RaftDatabase
    /// Role, leader and term as they change, for the serving layer.
    public nonisolated let leadershipFeed: LeadershipFeed
    /// Peer messages dropped before the core, by reason (``RaftNode/screen(_:)``).
    public nonisolated let droppedMessages = DropCounts()
    /// Fsyncs, applies, snapshots and campaigns as they happen (for metrics).
    public nonisolated let events = NodeEvents()
    /// Peer connections the transport refused or closed for cause, by reason.
    public nonisolated var peerRefusals: [String: Int] { transport.refusals.snapshot }
    let transport: RaftTransport
    var logger: Logger
    var addresses: AddressBook
    /// Proposers, readers and applied-index waiters; an entry of the runtime's own has no outcome.
    var waiters = Waiters<Machine.Outcome?>()
    private var appliedSinceSnapshot = 0
    private var flushScheduled = false
    private var heartbeatsInFlight: [NodeID: ContinuousClock.Instant] = [:]

    typealias Tag = LogEntryTag

    public init(settings: NodeSettings, machine: Machine, logger: Logger = Logger(label: "fulcrum.cluster")) throws {
        try FileManager.default.createDirectory(atPath: settings.dataDirectory, withIntermediateDirectories: true)
        let storage = try RaftDatabase(
            path: settings.dataDirectory + "/raft.sqlite", clusterID: settings.clusterID,
            options: .init(durability: settings.durability)
        )
        let id = try Self.resolveNodeID(settings: settings, storage: storage)
        if try storage.isEmpty() && !settings.bootstrap.isEmpty {
            guard settings.bootstrap[id] != nil else {
                throw ClusterError(.rejected, "node \(id) is not in the bootstrap member list \(settings.bootstrap.keys.sorted())")
            }
            try storage.initialize(with: .bootstrap(ConfState(voters: Array(settings.bootstrap.keys))))
        }
        let persisted = try storage.load()
        self.id = id
        self.settings = settings
        self.storage = storage
        let raft = try RaftNode(id: id, settings: settings.raft, state: persisted, seed: UInt64.random(in: 1...UInt64.max))
        self.raft = raft
        self.leadershipFeed = LeadershipFeed(Leadership(
            isLeader: false, leader: raft.leader == .none ? nil : raft.leader, term: raft.term,
            appliedIndex: raft.appliedIndex, commitIndex: raft.commitIndex
        ))
        var logger = logger
        logger[metadataKey: "node"] = "\(id)"
        self.logger = logger
        var machine = machine
        var configured = settings.bootstrap
        configured[id] = settings.advertised
        var addresses = AddressBook(configured: configured)
        if persisted.snapshot.metadata.index > 0 {
            try Self.restore(persisted.snapshot, into: &machine, addresses: &addresses)
        }
        self.cell = MachineCell(machine)
        self.addresses = addresses
        self.transport = try RaftTransport(
            nodeID: id, clusterID: settings.clusterID, listen: settings.peerListen, advertise: settings.peerAdvertise,
            settings: settings.transport, logger: logger
        )
        transport.setPeers(addresses.all)
    }

    /// A founder's id comes from the settings; a joiner's is generated once and kept with its
    /// log, so a node never changes identity and an id is never reused.
    private static func resolveNodeID(settings: NodeSettings, storage: RaftDatabase) throws -> NodeID {
        if let stored = try storage.metadata("node_id").flatMap(UInt64.init) {
            if let configured = settings.nodeID, configured != stored {
                throw ClusterError(.rejected, "\(storage.path) belongs to node \(stored), not \(configured)")
            }
            return stored
        }
        let id = settings.nodeID ?? UInt64.random(in: 1...(UInt64(1) << 53))
        try storage.setMetadata("node_id", String(id))
        return id
    }

    // MARK: Running

    /// Runs the node until the task is cancelled or storage fails.
    public func run() async throws {
        logger.info("starting", metadata: ["term": "\(raft.term)", "last_index": "\(raft.lastIndex)"])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.transport.run() }
            group.addTask {
                for await batch in self.transport.incoming {
                    try await self.step(batch)
                }
            }
            group.addTask {
                let clock = ContinuousClock()
                var deadline = clock.now
                while !Task.isCancelled {
                    deadline = Self.nextTick(after: deadline, now: clock.now, every: self.settings.tick)
                    try await Task.sleep(until: deadline, clock: clock)
                    try await self.tick()
                }
            }
            do {
                try await group.next()
            } catch {
                group.cancelAll()
                self.fail(error)
                throw error
            }
            group.cancelAll()
        }
        fail(CancellationError())
    }

    /// When the tick after `previous` is due. After a stall (a paused process, a slow fsync)
    /// the missed ticks are skipped, not fired back to back: a burst would run out the election
    /// timeout at once, before the messages that arrived during the stall are stepped.
    static func nextTick(after previous: ContinuousClock.Instant, now: ContinuousClock.Instant, every tick: Duration) -> ContinuousClock.Instant {
        max(previous.advanced(by: tick), now)
    }

    /// Runs `body` with the state machine in place, without a copy and without the actor: a
    /// lock of its own guards the machine, so a reader waits at most for the entries being
    /// applied, never for the log's fsync. For the machine's local, non-replicated parts (a
    /// router's reservations, say) `body` may write: it must leave alone everything `apply`
    /// replicates, or replicas diverge. `Leadership` is as of the latest Ready carried out.
    public nonisolated func withMachine<Result: Sendable, Failure: Error>(
        _ body: (inout Machine, Leadership) throws(Failure) -> Result
    ) async throws(Failure) -> Result {
        let leadership = leadershipFeed.current.leadership
        return try cell.withLock { machine throws(Failure) in try body(&machine, leadership) }
    }

    /// Who leads, as this node knows it; cheaper than ``status()``.
    public func leadership() -> Leadership {
        Leadership(
            isLeader: raft.role == .leader, leader: raft.leader == .none ? nil : raft.leader, term: raft.term,
            appliedIndex: raft.appliedIndex, commitIndex: raft.commitIndex
        )
    }

    /// The peer port the transport is bound to (useful with port 0).
    public nonisolated var boundPeerPort: Int? { transport.boundPort }

    // A node that failed (its log could not be written) stops at its next tick or message: it
    // must neither vote nor acknowledge again, and its run ends, so the process exits.
    private func tick() throws {
        try drive { raft in raft.tick() }
    }

    /// Steps a batch from the transport; what the core must not see is dropped, logged and
    /// counted first.
    private func step(_ messages: [Message]) throws {
        noteHeartbeatResponses(messages)
        var dropped: [(Message, MessageDropReason)] = []
        try drive { raft in
            for message in messages {
                if let reason = raft.screen(message) {
                    dropped.append((message, reason))
                } else if let snapshot = message.snapshot, !Self.canRestore(snapshot.data) {
                    // Checked before the core sees it: the core would have it persisted, and
                    // a snapshot this node cannot read would then replace its log for good.
                    dropped.append((message, .snapshot))
                } else {
                    raft.step(message)
                }
            }
        }
        for (message, reason) in dropped {
            let count = droppedMessages.record(reason)
            if count.isPowerOfTwo {
                logger.warning("dropped a peer message", metadata: [
                    "reason": "\(reason.rawValue)", "message": "\(message)", "dropped_so_far": "\(count)",
                ])
            }
        }
    }

    /// The way into the core: a failed node refuses; otherwise `body` drives the core, and
    /// what it produced is carried out by the next flush. Inputs that arrive together
    /// (messages, ticks, proposals) leave together: one fsync for all of them (group commit).
    @discardableResult
    func drive<T>(_ body: (inout RaftNode) throws -> T) throws -> T {
        if let failure = waiters.failure { throw failure }
        let result = try body(&raft)
        scheduleFlush()
        return result
    }

    /// When the oldest unanswered heartbeat to each peer left: a peer's answer to it is one
    /// round trip (`NodeEvent.peerRoundTrip`). Only peers this node sent heartbeats to are
    /// kept, so the map is bounded by the membership.
    private func noteHeartbeats(_ messages: [Message]) {
        let now = ContinuousClock.now
        for message in messages where message.kind == .heartbeat && heartbeatsInFlight[message.to] == nil {
            heartbeatsInFlight[message.to] = now
        }
    }

    private func noteHeartbeatResponses(_ messages: [Message]) {
        guard !heartbeatsInFlight.isEmpty else { return }
        for message in messages where message.kind == .heartbeatResponse {
            guard let sent = heartbeatsInFlight.removeValue(forKey: message.from) else { continue }
            events.emit(.peerRoundTrip(peer: message.from, .now - sent))
        }
        if raft.role != .leader { heartbeatsInFlight = [:] }
    }

    func fail(_ error: any Error) {
        waiters.fail(ClusterError(.stopped, "node \(id) stopped: \(error)"))
        leadershipFeed.finish()
    }

    /// Carries out every pending `Ready`: persist, send, apply, advance.
    private func processReady() throws {
        if let failure = waiters.failure { throw failure }
        while raft.hasReady {
            let ready = raft.ready()
            // A leader's appends leave while it writes them (its own entries count only once
            // durable); everything else is persisted first.
            noteHeartbeats(ready.messages)
            if ready.mayGoBeforePersist { transport.send(ready.messages) }
            // A batch that only moves the commit index need not be durable (a restarted node
            // relearns it); skipping it saves an fsync per acknowledgement on the leader.
            if ready.mustSync || !ready.entries.isEmpty || ready.snapshot != nil {
                let started = ContinuousClock.now
                try storage.persist(ready)
                events.emit(.persisted(.now - started))
            }
            if !ready.mayGoBeforePersist { transport.send(ready.messages) }
            var becameLeader = false
            if let soft = ready.softState {
                logger.info("role changed", metadata: ["role": "\(soft.role)", "leader": "\(soft.leader)", "term": "\(raft.term)"])
                becameLeader = soft.role == .leader
                if soft.role == .candidate { events.emit(.campaign) }
            }
            if let snapshot = ready.snapshot {
                let (book, state) = try SnapshotEnvelope.decode(snapshot.data)
                try cell.withLock { machine in try machine.restore(from: state) }
                addresses.adopt(book)
                appliedSinceSnapshot = 0
            }
            if !ready.committedEntries.isEmpty {
                let started = ContinuousClock.now
                apply(ready.committedEntries)
                events.emit(.applied(entries: ready.committedEntries.count, .now - started))
            }
            for state in ready.readStates { confirmRead(state) }
            let membersBefore = raft.confState
            raft.advance(ready)
            if raft.confState != membersBefore || ready.snapshot != nil { refreshPeers() }
            waiters.wake(appliedUpTo: raft.appliedIndex)
            leadershipFeed.publish(leadership())
            if appliedSinceSnapshot >= settings.snapshotEntries { try takeSnapshot() }
            if becameLeader { announceAddresses() }
        }
    }

    /// Carries out the pending `Ready` soon rather than now, so that proposals arriving together
    /// share one fsync and one append per follower (group commit).
    func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        Task { self.flush() }
    }

    private func flush() {
        flushScheduled = false
        do { try processReady() } catch { fail(error) }
    }

    /// A new leader writes into the log the addresses of members the log does not hold yet
    /// (founders start with theirs from configuration), so members added later can reach them.
    private func announceAddresses() {
        for (member, address) in addresses.unannounced(among: raft.confState.allMembers) {
            _ = try? raft.propose([Tag.memberAddress.rawValue] + ClusterLog.memberAddress(member, address))
        }
    }

    /// Applies committed entries under one hold of the machine's lock, then hands each
    /// proposer its outcome.
    private func apply(_ entries: [Entry]) {
        guard !entries.isEmpty else { return }
        appliedSinceSnapshot += entries.count
        var learned: [(NodeID, PeerAddress)] = []
        let outcomes = cell.withLock { machine -> [Machine.Outcome?] in
            entries.map { entry -> Machine.Outcome? in
                guard entry.kind == .normal, let first = entry.data.first else { return nil }
                let payload = Array(entry.data.dropFirst())
                switch Tag(rawValue: first) {
                case .application:
                    return machine.apply(payload, at: entry.index)
                case .memberAddress:
                    if let pair = ClusterLog.decodeMemberAddress(payload) { learned.append(pair) }
                    return nil
                case nil:
                    return nil
                }
            }
        }
        for (entry, outcome) in zip(entries, outcomes) {
            if entry.kind == .normal, let first = entry.data.first, Tag(rawValue: first) == nil {
                logger.error("skipping an entry with an unknown tag", metadata: ["index": "\(entry.index)", "tag": "\(first)"])
            }
            waiters.applied(index: entry.index, term: entry.term, outcome: outcome)
        }
        for (member, address) in learned { addresses.learn(member, at: address) }
        if !learned.isEmpty { refreshPeers() }
    }

    func refreshPeers() {
        let (known, unknown) = addresses.peers(for: Set(raft.confState.allMembers), own: id)
        transport.setPeers(known, keeping: unknown)
    }

    private func takeSnapshot() throws {
        let started = ContinuousClock.now
        let state = cell.withLock { machine in machine.snapshot() }
        let data = SnapshotEnvelope.encode(addresses: addresses.replicated, state: state)
        let snapshot = try raft.takeSnapshot(data: data)
        try storage.compact(to: snapshot)
        appliedSinceSnapshot = 0
        events.emit(.snapshot(bytes: data.count, .now - started))
        logger.debug("snapshot taken", metadata: ["index": "\(snapshot.metadata.index)", "bytes": "\(data.count)"])
    }

    /// Whether a peer's snapshot decodes: its envelope, and the state machine's part.
    static func canRestore(_ data: [UInt8]) -> Bool {
        guard let (_, state) = try? SnapshotEnvelope.decode(data) else { return false }
        return (try? Machine.validate(snapshot: state)) != nil
    }

    /// Restores the state machine and the address book from a snapshot.
    static func restore(_ snapshot: Snapshot, into machine: inout Machine, addresses: inout AddressBook) throws {
        let (book, state) = try SnapshotEnvelope.decode(snapshot.data)
        try machine.restore(from: state)
        addresses.adopt(book)
    }

    /// Forces a snapshot now (compacting the log).
    public func snapshotNow() throws -> LogIndex {
        guard raft.appliedIndex > raft.firstIndex - 1 else { return raft.firstIndex - 1 }
        try takeSnapshot()
        return raft.firstIndex - 1
    }

    // MARK: Status

    public func status() -> NodeStatus {
        let leader = raft.leader
        let members = raft.confState.allMembers.map { member in
            NodeStatus.Member(
                id: member, address: addresses[member]?.description ?? "",
                voter: raft.confState.isVoter(member), match: raft.role == .leader ? raft.progress[member]?.match : nil
            )
        }
        return NodeStatus(
            id: id, clusterID: settings.clusterID, role: raft.role.rawValue, term: raft.term,
            leader: leader == .none ? nil : leader, leaderAddress: leader == .none ? nil : addresses[leader]?.description,
            commitIndex: raft.commitIndex, appliedIndex: raft.appliedIndex, lastIndex: raft.lastIndex,
            firstIndex: raft.firstIndex, members: members
        )
    }
}
