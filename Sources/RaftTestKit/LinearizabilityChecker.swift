/// One client operation on a register, as the client saw it.
public struct RegisterOperation: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case write(UInt64)
        /// A read that returned this value.
        case read(UInt64)
    }

    public var key: UInt8
    public var kind: Kind
    /// Logical times from one shared counter: invocation strictly before completion.
    public var invokedAt: UInt64
    /// Nil when the outcome is unknown (timed out, crashed): the operation may have taken effect
    /// at any point after its invocation, or never.
    public var completedAt: UInt64?

    public init(key: UInt8, kind: Kind, invokedAt: UInt64, completedAt: UInt64?) {
        self.key = key
        self.kind = kind
        self.invokedAt = invokedAt
        self.completedAt = completedAt
    }
}

/// Checks that a history of register operations is linearizable (Herlihy & Wing).
///
/// The search is Wing & Gong's, with Lowe's memoization of (linearized set, state) pairs, as in
/// Porcupine; the history is split per key first (registers are independent). Operations with an
/// unknown outcome complete "at infinity", so the search may place them anywhere after their
/// invocation, including after everything (no visible effect).
public enum LinearizabilityChecker {
    public struct Violation: Sendable, CustomStringConvertible {
        public var key: UInt8
        public var operations: [RegisterOperation]
        public var description: String {
            "history of key \(key) is not linearizable (\(operations.count) operations)"
        }
    }

    public enum Outcome: Sendable {
        case linearizable
        case violation(Violation)
        /// The search exceeded its budget; nothing was proven either way.
        case inconclusive(key: UInt8)
    }

    public static func check(_ history: [RegisterOperation], maxStates: Int = 2_000_000) -> Outcome {
        var byKey: [UInt8: [RegisterOperation]] = [:]
        for operation in history { byKey[operation.key, default: []].append(operation) }
        for key in byKey.keys.sorted() {
            let operations = withoutUnobservedUnknownWrites(byKey[key]!)
            switch checkRegister(operations, maxStates: maxStates) {
            case true?: continue
            case false?: return .violation(Violation(key: key, operations: operations))
            case nil: return .inconclusive(key: key)
            }
        }
        return .linearizable
    }

    /// Drops the unknown-outcome writes of a value that no read returned: the history is
    /// linearizable with such a write exactly when it is without it. Without it, the write fits
    /// at the very end (its completion is at infinity); with it, no read falls between it and the
    /// next write (none returned its value), so taking it out leaves the rest valid. Each one
    /// otherwise stays pending to the end of the search and multiplies its states: a long
    /// nemesis history with a thousand of them per key ran out of budget.
    public static func withoutUnobservedUnknownWrites(_ operations: [RegisterOperation]) -> [RegisterOperation] {
        var observed = Set<UInt64>()
        for operation in operations {
            if case .read(let value) = operation.kind { observed.insert(value) }
        }
        return operations.filter { operation in
            guard operation.completedAt == nil, case .write(let value) = operation.kind else { return true }
            return observed.contains(value)
        }
    }

    /// True if linearizable, false if not, nil when the budget ran out.
    static func checkRegister(_ operations: [RegisterOperation], maxStates: Int) -> Bool? {
        let count = operations.count
        if count == 0 { return true }
        // Events: a call and a return per operation, ordered by time; unknown returns last.
        struct Event { var operation: Int; var isCall: Bool; var time: UInt64 }
        var events: [Event] = []
        events.reserveCapacity(count * 2)
        for (position, operation) in operations.enumerated() {
            events.append(Event(operation: position, isCall: true, time: operation.invokedAt))
            events.append(Event(operation: position, isCall: false, time: operation.completedAt ?? .max))
        }
        events.sort { ($0.time, $0.isCall ? 1 : 0) < ($1.time, $1.isCall ? 1 : 0) }
        // A doubly linked list over events, with a sentinel head at slot `events.count`.
        let head = events.count
        var next = [Int](repeating: -1, count: events.count + 1)
        var previous = [Int](repeating: -1, count: events.count + 1)
        var returnSlot = [Int](repeating: 0, count: count)
        var cursor = head
        for (slot, event) in events.enumerated() {
            next[cursor] = slot
            previous[slot] = cursor
            cursor = slot
            if !event.isCall { returnSlot[event.operation] = slot }
        }

        func lift(_ call: Int) {
            let ret = returnSlot[events[call].operation]
            next[previous[call]] = next[call]
            if next[call] >= 0 { previous[next[call]] = previous[call] }
            next[previous[ret]] = next[ret]
            if next[ret] >= 0 { previous[next[ret]] = previous[ret] }
        }
        func unlift(_ call: Int) {
            let ret = returnSlot[events[call].operation]
            next[previous[ret]] = ret
            if next[ret] >= 0 { previous[next[ret]] = ret }
            next[previous[call]] = call
            if next[call] >= 0 { previous[next[call]] = call }
        }

        struct Memo: Hashable { var linearized: [UInt64]; var state: UInt64 }
        var linearized = [UInt64](repeating: 0, count: (count + 63) / 64)
        var seen = Set<Memo>()
        var stack: [(call: Int, state: UInt64)] = []
        var state: UInt64 = 0
        var entry = next[head]
        while next[head] >= 0 {
            if seen.count > maxStates { return nil }
            if entry < 0 {
                // Ran past the end without a return event: only unknown-outcome calls remain
                // unlinearized, and they may all take effect last. Backtrack isn't needed.
                return true
            }
            let event = events[entry]
            if event.isCall {
                let operation = operations[event.operation]
                var accepted = false
                var nextState = state
                switch operation.kind {
                case .write(let value):
                    accepted = true
                    nextState = value
                case .read(let value):
                    accepted = value == state
                }
                if accepted {
                    var marked = linearized
                    marked[event.operation / 64] |= 1 << UInt64(event.operation % 64)
                    if seen.insert(Memo(linearized: marked, state: nextState)).inserted {
                        stack.append((entry, state))
                        state = nextState
                        linearized = marked
                        lift(entry)
                        entry = next[head]
                        continue
                    }
                }
                entry = next[entry]
            } else {
                if operations[event.operation].completedAt == nil {
                    // Only unknown-outcome returns are left ahead: every remaining call may be
                    // linearized at the end.
                    return true
                }
                guard let top = stack.popLast() else { return false }
                state = top.state
                let operation = events[top.call].operation
                linearized[operation / 64] &= ~(1 << UInt64(operation % 64))
                unlift(top.call)
                entry = next[top.call]
            }
        }
        return true
    }
}
