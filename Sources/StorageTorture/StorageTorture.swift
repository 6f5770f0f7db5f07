// Appends to a Raft database as fast as it can, with periodic snapshots, writing each
// acknowledgement only after its transaction committed; the crash-safety tests kill it with
// SIGKILL at random moments and check that nothing acknowledged was lost.
//
//   StorageTorture PATH SEED   (built as .build/debug/StorageTorture)
import Foundation
import Raft
import RaftStorage

@main
struct StorageTorture {
    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count == 3, let seed = UInt64(arguments[2]) else {
            fail("usage: StorageTorture PATH SEED", status: 2)
        }
        do {
            try run(path: arguments[1], seed: seed)
        } catch {
            fail("error: \(error)", status: 1)
        }
    }

    static func run(path: String, seed: UInt64) throws {
        let database = try RaftDatabase(path: path, clusterID: "torture")
        let state = try database.load()
        var last = state.snapshot.metadata.index + UInt64(state.entries.count)
        var random = SplitMix64(seed: seed)
        var batches = 0
        while true {
            let count = 1 + Int(random.next() % 32)
            let entries = (1...count).map { offset in
                Entry(term: 1, index: last + UInt64(offset), data: TortureData.entry(last + UInt64(offset)))
            }
            try database.persist(
                entries: entries, hardState: HardState(term: 1, vote: 1, commit: last + UInt64(count)), snapshot: nil
            )
            last += UInt64(count)
            say("ack \(last)")
            batches += 1
            if batches % 40 == 0 && last > 16 {
                let index = last - 16
                try database.compact(to: Snapshot(
                    metadata: SnapshotMetadata(index: index, term: 1, confState: ConfState(voters: [1])),
                    data: TortureData.snapshot(index)
                ))
                say("snap \(index)")
            }
        }
    }

    /// One unbuffered write per line, so the parent sees an acknowledgement as soon as it is true.
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    static func fail(_ message: String, status: Int32) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(status)
    }
}
