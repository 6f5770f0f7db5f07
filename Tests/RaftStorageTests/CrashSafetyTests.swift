import Foundation
import Raft
import RaftStorage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A child process appends and snapshots as fast as it can and is killed with SIGKILL at random
/// moments; after each kill the database must open, hold every acknowledged entry and snapshot,
/// and be consistent. Bounded: a few rounds of at most about a second each.
@Suite struct CrashSafetyTests {
    static var tortureBinary: URL {
        // The test bundle sits beside the package's executables in the build directory.
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("StorageTorture")
    }

    /// Runs the child for `milliseconds`, kills it with SIGKILL, and returns the highest entry
    /// index and snapshot index it acknowledged.
    func runAndKill(path: String, seed: UInt64, milliseconds: Int) throws -> (entry: UInt64, snapshot: UInt64) {
        let process = Process()
        process.executableURL = Self.tortureBinary
        process.arguments = [path, String(seed)]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        usleep(UInt32(milliseconds) * 1000)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        var entry: UInt64 = 0
        var snapshot: UInt64 = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            // A line cut by the kill is not an acknowledgement.
            guard parts.count == 2, let value = UInt64(parts[1]) else { continue }
            if parts[0] == "ack" { entry = max(entry, value) }
            if parts[0] == "snap" { snapshot = max(snapshot, value) }
        }
        #expect(process.terminationReason == .uncaughtSignal, "the child must still be running when killed")
        return (entry, snapshot)
    }

    @Test func nothingAcknowledgedIsLostWhenTheWriterIsKilled() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.tortureBinary.path), "build with --build-tests first")
        let path = temporaryDatabasePath()
        var acknowledged: UInt64 = 0
        var snapshotted: UInt64 = 0
        var generator = SystemRandomNumberGenerator()
        for round in 0..<6 {
            let milliseconds = Int.random(in: 150...700, using: &generator)
            let acked = try runAndKill(path: path, seed: UInt64(round), milliseconds: milliseconds)
            acknowledged = max(acknowledged, acked.entry)
            snapshotted = max(snapshotted, acked.snapshot)

            let state = try RaftDatabase(path: path, clusterID: "torture").load()
            let last = state.snapshot.metadata.index + UInt64(state.entries.count)
            #expect(last >= acknowledged, "round \(round): entries up to \(acknowledged) were acknowledged, log ends at \(last)")
            #expect(state.snapshot.metadata.index >= snapshotted, "round \(round): snapshot \(snapshotted) was acknowledged")
            if state.snapshot.metadata.index > 0 {
                #expect(state.snapshot.data == TortureData.snapshot(state.snapshot.metadata.index))
            }
            for entry in state.entries {
                #expect(entry.data == TortureData.entry(entry.index), "entry \(entry.index) is intact")
            }
            #expect(state.hardState.commit <= last)
        }
        #expect(acknowledged > 100, "the child made progress (\(acknowledged) entries)")
        #expect(snapshotted > 0, "the child took snapshots")
    }
}
