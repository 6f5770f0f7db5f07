import Dispatch
import Raft

/// Measures the cost of the consensus core alone: three cores exchanging messages in memory.
public enum CoreBenchmark {
    public struct Result: Sendable {
        public var seconds: Double
        /// Messages stepped plus ticks.
        public var steps: Int
        public var messages: Int
    }

    /// Commits `entries` proposals through a 3-voter cluster, `batch` proposals per `Ready`.
    public static func replicateAndCommit(entries: Int, batch: Int, entryBytes: Int) -> Result {
        var settings = RaftSettings()
        settings.preVote = true
        settings.checkQuorum = true
        let conf = ConfState(voters: [1, 2, 3])
        var nodes = (1...3).map { try! RaftNode(id: NodeID($0), settings: settings, state: .bootstrap(conf), seed: 7) }
        var queue: [Message] = []
        var steps = 0
        var messages = 0
        func pump() {
            var idle = false
            while !idle {
                idle = true
                for position in nodes.indices where nodes[position].hasReady {
                    idle = false
                    let ready = nodes[position].ready()
                    queue += ready.messages
                    nodes[position].advance(ready)
                }
                if !queue.isEmpty {
                    idle = false
                    let batch = queue
                    queue = []
                    messages += batch.count
                    for message in batch {
                        nodes[Int(message.to) - 1].step(message)
                        steps += 1
                    }
                }
            }
        }
        // Apply the bootstrap configuration first: a node does not campaign over unapplied changes.
        pump()
        nodes[0].campaign()
        pump()
        precondition(nodes[0].role == .leader, "benchmark: node 1 did not win its election")
        let payload = [UInt8](repeating: 0xAB, count: entryBytes)
        let started = DispatchTime.now()
        var proposed = 0
        while proposed < entries {
            let count = min(batch, entries - proposed)
            for _ in 0..<count { _ = try! nodes[0].propose(payload) }
            proposed += count
            pump()
            if proposed % (batch * 50) == 0 {
                // Keep memory flat, as the runtime would with periodic snapshots.
                for position in nodes.indices where nodes[position].appliedIndex > nodes[position].firstIndex + 1024 {
                    _ = try? nodes[position].takeSnapshot(data: [])
                }
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        precondition(nodes.allSatisfy { $0.commitIndex >= LogIndex(entries) }, "benchmark did not commit everything")
        return Result(seconds: seconds, steps: steps, messages: messages)
    }
}
