import Foundation
public import Logging
public import Raft
import RaftStorage
public import RaftTransport
import WireCoding

/// One node of a Fulcrum cluster: drives the Raft core with a clock, SQLite storage and the TCP
/// transport, and applies committed entries to a ``ReplicatedStateMachine``.
///
/// Every `Ready` is carried out in the order Raft requires: persisted (one fsynced
/// transaction), then sent, then applied. Proposals wait for their entry to apply; reads wait
/// for a ReadIndex confirmation; membership and leadership changes go through the log.
public actor ClusterNode<Machine: ReplicatedStateMachine> {
    public nonisolated let id: NodeID
    public nonisolated let settings: NodeSettings
    public private(set) var machine: Machine

    private var raft: RaftNode
    let storage: RaftDatabase
    private let transport: RaftTransport
    private var logger: Logger
    /// Peer addresses, replicated through the log so every member can dial every other.
    private var addresses: [NodeID: PeerAddress]
    /// The part of `addresses` that came through the log (or a snapshot of it).
    private var replicatedAddresses: [NodeID: PeerAddress] = [:]
    private var proposals: [LogIndex: (term: Term, continuation: CheckedContinuation<[UInt8], any Error>)] = [:]
    private var reads: [UInt64: CheckedContinuation<LogIndex, any Error>] = [:]
    private var appliedWaiters: [(id: UInt64, index: LogIndex, continuation: CheckedContinuation<Void, any Error>)] = []
    private var nextWaiterID: UInt64 = 1
    private var nextReadID: UInt64 = 1
    private var appliedSinceSnapshot = 0
    private var flushScheduled = false
    private var failure: ClusterError?

    /// Entry payloads start with a tag: application commands, or the runtime's own records.
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
        self.raft = try RaftNode(id: id, settings: settings.raft, state: persisted, seed: UInt64.random(in: 1...UInt64.max))
        var logger = logger
        logger[metadataKey: "node"] = "\(id)"
        self.logger = logger
        var machine = machine
        var replicatedBook: [NodeID: PeerAddress] = [:]
        var addresses = settings.bootstrap
        addresses[id] = settings.advertised
        if persisted.snapshot.metadata.index > 0 {
            replicatedBook = try Self.restore(persisted.snapshot, into: &machine, addresses: &addresses)
        }
        self.machine = machine
        self.addresses = addresses
        self.replicatedAddresses = replicatedBook
        self.transport = try RaftTransport(
            nodeID: id, clusterID: settings.clusterID, listen: settings.peerListen, advertise: settings.peerAdvertise,
            settings: settings.transport, logger: logger
        )
        transport.setPeers(addresses)
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
    private func tick() throws {
        if let failure { throw failure }
        raft.tick()
        try processReady()
    }

    private func step(_ messages: [Message]) throws {
        if let failure { throw failure }
        for message in messages { raft.step(message) }
        try processReady()
    }

    private func fail(_ error: any Error) {
        let reason = ClusterError(.stopped, "node \(id) stopped: \(error)")
        failure = reason
        for (_, proposal) in proposals { proposal.continuation.resume(throwing: reason) }
        proposals = [:]
        for (_, read) in reads { read.resume(throwing: reason) }
        reads = [:]
        for waiter in appliedWaiters { waiter.continuation.resume(throwing: reason) }
        appliedWaiters = []
    }

    /// Carries out every pending `Ready`: persist, send, apply, advance.
    private func processReady() throws {
        if let failure { throw failure }
        while raft.hasReady {
            let ready = raft.ready()
            // A leader's appends leave while it writes them (its own entries count only once
            // durable); everything else is persisted first.
            if ready.mayGoBeforePersist { transport.send(ready.messages) }
            // A batch that only moves the commit index need not be durable (a restarted node
            // relearns it); skipping it saves an fsync per acknowledgement on the leader.
            if ready.mustSync || !ready.entries.isEmpty || ready.snapshot != nil {
                try storage.persist(ready)
            }
            if !ready.mayGoBeforePersist { transport.send(ready.messages) }
            var becameLeader = false
            if let soft = ready.softState {
                logger.info("role changed", metadata: ["role": "\(soft.role)", "leader": "\(soft.leader)", "term": "\(raft.term)"])
                becameLeader = soft.role == .leader
            }
            if let snapshot = ready.snapshot {
                replicatedAddresses = try Self.restore(snapshot, into: &machine, addresses: &addresses)
                appliedSinceSnapshot = 0
            }
            for entry in ready.committedEntries { apply(entry) }
            for state in ready.readStates { completeRead(state) }
            let membersBefore = raft.confState
            raft.advance(ready)
            if raft.confState != membersBefore || ready.snapshot != nil { refreshPeers() }
            wakeAppliedWaiters()
            if appliedSinceSnapshot >= settings.snapshotEntries { try takeSnapshot() }
            if becameLeader { publishMissingAddresses() }
        }
    }

    /// A new leader writes into the log the addresses of members the log does not hold yet
    /// (founders start with theirs from configuration), so members added later can reach them.
    private func publishMissingAddresses() {
        for member in raft.confState.allMembers {
            guard let address = addresses[member], replicatedAddresses[member] != address else { continue }
            var writer = ByteWriter()
            writer.write(member)
            writer.write(address.description)
            _ = try? raft.propose([Tag.memberAddress.rawValue] + writer.bytes)
        }
    }

    private func apply(_ entry: Entry) {
        var result: [UInt8] = []
        if entry.kind == .normal, let first = entry.data.first {
            let payload = Array(entry.data.dropFirst())
            switch Tag(rawValue: first) {
            case .application:
                result = machine.apply(payload, at: entry.index)
            case .memberAddress:
                var reader = ByteReader(payload)
                if let member = try? reader.readUInt64(), let text = try? reader.readString(), let address = PeerAddress(text) {
                    addresses[member] = address
                    replicatedAddresses[member] = address
                    refreshPeers()
                }
            case nil:
                logger.error("skipping an entry with an unknown tag", metadata: ["index": "\(entry.index)", "tag": "\(first)"])
            }
        }
        appliedSinceSnapshot += 1
        if let proposal = proposals.removeValue(forKey: entry.index) {
            if proposal.term == entry.term {
                proposal.continuation.resume(returning: result)
            } else {
                proposal.continuation.resume(throwing: ClusterError(.dropped, "entry \(entry.index) was replaced by a new leader"))
            }
        }
    }

    private func refreshPeers() {
        let members = Set(raft.confState.allMembers)
        transport.setPeers(
            addresses.filter { members.contains($0.key) || $0.key == id },
            keeping: members.filter { addresses[$0] == nil }
        )
    }

    private func takeSnapshot() throws {
        let data = Self.encodeSnapshot(addresses: replicatedAddresses, state: machine.snapshot())
        let snapshot = try raft.takeSnapshot(data: data)
        try storage.compact(to: snapshot)
        appliedSinceSnapshot = 0
        logger.debug("snapshot taken", metadata: ["index": "\(snapshot.metadata.index)", "bytes": "\(data.count)"])
    }

    /// Restores the state machine and the address book from a snapshot; returns the book.
    static func restore(
        _ snapshot: Snapshot, into machine: inout Machine, addresses: inout [NodeID: PeerAddress]
    ) throws -> [NodeID: PeerAddress] {
        let (book, state) = try decodeSnapshot(snapshot.data)
        try machine.restore(from: state)
        addresses.merge(book) { _, replicated in replicated }
        return book
    }

    static func encodeSnapshot(addresses: [NodeID: PeerAddress], state: [UInt8]) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(UInt8(1))
        writer.write(addresses.keys.sorted()) { writer, id in
            writer.write(id)
            writer.write(addresses[id]!.description)
        }
        writer.write(bytes: state)
        return writer.bytes
    }

    static func decodeSnapshot(_ data: [UInt8]) throws -> ([NodeID: PeerAddress], [UInt8]) {
        var reader = ByteReader(data)
        guard try reader.readByte() == 1 else { throw DecodingError("unknown snapshot envelope") }
        var book: [NodeID: PeerAddress] = [:]
        for (id, text) in try reader.readArray(minimumBytes: 2, { reader throws(DecodingError) in
            (try reader.readUInt64(), try reader.readString())
        }) {
            guard let address = PeerAddress(text) else { throw DecodingError("bad peer address '\(text)'") }
            book[id] = address
        }
        let state = try reader.readBytes()
        try reader.expectEnd()
        return (book, state)
    }

    // MARK: Proposals and reads

    private func notLeader() -> ClusterError {
        let leader = raft.leader
        return ClusterError(
            .notLeader, leader == .none ? "no leader is known" : "node \(leader) leads",
            leader: leader == .none ? nil : leader, leaderAddress: leader == .none ? nil : addresses[leader]
        )
    }

    /// Replicates `command` and returns the state machine's result once it applied here.
    public func propose(_ command: [UInt8]) async throws -> [UInt8] {
        try await proposeTagged(.application, command)
    }

    private func proposeTagged(_ tag: Tag, _ payload: [UInt8]) async throws -> [UInt8] {
        if let failure { throw failure }
        guard raft.role == .leader else { throw notLeader() }
        let position: (index: LogIndex, term: Term)
        do {
            position = try raft.propose([tag.rawValue] + payload)
        } catch {
            throw ClusterError(.rejected, error.message)
        }
        return try await waitForApply(index: position.index, term: position.term)
    }

    private func waitForApply(index: LogIndex, term: Term) async throws -> [UInt8] {
        let timeout = settings.proposalTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.expireProposal(index: index, term: term)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            proposals[index] = (term, continuation)
            scheduleFlush()
        }
    }

    /// Carries out the pending `Ready` soon rather than now, so that proposals arriving together
    /// share one fsync and one append per follower (group commit).
    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        Task { self.flush() }
    }

    private func flush() {
        flushScheduled = false
        do { try processReady() } catch { fail(error) }
    }

    private func expireProposal(index: LogIndex, term: Term) {
        guard let proposal = proposals[index], proposal.term == term else { return }
        proposals[index] = nil
        proposal.continuation.resume(throwing: ClusterError(.timeout, "entry \(index) not applied within \(settings.proposalTimeout)"))
    }

    /// Waits until this node has applied everything committed before the call (ReadIndex, §6.4);
    /// reads of the state machine after it are linearizable.
    public func readBarrier() async throws {
        if let failure { throw failure }
        let readID = nextReadID
        nextReadID += 1
        var writer = ByteWriter()
        writer.write(id)
        writer.write(readID)
        do {
            try raft.readIndex(context: writer.bytes)
        } catch {
            throw notLeader()
        }
        let timeout = settings.proposalTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.expireRead(readID)
        }
        defer { timer.cancel() }
        let index = try await withCheckedThrowingContinuation { continuation in
            reads[readID] = continuation
            do { try processReady() } catch { fail(error) }
        }
        try await waitUntilApplied(index)
    }

    private func completeRead(_ state: ReadState) {
        var reader = ByteReader(state.context)
        guard (try? reader.readUInt64()) == id, let readID = try? reader.readUInt64(),
            let continuation = reads.removeValue(forKey: readID)
        else { return }
        continuation.resume(returning: state.index)
    }

    private func expireRead(_ readID: UInt64) {
        reads.removeValue(forKey: readID)?.resume(throwing: ClusterError(.timeout, "read index not confirmed in time"))
    }

    /// Waits until this node applied `index`, at most `timeout` (default: the proposal timeout).
    public func waitUntilApplied(_ index: LogIndex, timeout: Duration? = nil) async throws {
        if raft.appliedIndex >= index { return }
        if let failure { throw failure }
        let waiterID = nextWaiterID
        nextWaiterID += 1
        let limit = timeout ?? settings.proposalTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: limit)
            await self?.expireAppliedWaiter(waiterID, index: index, after: limit)
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { continuation in
            appliedWaiters.append((waiterID, index, continuation))
        }
    }

    private func expireAppliedWaiter(_ waiterID: UInt64, index: LogIndex, after limit: Duration) {
        guard let position = appliedWaiters.firstIndex(where: { $0.id == waiterID }) else { return }
        let waiter = appliedWaiters.remove(at: position)
        waiter.continuation.resume(throwing: ClusterError(
            .timeout, "index \(index) not applied within \(limit) (applied \(raft.appliedIndex))"
        ))
    }

    private func wakeAppliedWaiters() {
        guard !appliedWaiters.isEmpty else { return }
        let applied = raft.appliedIndex
        let ready = appliedWaiters.filter { $0.index <= applied }
        appliedWaiters.removeAll { $0.index <= applied }
        for waiter in ready { waiter.continuation.resume() }
    }

    // MARK: Membership and leadership

    /// Adds a node as a learner: it receives the log (or a snapshot) but does not vote.
    public func addLearner(_ member: NodeID, address: PeerAddress) async throws {
        guard member != .none else { throw ClusterError(.rejected, "node id 0 is reserved") }
        guard !raft.confState.allMembers.contains(member) else {
            throw ClusterError(.rejected, "node \(member) is already a member")
        }
        var writer = ByteWriter()
        writer.write(member)
        writer.write(address.description)
        _ = try await proposeTagged(.memberAddress, writer.bytes)
        try await changeMembership(.addLearner(member))
    }

    /// Makes a caught-up learner a voter.
    public func promote(_ member: NodeID, maxLag: LogIndex = 1_000) async throws {
        guard raft.confState.isLearner(member) else { throw ClusterError(.rejected, "node \(member) is not a learner") }
        guard raft.role == .leader else { throw notLeader() }
        let match = raft.progress[member]?.match ?? 0
        guard match + maxLag >= raft.commitIndex else {
            throw ClusterError(.rejected, "node \(member) is not caught up (match \(match), commit \(raft.commitIndex))")
        }
        try await changeMembership(.addVoter(member))
    }

    public func remove(_ member: NodeID) async throws {
        guard raft.confState.allMembers.contains(member) else { throw ClusterError(.rejected, "node \(member) is not a member") }
        try await changeMembership(.removeNode(member))
    }

    private func changeMembership(_ change: ConfChange) async throws {
        if let failure { throw failure }
        guard raft.role == .leader else { throw notLeader() }
        let index: LogIndex
        do {
            index = try raft.proposeConfChange(change)
        } catch {
            throw ClusterError(.rejected, error.message)
        }
        _ = try await waitForApply(index: index, term: raft.term)
    }

    /// Hands leadership to `target`, or to the most caught-up other voter; returns the new leader.
    @discardableResult
    public func transferLeadership(to target: NodeID? = nil, timeout: Duration = .seconds(3)) async throws -> NodeID {
        guard raft.role == .leader else { throw notLeader() }
        let voters = raft.confState.voters.filter { $0 != id }
        guard let chosen = target ?? voters.max(by: { (raft.progress[$0]?.match ?? 0) < (raft.progress[$1]?.match ?? 0) }) else {
            throw ClusterError(.rejected, "no other voter to hand leadership to")
        }
        guard raft.confState.voters.contains(chosen), chosen != id else {
            throw ClusterError(.rejected, "node \(chosen) is not another voter")
        }
        do { try raft.transferLeadership(to: chosen) } catch { throw ClusterError(.rejected, error.message) }
        try processReady()
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            if raft.leader == chosen { return chosen }
            try await Task.sleep(for: settings.tick)
        }
        throw ClusterError(.timeout, "node \(chosen) did not take over within \(timeout)")
    }

    /// Hands leadership away if this node leads, so a planned stop costs no election.
    public func prepareToStop() async {
        guard raft.role == .leader, raft.confState.voters.count > 1 else { return }
        do {
            let successor = try await transferLeadership(timeout: .seconds(2))
            logger.info("handed leadership over before stopping", metadata: ["to": "\(successor)"])
        } catch {
            logger.warning("could not hand leadership over", metadata: ["error": "\(error)"])
        }
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

/// A node's view of the cluster, for the admin API and `fulcrumctl status`.
/// This node's view of the leadership, for the serving layer's per-request checks.
public struct Leadership: Sendable, Hashable {
    public var isLeader: Bool
    public var leader: NodeID?
    public var term: Term
    public var appliedIndex: LogIndex
    public var commitIndex: LogIndex
}

public struct NodeStatus: Sendable, Hashable, Codable {
    public struct Member: Sendable, Hashable, Codable {
        public var id: UInt64
        public var address: String
        public var voter: Bool
        /// The leader's knowledge of the member's log; nil on followers.
        public var match: UInt64?
    }

    public var id: UInt64
    public var clusterID: String
    public var role: String
    public var term: UInt64
    public var leader: UInt64?
    public var leaderAddress: String?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastIndex: UInt64
    public var firstIndex: UInt64
    public var members: [Member]
}

/// The first byte of every normal entry's data: whose entry it is.
enum LogEntryTag: UInt8 {
    case application = 0
    case memberAddress = 1
}

/// How application commands sit in the Raft log, for tools that read a node's log directly.
public enum ClusterLog {
    /// The application command a normal entry carries, or nil for the cluster's own entries
    /// (member addresses) and empty ones (a new leader's first entry).
    public static func applicationCommand(_ data: [UInt8]) -> [UInt8]? {
        guard data.first == LogEntryTag.application.rawValue else { return nil }
        return Array(data.dropFirst())
    }
}
