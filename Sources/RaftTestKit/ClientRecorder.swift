import Raft

/// Simulated clients: starts register writes and linearizable reads on nodes, follows each to
/// its outcome, and keeps the history for the linearizability check.
struct ClientRecorder {
    struct Operation {
        typealias ID = Int

        enum Status: Equatable {
            case pending
            /// Committed and applied at this index.
            case acknowledged(LogIndex)
            /// Definitely never committed: another entry took its index.
            case failed
            /// Outcome unknown (timeout or crash): it may or may not have taken effect.
            case unknown
            case readCompleted(UInt64)
            /// A read with no answer: it had no effect and tells nothing.
            case readAbandoned
        }

        var key: UInt8
        var isRead: Bool
        var command: KeyValueCommand?
        var node: NodeID
        var index: LogIndex = 0
        var term: Term = 0
        var invokedAt: UInt64
        var completedAt: UInt64?
        var deadline: UInt64
        var status: Status = .pending
    }

    private(set) var operations: [Operation] = []
    /// Shared logical clock for invocation and completion order.
    private var clock: UInt64 = 0
    private var pendingWrites: [NodeID: [LogIndex: Operation.ID]] = [:]
    private var nextValue: UInt64 = 1
    static let timeoutSteps: UInt64 = 60 * ClusterSimulation.stepsPerTick

    private mutating func tick() -> UInt64 {
        clock += 1
        return clock
    }

    @discardableResult
    mutating func startWrite(key: UInt8, on node: NodeID, nodes: inout [NodeID: SimulatedNode], now: UInt64) -> Operation.ID? {
        let command = KeyValueCommand(id: nextValue, key: key, value: nextValue)
        guard let placed = try? nodes[node]!.raft!.propose(command.encoded()) else { return nil }
        nextValue += 1
        var operation = Operation(key: key, isRead: false, command: command, node: node, invokedAt: tick(), deadline: now + Self.timeoutSteps)
        operation.index = placed.index
        operation.term = placed.term
        operations.append(operation)
        pendingWrites[node, default: [:]][placed.index] = operations.count - 1
        return operations.count - 1
    }

    @discardableResult
    mutating func startRead(key: UInt8, on node: NodeID, nodes: inout [NodeID: SimulatedNode], now: UInt64) -> Operation.ID? {
        let id = operations.count
        var context = [UInt8]()
        ByteReader.append(UInt64(id) + 1, to: &context)
        guard (try? nodes[node]!.raft!.readIndex(context: context)) != nil else { return nil }
        operations.append(Operation(key: key, isRead: true, node: node, invokedAt: tick(), deadline: now + Self.timeoutSteps))
        return id
    }

    /// A node applied `entry`: a write waiting on that index learns its fate.
    mutating func observeApplied(_ entry: Entry, on node: NodeID, now: UInt64) {
        guard let id = pendingWrites[node]?.removeValue(forKey: entry.index) else { return }
        guard operations[id].status == .pending else { return }
        if entry.term == operations[id].term && entry.data == operations[id].command!.encoded() {
            operations[id].status = .acknowledged(entry.index)
            operations[id].completedAt = tick()
        } else {
            operations[id].status = .failed
        }
    }

    /// Serves the reads whose read point the node has applied.
    mutating func completeReads(on node: NodeID, nodes: inout [NodeID: SimulatedNode], now: UInt64) throws(SimulationViolation) {
        guard let raft = nodes[node]?.raft else { return }
        var still: [ReadState] = []
        for read in nodes[node]!.pendingReads {
            guard raft.appliedIndex >= read.index else {
                still.append(read)
                continue
            }
            let id = Int(ByteReader.uint64(read.context, at: 0)) - 1
            guard id >= 0, id < operations.count, operations[id].status == .pending, operations[id].node == node else { continue }
            operations[id].status = .readCompleted(nodes[node]!.store.value(of: operations[id].key))
            operations[id].completedAt = tick()
        }
        nodes[node]!.pendingReads = still
    }

    /// Everything in flight on a crashed node has an unknown outcome.
    mutating func nodeCrashed(_ node: NodeID, now: UInt64) throws(SimulationViolation) {
        pendingWrites[node] = nil
        for id in operations.indices where operations[id].node == node && operations[id].status == .pending {
            operations[id].status = operations[id].isRead ? .readAbandoned : .unknown
        }
    }

    mutating func expireTimedOut(now: UInt64, nodes: [NodeID: SimulatedNode]) throws(SimulationViolation) {
        for id in operations.indices where operations[id].status == .pending && operations[id].deadline <= now {
            operations[id].status = operations[id].isRead ? .readAbandoned : .unknown
            if !operations[id].isRead { pendingWrites[operations[id].node]?[operations[id].index] = nil }
        }
    }

    func hasFailed(_ id: Operation.ID) -> Bool {
        switch operations[id].status {
        case .failed, .unknown: true
        default: false
        }
    }

    func acknowledgedIndex(_ id: Operation.ID) -> LogIndex? {
        if case .acknowledged(let index) = operations[id].status { return index }
        return nil
    }

    var maxAcknowledgedIndex: LogIndex {
        operations.compactMap { operation -> LogIndex? in
            if case .acknowledged(let index) = operation.status { return index }
            return nil
        }.max() ?? 0
    }

    /// Acknowledged writes sit in the log where they were acknowledged; failed ones nowhere.
    func checkAcknowledged(against log: [Entry]) throws(SimulationViolation) {
        var positions: [UInt64: LogIndex] = [:]
        for entry in log {
            if let command = KeyValueCommand(decoding: entry.data) { positions[command.id] = entry.index }
        }
        for operation in operations where !operation.isRead {
            let id = operation.command!.id
            switch operation.status {
            case .acknowledged(let index):
                guard positions[id] == index else {
                    throw SimulationViolation(
                        property: "durability",
                        detail: "write \(id) acknowledged at \(index) is \(positions[id].map { "at \($0)" } ?? "missing") in the log",
                        step: 0
                    )
                }
            case .failed:
                guard positions[id] == nil else {
                    throw SimulationViolation(
                        property: "failed write applied", detail: "write \(id) reported failed but applied at \(positions[id]!)", step: 0
                    )
                }
            default:
                break
            }
        }
    }

    /// The history as the linearizability checker sees it: failed writes and abandoned reads
    /// had no effect and are left out.
    func history() -> [RegisterOperation] {
        operations.compactMap { operation in
            switch operation.status {
            case .acknowledged:
                RegisterOperation(key: operation.key, kind: .write(operation.command!.value), invokedAt: operation.invokedAt, completedAt: operation.completedAt)
            case .unknown, .pending:
                operation.isRead ? nil : RegisterOperation(key: operation.key, kind: .write(operation.command!.value), invokedAt: operation.invokedAt, completedAt: nil)
            case .readCompleted(let value):
                RegisterOperation(key: operation.key, kind: .read(value), invokedAt: operation.invokedAt, completedAt: operation.completedAt)
            case .failed, .readAbandoned:
                nil
            }
        }
    }

    func outcomeCounts() -> (acknowledged: Int, failed: Int, unknown: Int, reads: Int) {
        var counts = (acknowledged: 0, failed: 0, unknown: 0, reads: 0)
        for operation in operations {
            switch operation.status {
            case .acknowledged: counts.acknowledged += 1
            case .failed: counts.failed += 1
            case .unknown, .pending: if !operation.isRead { counts.unknown += 1 }
            case .readCompleted: counts.reads += 1
            case .readAbandoned: break
            }
        }
        return counts
    }
}
