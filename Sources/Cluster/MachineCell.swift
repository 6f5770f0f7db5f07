import Synchronization

/// The replicated state machine behind a lock of its own, shared by the node's Ready loop
/// (which applies entries) and the serving layer (which reads the state and keeps its local
/// router in it). Held for one batch of entries or one decision at a time, never across I/O.
final class MachineCell<Machine: ReplicatedStateMachine>: Sendable {
    private let mutex: Mutex<Machine>

    init(_ machine: sending Machine) { mutex = Mutex(machine) }

    func withLock<Result: Sendable, Failure: Error>(_ body: (inout Machine) throws(Failure) -> Result) throws(Failure) -> Result {
        try mutex.withLock { (machine: inout sending Machine) throws(Failure) -> sending Result in try body(&machine) }
    }
}
