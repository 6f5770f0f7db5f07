public import Raft

/// A small in-process cluster for scenario tests: real cores, in-memory storage, a message
/// queue delivered in order, and switches to cut links, isolate nodes or drop message kinds.
///
/// Not thread-safe; one test drives it.
public final class RaftTestNetwork {
    public struct Member {
        public var raft: RaftNode
        public var storage: MemoryStorage
        /// Committed application entries (not no-ops), in apply order, since the last restart.
        public var applied: [Entry] = []
        public var store = KeyValueStore()
        public var readStates: [ReadState] = []
    }

    public private(set) var members: [NodeID: Member] = [:]
    public var settings: RaftSettings
    /// Messages waiting for delivery, in send order.
    public private(set) var queue: [Message] = []
    /// Every message delivered so far (for assertions on traffic).
    public private(set) var delivered: [Message] = []
    private var cutLinks: Set<[NodeID]> = []
    private var ignoredKinds: Set<MessageKind> = []
    private var seed: UInt64

    /// Creates voters `1...voters` and learners after them, all sharing the same bootstrap
    /// configuration.
    public init(voters: Int, learners: Int = 0, settings: RaftSettings = RaftSettings(), seed: UInt64 = 1) {
        self.settings = settings
        self.seed = seed
        let voterIDs = (1...NodeID(voters)).map { $0 }
        let learnerIDs = learners == 0 ? [] : (NodeID(voters) + 1...NodeID(voters + learners)).map { $0 }
        let conf = ConfState(voters: voterIDs, learners: learnerIDs)
        for id in voterIDs + learnerIDs {
            add(id: id, state: .bootstrap(conf))
            // Apply the bootstrap configuration entries.
            process(id)
        }
    }

    /// Adds a node with the given persisted state (e.g. an empty one that will join).
    public func add(id: NodeID, state: PersistentState) {
        let raft = try! RaftNode(id: id, settings: settings, state: state, seed: seed)
        var member = Member(raft: raft, storage: MemoryStorage(state))
        member.store = KeyValueStore(snapshotData: state.snapshot.data)
        members[id] = member
    }

    public var ids: [NodeID] { members.keys.sorted() }

    public subscript(id: NodeID) -> RaftNode {
        get { members[id]!.raft }
        set { members[id]!.raft = newValue }
    }

    public func member(_ id: NodeID) -> Member { members[id]! }

    /// The nodes that believe they lead, by term.
    public var leaders: [NodeID] { ids.filter { members[$0]!.raft.role == .leader } }

    // MARK: Faults

    /// Drops every message between `a` and `b`, both ways.
    public func cut(_ a: NodeID, _ b: NodeID) {
        cutLinks.insert([a, b])
        cutLinks.insert([b, a])
    }

    /// Drops messages from `from` to `to` only.
    public func cutOneWay(from: NodeID, to: NodeID) { cutLinks.insert([from, to]) }

    public func isolate(_ id: NodeID) {
        for other in ids where other != id { cut(id, other) }
    }

    public func ignore(_ kind: MessageKind) { ignoredKinds.insert(kind) }

    /// Heals every cut and stops ignoring message kinds.
    public func recover() {
        cutLinks = []
        ignoredKinds = []
    }

    private func isDropped(_ message: Message) -> Bool {
        cutLinks.contains([message.from, message.to]) || ignoredKinds.contains(message.kind)
            || members[message.to] == nil
    }

    // MARK: Driving

    public func tick(_ id: NodeID, times: Int = 1) {
        for _ in 0..<times { members[id]!.raft.tick() }
    }

    /// Ticks every node once.
    public func tickAll(times: Int = 1) {
        for _ in 0..<times { for id in ids { members[id]!.raft.tick() } }
    }

    public func campaign(_ id: NodeID) {
        members[id]!.raft.campaign()
    }

    /// Proposes a register write on `id`; throws when it is not the leader.
    @discardableResult
    public func propose(_ id: NodeID, key: UInt8 = 0, value: UInt64) throws -> (index: LogIndex, term: Term) {
        try members[id]!.raft.propose(KeyValueCommand(id: value, key: key, value: value).encoded())
    }

    /// Carries out every pending `Ready` of `id`: persist, queue messages, apply, advance.
    /// Returns the messages it queued.
    @discardableResult
    public func process(_ id: NodeID) -> [Message] {
        var sent: [Message] = []
        while members[id]!.raft.hasReady {
            var member = members[id]!
            let ready = member.raft.ready()
            member.storage.persist(ready)
            if let snapshot = ready.snapshot {
                member.store = KeyValueStore(snapshotData: snapshot.data)
                member.applied = []
            }
            for entry in ready.committedEntries {
                member.store.apply(entry)
                if entry.kind == .confChange || !entry.data.isEmpty { member.applied.append(entry) }
            }
            member.readStates += ready.readStates
            member.raft.advance(ready)
            members[id] = member
            sent += ready.messages
        }
        queue += sent
        return sent
    }

    /// Takes out (without delivering) the messages `id` has to send.
    public func takeMessages(_ id: NodeID) -> [Message] {
        let sent = process(id)
        queue.removeAll { message in sent.contains(message) }
        return sent
    }

    /// Delivers one message now, bypassing the queue and the link rules.
    public func deliver(_ message: Message) {
        guard members[message.to] != nil else { return }
        delivered.append(message)
        members[message.to]!.raft.step(message)
    }

    /// Processes and delivers until no node has anything left to do.
    public func stabilize(maxRounds: Int = 10_000) {
        for _ in 0..<maxRounds {
            for id in ids { process(id) }
            if queue.isEmpty { return }
            let batch = queue
            queue = []
            for message in batch where !isDropped(message) {
                deliver(message)
            }
        }
        preconditionFailure("network did not stabilize in \(maxRounds) rounds")
    }

    /// Campaigns on `id` and lets the election finish.
    public func elect(_ id: NodeID) {
        campaign(id)
        stabilize()
    }

    /// Restarts `id` from what it persisted, losing everything volatile.
    public func restart(_ id: NodeID) {
        let storage = members[id]!.storage
        add(id: id, state: storage.state)
        queue.removeAll { $0.to == id || $0.from == id }
    }

    /// Takes a snapshot of `id` at its applied index and compacts its log.
    public func compact(_ id: NodeID) {
        var member = members[id]!
        let snapshot = try! member.raft.takeSnapshot(data: member.store.snapshotData())
        member.storage.compact(to: snapshot)
        members[id] = member
    }

    /// Proposes a configuration change on `id` and lets it apply everywhere.
    public func changeConfiguration(_ id: NodeID, _ change: ConfChange) throws {
        try members[id]!.raft.proposeConfChange(change)
        stabilize()
    }
}
