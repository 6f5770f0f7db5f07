public import Raft
import WireCoding

/// The callers' side of a node: proposals that wait for their entry to apply, linearizable
/// reads (ReadIndex), and waits for an applied index. Each wait has a deadline.
extension ClusterNode {
    func notLeader() -> ClusterError {
        let leader = raft.leader
        return ClusterError(
            .notLeader, leader == .none ? "no leader is known" : "node \(leader) leads",
            leader: leader == .none ? nil : leader, leaderAddress: leader == .none ? nil : addresses[leader]
        )
    }

    /// Replicates `command` and returns the state machine's outcome once it applied here.
    public func propose(_ command: [UInt8]) async throws -> Machine.Outcome {
        guard let outcome = try await proposeTagged(.application, command) else {
            throw ClusterError(.dropped, "the entry applied without an outcome")
        }
        return outcome
    }

    func proposeTagged(_ tag: Tag, _ payload: [UInt8]) async throws -> Machine.Outcome? {
        if let failure = waiters.failure { throw failure }
        guard raft.role == .leader else { throw notLeader() }
        let position: (index: LogIndex, term: Term)
        do {
            position = try raft.propose([tag.rawValue] + payload)
        } catch {
            throw ClusterError(.rejected, error.message)
        }
        return try await waitForApply(index: position.index, term: position.term)
    }

    func waitForApply(index: LogIndex, term: Term) async throws -> Machine.Outcome? {
        let timeout = settings.proposalTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.expireProposal(index: index, term: term)
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            waiters.waitForProposal(at: index, term: term, continuation)
            scheduleFlush()
        }
    }

    private func expireProposal(index: LogIndex, term: Term) {
        waiters.expireProposal(at: index, term: term, ClusterError(.timeout, "entry \(index) not applied within \(settings.proposalTimeout)"))
    }

    /// Waits until this node has applied everything committed before the call (ReadIndex, §6.4);
    /// reads of the state machine after it are linearizable.
    public func readBarrier() async throws {
        let readID = waiters.nextID()
        var writer = ByteWriter()
        writer.write(id)
        writer.write(readID)
        let context = writer.bytes
        let timeout = settings.proposalTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            await self?.expireRead(readID)
        }
        defer { timer.cancel() }
        if let failure = waiters.failure { throw failure }
        do { try raft.readIndex(context: context) } catch { throw notLeader() }
        let index = try await withCheckedThrowingContinuation { continuation in
            waiters.waitForRead(readID, continuation)
            scheduleFlush()
        }
        try await waitUntilApplied(index)
    }

    func confirmRead(_ state: ReadState) {
        var reader = ByteReader(state.context)
        guard (try? reader.readUInt64()) == id, let readID = try? reader.readUInt64() else { return }
        waiters.confirmRead(readID, at: state.index)
    }

    private func expireRead(_ readID: UInt64) {
        waiters.expireRead(readID, ClusterError(.timeout, "read index not confirmed in time"))
    }

    /// Waits until this node applied `index`, at most `timeout` (default: the proposal timeout).
    public func waitUntilApplied(_ index: LogIndex, timeout: Duration? = nil) async throws {
        if raft.appliedIndex >= index { return }
        let waiterID = waiters.nextID()
        let limit = timeout ?? settings.proposalTimeout
        let timer = Task { [weak self] in
            try await Task.sleep(for: limit)
            await self?.expireAppliedWaiter(waiterID, index: index, after: limit)
        }
        defer { timer.cancel() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiters.waitUntilApplied(waiterID, index: index, continuation)
            }
        } onCancel: {
            Task { await self.cancelAppliedWaiter(waiterID) }
        }
    }

    private func cancelAppliedWaiter(_ waiterID: UInt64) {
        waiters.expireAppliedWaiter(waiterID, ClusterError(.timeout, "the wait was cancelled"))
    }

    private func expireAppliedWaiter(_ waiterID: UInt64, index: LogIndex, after limit: Duration) {
        waiters.expireAppliedWaiter(waiterID, ClusterError(
            .timeout, "index \(index) not applied within \(limit) (applied \(raft.appliedIndex))"
        ))
    }
}
