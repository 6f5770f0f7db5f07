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
public actor ClusterNode<Machine: ReplicatedStateMachine> {
    public nonisolated let id: NodeID
    public nonisolated let settings: NodeSettings
    public internal(set) var machine: Machine

    var raft: RaftNode
    let storage: RaftDatabase
    /// Disk writes, on a thread of their own (see ``StorageWriter``).
    let writer: StorageWriter
    /// Role, leader and term as they change, for the serving layer.
    public nonisolated let leadershipFeed: LeadershipFeed
    let transport: RaftTransport
    var logger: Logger
    var addresses: AddressBook
    /// Proposers, readers and applied-index waiters; an entry of the runtime's own has no outcome.
    var waiters = Waiters<Machine.Outcome?>()
    private var appliedSinceSnapshot = 0
    private var flushScheduled = false
    /// True while the node writes to disk (a Ready between `ready()` and `advance()`, or a
    /// snapshot): the core takes no input until the write is durable, but the actor stays free
    /// for readers of the state machine.
    private var writing = false
    private var quiescenceWaiters: [CheckedContinuation<Void, Never>] = []

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
        self.writer = StorageWriter(database: storage, label: "fulcrum.storage.\(id)")
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
        self.machine = machine
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
                    deadline = deadline.advanced(by: self.settings.tick)
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

    /// Runs `body` with the state machine on the node's executor, without a copy. For the
    /// machine's local, non-replicated parts (a router's reservations, say): `body` must leave
    /// alone everything `apply` replicates, or replicas diverge.
    public func withMachine<Result: Sendable, Failure: Error>(
        _ body: (inout Machine, Leadership) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(&machine, leadership())
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
    private func tick() async throws {
        try await drive { raft in raft.tick() }
    }

    private func step(_ messages: [Message]) async throws {
        try await drive { raft in for message in messages { raft.step(message) } }
    }

    /// The way into the core: waits out a disk write in progress (a failed node refuses), lets
    /// `body` drive the core, then carries out what it produced.
    @discardableResult
    func drive<T>(_ body: (inout RaftNode) throws -> T) async throws -> T {
        try await untilQuiescent()
        let result = try body(&raft)
        try await processReady()
        return result
    }

    /// Returns once no disk write is in progress, so the core may take input; throws once the
    /// node failed.
    func untilQuiescent() async throws {
        while writing { await withCheckedContinuation { quiescenceWaiters.append($0) } }
        if let failure = waiters.failure { throw failure }
    }

    /// Runs `body`, which writes to disk, with the core closed to input.
    private func exclusively<T>(_ body: () async throws -> T) async throws -> T {
        precondition(!writing, "node \(id): overlapping disk writes")
        writing = true
        defer {
            writing = false
            let waiting = quiescenceWaiters
            quiescenceWaiters = []
            for waiter in waiting { waiter.resume() }
        }
        return try await body()
    }

    func fail(_ error: any Error) {
        waiters.fail(ClusterError(.stopped, "node \(id) stopped: \(error)"))
        leadershipFeed.finish()
    }

    /// Carries out every pending `Ready`: persist, send, apply, advance. The persisting awaits
    /// the storage thread; meanwhile the actor serves readers of the state machine.
    private func processReady() async throws {
        if let failure = waiters.failure { throw failure }
        guard raft.hasReady else { return }
        try await exclusively {
            while raft.hasReady {
                let ready = raft.ready()
                // A leader's appends leave while it writes them (its own entries count only once
                // durable); everything else is persisted first.
                if ready.mayGoBeforePersist { transport.send(ready.messages) }
                // A batch that only moves the commit index need not be durable (a restarted node
                // relearns it); skipping it saves an fsync per acknowledgement on the leader.
                if ready.mustSync || !ready.entries.isEmpty || ready.snapshot != nil {
                    do {
                        try await writer.persist(ready)
                    } catch {
                        fail(error)
                        throw error
                    }
                }
                if !ready.mayGoBeforePersist { transport.send(ready.messages) }
                var becameLeader = false
                if let soft = ready.softState {
                    logger.info("role changed", metadata: ["role": "\(soft.role)", "leader": "\(soft.leader)", "term": "\(raft.term)"])
                    becameLeader = soft.role == .leader
                }
                if let snapshot = ready.snapshot {
                    try Self.restore(snapshot, into: &machine, addresses: &addresses)
                    appliedSinceSnapshot = 0
                }
                for entry in ready.committedEntries { apply(entry) }
                for state in ready.readStates { confirmRead(state) }
                let membersBefore = raft.confState
                raft.advance(ready)
                if raft.confState != membersBefore || ready.snapshot != nil { refreshPeers() }
                waiters.wake(appliedUpTo: raft.appliedIndex)
                leadershipFeed.publish(leadership())
                if appliedSinceSnapshot >= settings.snapshotEntries { try await takeSnapshot() }
                if becameLeader { announceAddresses() }
            }
        }
    }

    /// Carries out the pending `Ready` soon rather than now, so that proposals arriving together
    /// share one fsync and one append per follower (group commit).
    func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        Task { await self.flush() }
    }

    private func flush() async {
        flushScheduled = false
        do {
            try await untilQuiescent()
            try await processReady()
        } catch {
            fail(error)
        }
    }

    /// A new leader writes into the log the addresses of members the log does not hold yet
    /// (founders start with theirs from configuration), so members added later can reach them.
    private func announceAddresses() {
        for (member, address) in addresses.unannounced(among: raft.confState.allMembers) {
            _ = try? raft.propose([Tag.memberAddress.rawValue] + ClusterLog.memberAddress(member, address))
        }
    }

    private func apply(_ entry: Entry) {
        appliedSinceSnapshot += 1
        var outcome: Machine.Outcome?
        if entry.kind == .normal, let first = entry.data.first {
            let payload = Array(entry.data.dropFirst())
            switch Tag(rawValue: first) {
            case .application:
                outcome = machine.apply(payload, at: entry.index)
            case .memberAddress:
                if let (member, address) = ClusterLog.decodeMemberAddress(payload) {
                    addresses.learn(member, at: address)
                    refreshPeers()
                }
            case nil:
                logger.error("skipping an entry with an unknown tag", metadata: ["index": "\(entry.index)", "tag": "\(first)"])
            }
        }
        waiters.applied(index: entry.index, term: entry.term, outcome: outcome)
    }

    func refreshPeers() {
        let (known, unknown) = addresses.peers(for: Set(raft.confState.allMembers), own: id)
        transport.setPeers(known, keeping: unknown)
    }

    /// Snapshots the applied state and compacts the log; the caller holds the disk.
    private func takeSnapshot() async throws {
        let data = SnapshotEnvelope.encode(addresses: addresses.replicated, state: machine.snapshot())
        let snapshot = try raft.takeSnapshot(data: data)
        do {
            try await writer.compact(to: snapshot)
        } catch {
            fail(error)
            throw error
        }
        appliedSinceSnapshot = 0
        logger.debug("snapshot taken", metadata: ["index": "\(snapshot.metadata.index)", "bytes": "\(data.count)"])
    }

    /// Restores the state machine and the address book from a snapshot.
    static func restore(_ snapshot: Snapshot, into machine: inout Machine, addresses: inout AddressBook) throws {
        let (book, state) = try SnapshotEnvelope.decode(snapshot.data)
        try machine.restore(from: state)
        addresses.adopt(book)
    }

    /// Forces a snapshot now (compacting the log).
    public func snapshotNow() async throws -> LogIndex {
        try await untilQuiescent()
        guard raft.appliedIndex > raft.firstIndex - 1 else { return raft.firstIndex - 1 }
        try await exclusively { try await takeSnapshot() }
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
