import AsyncHTTPClient
import Foundation
import FulcrumAPI
import Testing

/// Operations on real processes: backup and restore into a new cluster, disaster recovery from
/// a survivor, and a rolling restart under traffic.
@Suite(.serialized) struct OperationsTests {
    /// Runs `fulcrum` with arguments; returns its exit status and output.
    static func fulcrum(_ cluster: ProcessCluster, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try cluster.run("fulcrum", arguments)
    }

    /// Waits until `id` leads (it may be the only member).
    static func waitForLeadership(_ cluster: ProcessCluster, _ id: UInt64) async throws {
        for _ in 0..<300 {
            if let status = await cluster.status(id), status.leader == id { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw IntegrationError("node \(id) did not lead; logs in \(cluster.root)")
    }

    /// Adds `id` (started empty) as a learner, promotes it once caught up, and waits until it
    /// holds `workers`.
    static func join(_ cluster: ProcessCluster, _ id: UInt64, expecting workers: Set<String>, via leader: UInt64) async throws {
        try cluster.reservePorts(id)
        try cluster.start(id)
        let add = try cluster.ctl(["member", "add", "--endpoints", cluster.endpoint(leader), "--id", String(id), "--address", "127.0.0.1:\(cluster.peerPorts[id]!)"])
        #expect(add.status == 0, "\(add.output)")
        var promoted = false
        for _ in 0..<100 where !promoted {
            promoted = try cluster.ctl(["member", "promote", "--endpoints", cluster.endpoint(leader), String(id)]).status == 0
            if !promoted { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(promoted)
        var held = Set<String>()
        for _ in 0..<200 where held != workers {
            // The new node's HTTP listener may not be up yet on a loaded machine.
            held = Set((try? await cluster.workers(on: id, consistent: false)) ?? [])
            if held != workers { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(held == workers, "the new member holds what the cluster holds")
    }

    @Test(.timeLimit(.minutes(2)))
    func aSavedSnapshotStartsANewCluster() async throws {
        let cluster = try ProcessCluster(founders: 3)
        defer { cluster.stopAll() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-backup-\(UUID().uuidString).snapshot").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let leader = try await cluster.leader()
        var registered = Set<String>()
        for index in 0..<10 where try await cluster.register("w\(index)", via: leader) { registered.insert("w\(index)") }
        #expect(registered.count == 10)
        let save = try cluster.ctl(["snapshot", "save", "--endpoints", cluster.endpoint(leader), file])
        #expect(save.status == 0, "\(save.output)")
        for id in cluster.founders { cluster.kill9(id) }

        // A damaged file is refused, naming the problem.
        let damaged = file + ".damaged"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: damaged))
        defer { try? FileManager.default.removeItem(atPath: damaged) }
        try cluster.reservePorts(4)
        let refused = try Self.fulcrum(cluster, ["restore", "--snapshot", damaged, "--data-dir", "\(cluster.root)/node-4", "--node-id", "4", "--peer-advertise", "127.0.0.1:\(cluster.peerPorts[4]!)"])
        #expect(refused.status != 0 && refused.output.contains("checksum"), "\(refused.output)")

        let restore = try Self.fulcrum(cluster, ["restore", "--snapshot", file, "--data-dir", "\(cluster.root)/node-4", "--node-id", "4", "--peer-advertise", "127.0.0.1:\(cluster.peerPorts[4]!)"])
        #expect(restore.status == 0, "\(restore.output)")
        try cluster.start(4)
        try await Self.waitForLeadership(cluster, 4)
        #expect(Set(try await cluster.workers(on: 4, consistent: true)) == registered)
        #expect(try await cluster.register("after-restore", via: 4))
        registered.insert("after-restore")
        try await Self.join(cluster, 5, expecting: registered, via: 4)
    }

    @Test(.timeLimit(.minutes(2)))
    func aSurvivorOfALostMajorityForcesANewCluster() async throws {
        let cluster = try ProcessCluster(founders: 3)
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        var registered = Set<String>()
        for index in 0..<10 where try await cluster.register("w\(index)", via: leader) { registered.insert("w\(index)") }
        #expect(registered.count == 10)
        let survivor = cluster.founders.first { $0 != leader }!
        for _ in 0..<200 where Set(try await cluster.workers(on: survivor, consistent: false)) != registered {
            try await Task.sleep(for: .milliseconds(20))
        }
        // The majority is lost for good; the survivor alone cannot elect a leader.
        for id in cluster.founders where id != survivor { cluster.kill9(id) }
        try await Task.sleep(for: .milliseconds(800))
        #expect((await cluster.status(survivor))?.leader == nil)
        cluster.kill9(survivor)

        let refused = try Self.fulcrum(cluster, ["recover", "--data-dir", "\(cluster.root)/node-\(survivor)", "--cluster-id", "it", "--peer-advertise", "127.0.0.1:1"])
        #expect(refused.status != 0 && refused.output.contains("--force-new-cluster"))
        let recover = try Self.fulcrum(cluster, [
            "recover", "--force-new-cluster", "--data-dir", "\(cluster.root)/node-\(survivor)", "--cluster-id", "it",
            "--peer-advertise", "127.0.0.1:\(cluster.peerPorts[survivor]!)",
        ])
        #expect(recover.status == 0, "\(recover.output)")
        try cluster.start(survivor)
        try await Self.waitForLeadership(cluster, survivor)
        #expect(Set(try await cluster.workers(on: survivor, consistent: true)) == registered, "every acknowledged write survived")
        #expect(try await cluster.register("after-recovery", via: survivor))
        registered.insert("after-recovery")
        try await Self.join(cluster, 4, expecting: registered, via: survivor)
    }

    @Test(.timeLimit(.minutes(3)))
    func aRollingRestartUnderTrafficFailsNoRoute() async throws {
        try await ServingClusterTests.with(engines: 2, environment: [:]) { cluster, fleet in
            _ = try await cluster.leader()
            try await cluster.waitUntilReady()
            try await ServingClusterTests.register(cluster, fleet, via: cluster.founders[0])
            let failures = ManagedCounter()
            let successes = ManagedCounter()
            let reasons = ReasonLog()
            let nodes = cluster.founders
            // A client that knows every node and moves on when one does not answer, retrying for
            // about half a second in all.
            let traffic = Task {
                var index = 0
                while !Task.isCancelled {
                    index += 1
                    var routed = false
                    var tried: [String] = []
                    attempts: for attempt in 0..<15 {
                        let via = nodes[(index + attempt) % nodes.count]
                        do {
                            let answer = try await cluster.request(.POST, cluster.endpoint(via) + "/v1/route", json: #"{"model":"m","prompt":"rolling \#(index)"}"#)
                            if answer.status == 200 {
                                routed = true
                                break attempts
                            }
                            tried.append("\(via): \(answer.status) \(answer.error?.message ?? "")")
                        } catch {
                            tried.append("\(via): \(error)")
                        }
                        if attempt % nodes.count == nodes.count - 1 { try? await Task.sleep(for: .milliseconds(100)) }
                    }
                    // The test's own cancellation at the end is not a failed route.
                    if Task.isCancelled { break }
                    if routed { successes.add() } else {
                        failures.add()
                        reasons.add(tried.joined(separator: "; "))
                    }
                    try? await Task.sleep(for: .milliseconds(5))
                }
            }
            let leader = try await cluster.leader()
            // Followers first, one at a time; each back and caught up before the next.
            for id in nodes where id != leader {
                cluster.terminate(id)
                try cluster.start(id)
                try await cluster.waitUntilReady()
            }
            // Then the leader, after handing leadership away.
            let transfer = try cluster.ctl(["leader", "transfer", "--endpoints", cluster.endpoint(leader)])
            #expect(transfer.status == 0, "\(transfer.output)")
            cluster.terminate(leader)
            try cluster.start(leader)
            try await cluster.waitUntilReady()
            try await Task.sleep(for: .milliseconds(500))
            traffic.cancel()
            _ = await traffic.result
            #expect(failures.value == 0, "routes failed during the rolling restart: \(reasons.lines)")
            #expect(successes.value > 50)
        }
    }
}

/// Why requests failed, for the test's message.
final class ReasonLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String] = []
    func add(_ line: String) { lock.lock(); entries.append(line); lock.unlock() }
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return entries }
}
