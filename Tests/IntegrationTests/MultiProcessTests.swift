import Foundation
import Testing

/// Three (then four) `fulcrum` processes on loopback. Bounded: each test stops its processes
/// and finishes within its time limit.
@Suite(.serialized) struct MultiProcessTests {
    @Test(.timeLimit(.minutes(2)))
    func writesThroughAnyNodeSurviveKillingTheLeader() async throws {
        let cluster = try ProcessCluster(founders: 3)
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()

        // Commands sent to any node (followers point at the leader) apply everywhere in order.
        var acknowledged: [String] = []
        for index in 0..<30 {
            let via = cluster.founders[index % 3]
            if try await cluster.register("w\(index)", via: via) { acknowledged.append("w\(index)") }
        }
        #expect(acknowledged.count == 30)
        let reference = try await cluster.workers(on: leader, consistent: true)
        #expect(reference == acknowledged.sorted())

        // kill -9 the leader: a new one is elected and accepts writes.
        cluster.kill9(leader)
        let successor = try await cluster.leader()
        #expect(successor != leader)
        for index in 30..<40 where try await cluster.register("w\(index)", via: successor) {
            acknowledged.append("w\(index)")
        }
        #expect(acknowledged.count == 40)

        // The old leader restarts from its disk and catches up; nothing acknowledged is lost.
        try cluster.start(leader)
        let expected = acknowledged.sorted()
        let deadline = Date().addingTimeInterval(20)
        var views: [UInt64: [String]] = [:]
        repeat {
            for id in cluster.founders { views[id] = try? await cluster.workers(on: id, consistent: false) }
            if cluster.founders.allSatisfy({ views[$0] == expected }) { break }
            try await Task.sleep(for: .milliseconds(100))
        } while Date() < deadline
        for id in cluster.founders { #expect(views[id] == expected, "node \(id)") }
    }

    @Test(.timeLimit(.minutes(2)))
    func membershipAndLeadershipThroughFulcrumctl() async throws {
        let cluster = try ProcessCluster(founders: 3, snapshotEntries: 10)
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        for index in 0..<40 { _ = try await cluster.register("w\(index)", via: leader) }
        // A fourth node joins as a learner and catches up (the log was compacted: by snapshot).
        try cluster.reservePorts(4)
        try cluster.start(4)
        var result = try cluster.ctl(["member", "add", "--id", "4", "--address", "127.0.0.1:\(cluster.peerPorts[4]!)"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("learner"))
        let deadline = Date().addingTimeInterval(20)
        // Node 4's HTTP listener may not be up yet: a refused connection is "not caught up yet".
        while ((try? await cluster.workers(on: 4, consistent: false))?.count ?? 0) < 40 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await cluster.workers(on: 4, consistent: false).count == 40)
        result = try cluster.ctl(["member", "promote", "4", "-o", "json"])
        #expect(result.status == 0, "\(result.output)")

        // Hand leadership to the newcomer, then remove a founder.
        result = try cluster.ctl(["leader", "transfer", "--to", "4"])
        #expect(result.status == 0, "\(result.output)")
        #expect(try await cluster.leader() == 4)
        let removed = cluster.founders.first { $0 != leader }!
        result = try cluster.ctl(["member", "remove", String(removed)])
        #expect(result.status == 0, "\(result.output)")
        cluster.terminate(removed)
        result = try cluster.ctl(["member", "list", "-o", "json"])
        #expect(result.status == 0)
        #expect(!result.output.contains("\"id\" : \(removed),"))
        // Bad input: a clear message and a non-zero exit.
        result = try cluster.ctl(["member", "promote", "99"])
        #expect(result.status != 0)
        #expect(result.output.contains("not a learner"))
        result = try cluster.ctl(["snapshot"])
        #expect(result.status == 0, "\(result.output)")
    }

    /// Every fulcrumctl command against three real nodes: etcdctl's endpoint commands, members,
    /// snapshots (save and status), workers, configuration, version, output formats, and the
    /// connection's flags and their environment variables.
    @Test(.timeLimit(.minutes(3)))
    func everyFulcrumctlCommandAgainstAThreeNodeCluster() async throws {
        let cluster = try ProcessCluster(founders: 3)
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        for worker in ["w0", "w1"] { #expect(try await cluster.register(worker, via: leader)) }
        func json(_ output: String) -> Any? { try? JSONSerialization.jsonObject(with: Data(output.utf8)) }

        // endpoint status: one row per endpoint, one leader.
        var result = try cluster.ctl(["endpoint", "status", "-o", "json"])
        #expect(result.status == 0, "\(result.output)")
        let rows = json(result.output) as? [[String: Any]] ?? []
        #expect(rows.count == 3 && rows.filter { $0["is_leader"] as? Bool == true }.count == 1 && rows.allSatisfy { $0["version"] as? String == "0.1.0" })
        result = try cluster.ctl(["endpoint", "status", "--cluster"])
        #expect(result.status == 0 && result.output.contains("RAFT TERM") && result.output.contains(cluster.endpoint(leader)), "\(result.output)")
        // endpoint health: every node ready; a dead endpoint makes it exit 1.
        result = try cluster.ctl(["endpoint", "health", "-o", "simple"])
        #expect(result.status == 0 && result.output.components(separatedBy: "is healthy").count == 4, "\(result.output)")
        result = try cluster.ctl(["endpoint", "health", "--endpoints", "http://127.0.0.1:1," + cluster.endpoint(leader), "--dial-timeout", "300ms"])
        #expect(result.status == 1 && result.output.contains("false") && result.output.contains("true"), "\(result.output)")
        // endpoint hashkv: replicas at the same applied index agree.
        var agreed = false
        for _ in 0..<50 where !agreed {
            result = try cluster.ctl(["endpoint", "hashkv", "-o", "json"])
            let hashes = json(result.output) as? [[String: Any]] ?? []
            agreed = result.status == 0 && hashes.count == 3 && Set(hashes.compactMap { $0["hash"] as? String }).count == 1
                && Set(hashes.compactMap { $0["applied_index"] as? Int }).count == 1
            if !agreed { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(agreed, "\(result.output)")
        // version, locally and of each node.
        result = try cluster.ctl(["version"])
        #expect(result.status == 0 && result.output.contains("fulcrumctl version: 0.1.0") && result.output.contains("fulcrum 0.1.0"), "\(result.output)")
        // Workers: list, drain, undrain, remove.
        result = try cluster.ctl(["worker", "drain", "w0"])
        #expect(result.status == 0 && result.output.contains("applied"), "\(result.output)")
        result = try cluster.ctl(["worker", "list", "--consistent", "-o", "json"])
        let workers = (json(result.output) as? [String: Any])?["workers"] as? [[String: Any]] ?? []
        #expect(workers.count == 2 && workers.first { $0["id"] as? String == "w0" }?["draining"] as? Bool == true, "\(result.output)")
        result = try cluster.ctl(["worker", "undrain", "w0"])
        #expect(result.status == 0, "\(result.output)")
        result = try cluster.ctl(["worker", "remove", "w1"])
        #expect(result.status == 0, "\(result.output)")
        result = try cluster.ctl(["worker", "list", "--consistent", "-o", "simple"])
        #expect(result.output.contains("w0, m, PDFUSION") && !result.output.contains("w1") && !result.output.contains("ID"), "\(result.output)")
        result = try cluster.ctl(["worker", "drain", "nobody"])
        #expect(result.status != 0, "\(result.output)")
        // Configuration: set through the leader, read back; an unknown setting is refused here.
        result = try cluster.ctl(["config", "set", "prefix_blocks_per_worker", "1234"])
        #expect(result.status == 0 && result.output.contains("applied"), "\(result.output)")
        var read = ""
        for _ in 0..<50 where read != "1234" {
            read = try cluster.ctl(["config", "get", "prefix_blocks_per_worker"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
            if read != "1234" { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(read == "1234")
        result = try cluster.ctl(["config", "get"])
        #expect(result.status == 0 && result.output.contains("prefix_blocks_per_worker") && result.output.contains("SETTING"), "\(result.output)")
        result = try cluster.ctl(["config", "set", "no_such_setting", "1"])
        #expect(result.status != 0 && result.output.contains("unknown setting"), "\(result.output)")
        result = try cluster.ctl(["config", "set", "cache_hit_threshold", "7"])
        #expect(result.status != 0, "the leader refuses an out-of-range value: \(result.output)")
        // Members: update a follower's peer address (to the same one: it stays reachable).
        let follower = try #require(cluster.founders.first { $0 != leader })
        result = try cluster.ctl(["member", "update", String(follower), "--address", "127.0.0.1:\(cluster.peerPorts[follower]!)"])
        #expect(result.status == 0 && result.output.contains("HTTP ENDPOINT"), "\(result.output)")
        result = try cluster.ctl(["member", "update", "99", "--address", "127.0.0.1:1"])
        #expect(result.status != 0 && result.output.contains("not a member"), "\(result.output)")
        // Snapshots: save, then describe the file; a damaged file is refused.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrumctl-\(UUID().uuidString).snapshot").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        result = try cluster.ctl(["snapshot", "save", "--endpoints", cluster.endpoint(leader), file])
        #expect(result.status == 0, "\(result.output)")
        result = try cluster.ctl(["snapshot", "status", file, "-o", "json"])
        let described = json(result.output) as? [String: Any] ?? [:]
        #expect(result.status == 0 && described["cluster_id"] as? String == "it" && (described["index"] as? Int ?? 0) > 0, "\(result.output)")
        var bytes = try #require(FileManager.default.contents(atPath: file))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: file))
        result = try cluster.ctl(["snapshot", "status", file])
        #expect(result.status != 0 && result.output.contains("damaged"), "\(result.output)")
        // The connection's flags and their variables: bad values are clear errors.
        result = try cluster.ctl(["endpoint", "health", "--command-timeout", "soon"])
        #expect(result.status != 0 && result.output.contains("--command-timeout"), "\(result.output)")
        result = try cluster.ctl(["endpoint", "health", "--cacert", "/nonexistent/ca.pem"])
        #expect(result.status != 0 && result.output.contains("cannot read"), "\(result.output)")
        var environment = ProcessInfo.processInfo.environment
        environment["FULCRUM_ENDPOINTS"] = cluster.endpoint(leader)
        environment["FULCRUM_OUTPUT"] = "json"
        environment["FULCRUM_COMMAND_TIMEOUT"] = "5s"
        result = try cluster.run("fulcrumctl", ["member", "list"], environment: environment)
        #expect(result.status == 0 && (json(result.output) as? [String: Any])?["members"] != nil, "\(result.output)")
        environment["FULCRUM_DIAL_TIMEOUT"] = "never"
        result = try cluster.run("fulcrumctl", ["member", "list"], environment: environment)
        #expect(result.status != 0 && result.output.contains("--dial-timeout"), "\(result.output)")
    }

    /// Nodes without CAP_NET_ADMIN (a container's default, even as root) form a cluster: the
    /// peer transport sets only options any process may set. It used to ask for TCP_NODELAY at
    /// the socket level, which is SO_DEBUG there: EACCES without the capability, so no peer
    /// connection ever opened in a container.
    @Test(.timeLimit(.minutes(1)), .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")))
    func nodesWithoutNetworkAdminCapabilityFormACluster() async throws {
        let cluster = try ProcessCluster(
            founders: 3, launcher: ["/usr/bin/setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--"]
        )
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        #expect(try await cluster.register("w0", via: leader))
    }
}
