import Raft
import RaftTestKit

/// Settings for scenario tests: 10-tick elections, 1-tick heartbeats; extensions off unless asked.
func testSettings(preVote: Bool = false, checkQuorum: Bool = false, maxInflight: Int = 256) -> RaftSettings {
    var settings = RaftSettings()
    settings.electionTicks = 10
    settings.heartbeatTicks = 1
    settings.preVote = preVote
    settings.checkQuorum = checkQuorum
    settings.maxInflightMessages = maxInflight
    return settings
}

func network(
    voters: Int, learners: Int = 0, preVote: Bool = false, checkQuorum: Bool = false, maxInflight: Int = 256
) -> RaftTestNetwork {
    RaftTestNetwork(
        voters: voters, learners: learners,
        settings: testSettings(preVote: preVote, checkQuorum: checkQuorum, maxInflight: maxInflight)
    )
}

/// A lone core with the given bootstrap voters, its bootstrap entries applied.
func node(_ id: NodeID, voters: [NodeID], learners: [NodeID] = [], settings: RaftSettings = testSettings()) -> RaftNode {
    var raft = try! RaftNode(id: id, settings: settings, state: .bootstrap(ConfState(voters: voters, learners: learners)), seed: 1)
    _ = raft.drain()
    return raft
}

extension RaftNode {
    /// Carries out (trivially) and acknowledges one `Ready`, returning it.
    mutating func drain() -> Ready {
        let ready = self.ready()
        advance(ready)
        return ready
    }

    /// The messages of the next `Ready`.
    mutating func drainMessages() -> [Message] { drain().messages }

    mutating func tick(times: Int) {
        for _ in 0..<times { tick() }
    }
}

extension [Message] {
    func of(_ kind: MessageKind) -> [Message] { filter { $0.kind == kind } }
    func to(_ id: NodeID) -> [Message] { filter { $0.to == id } }
}

/// Values written by `RaftTestNetwork.propose`, in the order a member applied them.
func appliedValues(_ net: RaftTestNetwork, _ id: NodeID) -> [UInt64] {
    net.member(id).applied.compactMap { KeyValueCommand(decoding: $0.data)?.value }
}
