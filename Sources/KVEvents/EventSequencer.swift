/// Puts one engine's event batches in order and notices what was lost.
///
/// Publishers number batches from 0 (an 8-byte big-endian sequence number beside each). A
/// subscriber asks the replay socket (a ROUTER: send `["", start]`, receive `["", seq,
/// payload]` per buffered batch, then `seq = −1` with an empty payload) for everything from
/// 0 when it starts, and from the first missing number when it sees a gap; live batches that
/// arrive meanwhile are held and applied after the replay, so the order is kept. What cannot
/// be recovered (no replay socket, the engine's buffer no longer has it, the engine restarted
/// and numbers again from 0) becomes a reset: everything known of the engine's cache is
/// dropped, because a missed `BlockRemoved` would leave blocks the engine no longer holds.
public struct EventSequencer: Sendable {
    public enum Action: Sendable, Equatable {
        case apply(sequence: Int64, payload: [UInt8])
        case reset(reason: String)
        case requestReplay(from: Int64)
    }

    /// Live batches held during a replay; past this the replay is abandoned (and it resets).
    public static let maxHeld = 16_384

    public let hasReplay: Bool
    public private(set) var lastApplied: Int64?
    public private(set) var replaying = false
    private var held: [(Int64, [UInt8])] = []

    public init(hasReplay: Bool) { self.hasReplay = hasReplay }

    /// At subscription: ask for the engine's buffered history.
    public mutating func start() -> [Action] {
        guard hasReplay else { return [] }
        replaying = true
        return [.requestReplay(from: 0)]
    }

    public mutating func live(_ sequence: Int64, _ payload: [UInt8]) -> [Action] {
        if replaying {
            guard held.count < Self.maxHeld else {
                held = []
                replaying = false
                lastApplied = sequence
                return [.reset(reason: "more than \(Self.maxHeld) batches arrived during a replay"), .apply(sequence: sequence, payload: payload)]
            }
            held.append((sequence, payload))
            return []
        }
        return accept(sequence, payload, replayAllowed: hasReplay)
    }

    private mutating func accept(_ sequence: Int64, _ payload: [UInt8], replayAllowed: Bool) -> [Action] {
        guard let last = lastApplied else {
            lastApplied = sequence
            return [.apply(sequence: sequence, payload: payload)]
        }
        if sequence == last { return [] }
        if sequence < last {
            lastApplied = sequence
            return [.reset(reason: "the sequence went back from \(last) to \(sequence): the engine restarted"), .apply(sequence: sequence, payload: payload)]
        }
        if sequence == last + 1 {
            lastApplied = sequence
            return [.apply(sequence: sequence, payload: payload)]
        }
        guard replayAllowed else {
            lastApplied = sequence
            let why = hasReplay ? "the replay did not have them" : "there is no replay socket"
            return [.reset(reason: "batches \(last + 1)..<\(sequence) were lost and \(why)"), .apply(sequence: sequence, payload: payload)]
        }
        replaying = true
        held = [(sequence, payload)]
        return [.requestReplay(from: last + 1)]
    }

    /// A batch from the replay socket.
    public mutating func replayed(_ sequence: Int64, _ payload: [UInt8]) -> [Action] {
        guard replaying, sequence >= 0 else { return [] }
        if let last = lastApplied, sequence <= last { return [] }
        lastApplied = sequence
        return [.apply(sequence: sequence, payload: payload)]
    }

    /// The replay ended (its end marker came, or it timed out): the held batches follow.
    public mutating func replayEnded() -> [Action] {
        guard replaying else { return [] }
        replaying = false
        let pending = held
        held = []
        var actions: [Action] = []
        // A gap the replay did not fill cannot be filled by asking again.
        for (sequence, payload) in pending { actions += accept(sequence, payload, replayAllowed: false) }
        return actions
    }
}

extension Int64 {
    /// The 8-byte big-endian form of a sequence number (the replay's end marker is −1).
    public var bigEndianBytes: [UInt8] {
        let bits = UInt64(bitPattern: self)
        return (0..<8).map { UInt8(truncatingIfNeeded: bits >> (56 - 8 * UInt64($0))) }
    }

    public init?(bigEndianBytes bytes: [UInt8]) {
        guard bytes.count == 8 else { return nil }
        self = Int64(bitPattern: bytes.reduce(0) { $0 << 8 | UInt64($1) })
    }
}
