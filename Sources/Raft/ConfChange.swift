/// A membership change carried by a `.confChange` log entry.
///
/// An empty `changes` list leaves a joint configuration. Otherwise the changes are applied
/// together: directly when they alter at most one voter and `transition` is `.automatic`
/// (one-server-at-a-time, §4.1 of the thesis), else through a joint configuration (§6).
public struct ConfChange: Sendable, Hashable {
    public enum Operation: UInt8, Sendable, Hashable {
        case addVoter = 1
        case addLearner = 2
        case removeNode = 3
    }

    public struct Change: Sendable, Hashable {
        public var operation: Operation
        public var node: NodeID

        public init(_ operation: Operation, _ node: NodeID) {
            self.operation = operation
            self.node = node
        }
    }

    public enum Transition: UInt8, Sendable, Hashable {
        /// Simple when possible; otherwise joint, left automatically by the leader.
        case automatic = 0
        /// Always joint, left automatically.
        case jointImplicit = 1
        /// Always joint; the application proposes the empty change that leaves it.
        case jointExplicit = 2
    }

    public var changes: [Change]
    public var transition: Transition

    public init(_ changes: [Change], transition: Transition = .automatic) {
        self.changes = changes
        self.transition = transition
    }

    /// The change that leaves a joint configuration.
    public static let leaveJoint = ConfChange([])

    public static func addVoter(_ id: NodeID) -> ConfChange { ConfChange([Change(.addVoter, id)]) }
    public static func addLearner(_ id: NodeID) -> ConfChange { ConfChange([Change(.addLearner, id)]) }
    public static func removeNode(_ id: NodeID) -> ConfChange { ConfChange([Change(.removeNode, id)]) }

    public var isLeaveJoint: Bool { changes.isEmpty }

    // MARK: Encoding

    /// Version of the entry encoding, independent of the package version.
    static let encodingVersion: UInt8 = 1

    /// Layout: version, transition, count (UInt32 LE), then per change: operation, node (UInt64 LE).
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [Self.encodingVersion, transition.rawValue]
        bytes.reserveCapacity(6 + changes.count * 9)
        withUnsafeBytes(of: UInt32(changes.count).littleEndian) { bytes.append(contentsOf: $0) }
        for change in changes {
            bytes.append(change.operation.rawValue)
            withUnsafeBytes(of: change.node.littleEndian) { bytes.append(contentsOf: $0) }
        }
        return bytes
    }

    public init(decoding bytes: [UInt8]) throws(RaftError) {
        guard bytes.count >= 6 else { throw .malformedConfChange("\(bytes.count) bytes is too short") }
        guard bytes[0] == Self.encodingVersion else {
            throw .malformedConfChange("unknown encoding version \(bytes[0])")
        }
        guard let transition = Transition(rawValue: bytes[1]) else {
            throw .malformedConfChange("unknown transition \(bytes[1])")
        }
        let count = Int(Self.readInteger(bytes, at: 2, as: UInt32.self))
        guard bytes.count == 6 + count * 9 else {
            throw .malformedConfChange("\(count) changes need \(6 + count * 9) bytes, found \(bytes.count)")
        }
        var changes = [Change]()
        changes.reserveCapacity(count)
        for position in 0..<count {
            let offset = 6 + position * 9
            guard let operation = Operation(rawValue: bytes[offset]) else {
                throw .malformedConfChange("unknown operation \(bytes[offset])")
            }
            let node = Self.readInteger(bytes, at: offset + 1, as: UInt64.self)
            guard node != .none else { throw .malformedConfChange("node id 0 is reserved") }
            changes.append(Change(operation, node))
        }
        self.init(changes, transition: transition)
    }

    private static func readInteger<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, as: T.Type) -> T {
        var value: T = 0
        for byte in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + byte]) << (8 * byte) }
        return value
    }
}

extension ConfState {
    /// The configuration that results from applying `change`, or an error naming the rule broken.
    public func applying(_ change: ConfChange) throws(RaftError) -> ConfState {
        if change.isLeaveJoint {
            guard isJoint else { throw .invalidConfigurationChange("not in a joint configuration") }
            var next = self
            next.learners = Array(Set(learners + learnersNext)).sorted()
            next.learnersNext = []
            next.votersOutgoing = []
            next.autoLeave = false
            return next
        }
        guard !isJoint else {
            throw .invalidConfigurationChange("in a joint configuration; leave it before another change")
        }
        for (position, item) in change.changes.enumerated() where item.node == .none {
            throw .invalidConfigurationChange("change \(position) names node 0")
        }
        var next = self
        let joint = change.transition != .automatic || voterDelta(change) > 1
        if joint {
            guard !voters.isEmpty else { throw .invalidConfigurationChange("no voters to start a joint configuration from") }
            next.votersOutgoing = voters
            next.autoLeave = change.transition != .jointExplicit
        }
        for item in change.changes { next.apply(item) }
        guard !next.voters.isEmpty else { throw .invalidConfigurationChange("the change removes every voter") }
        return next
    }

    /// How many voters of the incoming configuration the change adds or removes.
    private func voterDelta(_ change: ConfChange) -> Int {
        var copy = self
        for item in change.changes { copy.apply(item) }
        return Set(voters).symmetricDifference(copy.voters).count
    }

    private mutating func apply(_ item: ConfChange.Change) {
        let id = item.node
        func removing(_ list: [NodeID]) -> [NodeID] { list.filter { $0 != id } }
        func adding(_ list: [NodeID]) -> [NodeID] { list.contains(id) ? list : (list + [id]).sorted() }
        switch item.operation {
        case .addVoter:
            learners = removing(learners)
            learnersNext = removing(learnersNext)
            voters = adding(voters)
        case .addLearner:
            voters = removing(voters)
            if votersOutgoing.contains(id) {
                // Still votes in the outgoing half; becomes a learner when the joint state is left.
                learners = removing(learners)
                learnersNext = adding(learnersNext)
            } else {
                learnersNext = removing(learnersNext)
                learners = adding(learners)
            }
        case .removeNode:
            voters = removing(voters)
            learners = removing(learners)
            learnersNext = removing(learnersNext)
        }
    }
}
