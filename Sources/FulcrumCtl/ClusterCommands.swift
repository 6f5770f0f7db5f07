import ArgumentParser
import Cluster
import Foundation
import FulcrumAPI
import NIOHTTP1
import WireCoding

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the cluster as the first reachable node sees it.")
    @OptionGroup var connection: Connection

    func run() async throws {
        let format = try connection.format
        let status = try await connection.withClient { try await $0.call(.GET, "/admin/cluster", needsLeader: false, as: ClusterStatus.self) }
        try printStatus(status, format: format)
    }
}

/// etcdctl's `endpoint` commands: each endpoint's status, health and state hash.
struct EndpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoint", abstract: "Status, health and state hash of each endpoint (--cluster: of every member).",
        subcommands: [EndpointStatus.self, Health.self, HashKV.self]
    )

    struct Targets: ParsableArguments {
        @Flag(help: "Every member's endpoint, as the first reachable node knows them, instead of --endpoints.") var cluster = false
    }

    /// One line per endpoint: what it says of itself.
    struct EndpointStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "Each endpoint's node id, version, role, term and indexes.")
        @OptionGroup var connection: Connection
        @OptionGroup var targets: Targets

        struct Row: Encodable {
            var endpoint: String
            var id: UInt64
            var version: String
            var isLeader: Bool
            var isLearner: Bool
            var term: UInt64
            var commitIndex: UInt64
            var appliedIndex: UInt64
            var lastIndex: UInt64
            var leader: UInt64?
        }

        func run() async throws {
            let format = try connection.format
            var failed: [String] = []
            let rows = try await connection.withClient { client -> [Row] in
                var rows: [Row] = []
                for endpoint in try await client.targets(cluster: targets.cluster) {
                    do {
                        let status = try await client.get("/admin/cluster", at: endpoint, as: ClusterStatus.self)
                        let version = (try? await client.get("/version", at: endpoint, as: VersionAnswer.self))?.version ?? "?"
                        let learner = status.members.contains { $0.id == status.id && !$0.voter }
                        rows.append(Row(
                            endpoint: endpoint, id: status.id, version: version, isLeader: status.leader == status.id, isLearner: learner,
                            term: status.term, commitIndex: status.commitIndex, appliedIndex: status.appliedIndex, lastIndex: status.lastIndex,
                            leader: status.leader
                        ))
                    } catch {
                        failed.append("\(endpoint): \(error)")
                    }
                }
                return rows
            }
            if format == .json {
                try printJSON(rows)
            } else {
                printRows(
                    ["ENDPOINT", "ID", "VERSION", "IS LEADER", "IS LEARNER", "RAFT TERM", "RAFT INDEX", "APPLIED INDEX"],
                    rows.map { ["\($0.endpoint)", "\($0.id)", $0.version, "\($0.isLeader)", "\($0.isLearner)", "\($0.term)", "\($0.lastIndex)", "\($0.appliedIndex)"] },
                    format: format
                )
            }
            for failure in failed { FileHandle.standardError.write(Data("fulcrumctl: \(failure)\n".utf8)) }
            if !failed.isEmpty { throw ExitCode(1) }
        }
    }

    /// Healthy: the process answers `/healthz` and is ready (a leader known, its log applied).
    struct Health: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Whether each endpoint is live and ready; exits 1 when any is not.")
        @OptionGroup var connection: Connection
        @OptionGroup var targets: Targets

        struct Row: Encodable {
            var endpoint: String
            var health: Bool
            var took: String
            var error: String?
        }

        func run() async throws {
            let format = try connection.format
            let rows = try await connection.withClient { client -> [Row] in
                var rows: [Row] = []
                for endpoint in try await client.targets(cluster: targets.cluster) {
                    let started = ContinuousClock.now
                    var problem: String?
                    do {
                        let ready = try await client.send(.GET, endpoint + "/readyz", body: nil)
                        if ready.status != 200 { problem = "not ready: \(ready.error?.message ?? "HTTP \(ready.status)")" }
                    } catch {
                        problem = "\(error)"
                    }
                    let took = ContinuousClock.now - started
                    rows.append(Row(endpoint: endpoint, health: problem == nil, took: "\(took.milliseconds) ms", error: problem))
                }
                return rows
            }
            switch format {
            case .json: try printJSON(rows)
            case .table: printRows(["ENDPOINT", "HEALTH", "TOOK", "ERROR"], rows.map { [$0.endpoint, "\($0.health)", $0.took, $0.error ?? ""] }, format: .table)
            case .simple:
                for row in rows {
                    print(row.health ? "\(row.endpoint) is healthy: ready, took = \(row.took)" : "\(row.endpoint) is unhealthy: \(row.error ?? "")")
                }
            }
            if rows.contains(where: { !$0.health }) { throw ExitCode(1) }
        }
    }

    /// The replicated state's fingerprint at each endpoint's applied index: replicas at the same
    /// index must agree.
    struct HashKV: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "hashkv", abstract: "Each endpoint's state fingerprint and applied index (equal indexes must show equal hashes)."
        )
        @OptionGroup var connection: Connection
        @OptionGroup var targets: Targets

        struct Row: Encodable {
            var endpoint: String
            var hash: String
            var appliedIndex: UInt64
        }

        func run() async throws {
            let format = try connection.format
            var failed: [String] = []
            let rows = try await connection.withClient { client -> [Row] in
                var rows: [Row] = []
                for endpoint in try await client.targets(cluster: targets.cluster) {
                    do {
                        let digest = try await client.get("/admin/state", at: endpoint, as: StateDigest.self)
                        rows.append(Row(endpoint: endpoint, hash: digest.fingerprint, appliedIndex: digest.appliedIndex))
                    } catch {
                        failed.append("\(endpoint): \(error)")
                    }
                }
                return rows
            }
            if format == .json {
                try printJSON(rows)
            } else {
                printRows(["ENDPOINT", "HASH", "APPLIED INDEX"], rows.map { [$0.endpoint, $0.hash, "\($0.appliedIndex)"] }, format: format)
            }
            for failure in failed { FileHandle.standardError.write(Data("fulcrumctl: \(failure)\n".utf8)) }
            if !failed.isEmpty { throw ExitCode(1) }
        }
    }
}

struct Member: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, add (as learner), promote, update or remove members.",
        subcommands: [List.self, Add.self, Promote.self, Update.self, Remove.self]
    )

    /// One membership change through the leader; prints the cluster as it answered.
    static func change(
        _ connection: Connection, _ method: HTTPMethod, _ path: String, body: (some Encodable & Sendable)? = AdminClient.NoBody?.none
    ) async throws {
        let format = try connection.format
        let status = try await connection.withClient { try await $0.call(method, path, body: body, needsLeader: true, as: ClusterStatus.self) }
        try printStatus(status, format: format)
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every member: id, peer address, HTTP endpoint, voter or learner.")
        @OptionGroup var connection: Connection
        func run() async throws {
            let format = try connection.format
            let status = try await connection.withClient { try await $0.call(.GET, "/admin/members", needsLeader: false, as: ClusterStatus.self) }
            if format == .json { try printJSON(status) } else { printMembers(status, format: format) }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a node as a learner (it receives the log but does not vote).")
        @OptionGroup var connection: Connection
        @Option(help: "The new node's id.") var id: UInt64
        @Option(help: "The new node's peer address, host:port.") var address: String

        func validate() throws {
            guard id > 0 else { throw ValidationError("--id must be positive") }
            guard address.contains(":") else { throw ValidationError("--address must be host:port") }
        }

        func run() async throws { try await Member.change(connection, .POST, "/admin/members", body: AddMember(id: id, address: address)) }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a caught-up learner a voter.")
        @OptionGroup var connection: Connection
        @Argument(help: "The learner's id.") var id: UInt64

        func run() async throws { try await Member.change(connection, .POST, "/admin/members/\(id)/promote") }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a member's peer address (etcdctl's --peer-urls).")
        @OptionGroup var connection: Connection
        @Argument(help: "The member's id.") var id: UInt64
        @Option(help: "The member's new peer address, host:port.") var address: String

        func validate() throws {
            guard address.contains(":") else { throw ValidationError("--address must be host:port") }
        }

        func run() async throws { try await Member.change(connection, .PUT, "/admin/members/\(id)", body: UpdateMember(address: address)) }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member (voter or learner).")
        @OptionGroup var connection: Connection
        @Argument(help: "The member's id.") var id: UInt64

        func run() async throws { try await Member.change(connection, .DELETE, "/admin/members/\(id)") }
    }
}

struct Leader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Leadership.", subcommands: [Transfer.self])

    struct Transfer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hand leadership to a node (default: the most caught-up voter).")
        @OptionGroup var connection: Connection
        @Option(help: "The voter to hand leadership to.") var to: UInt64?

        func run() async throws {
            let format = try connection.format
            let answer = try await connection.withClient {
                try await $0.call(.POST, "/admin/leader/transfer", body: LeaderTransfer(to: to), needsLeader: true, as: LeaderAnswer.self)
            }
            try printAnswer(answer, format: format, simple: "\(answer.leader)", table: "leader: node \(answer.leader)")
        }
    }
}

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Snapshots: compact a node's log, save the state to a file, or describe a saved file.",
        subcommands: [Take.self, Save.self, SnapshotStatus.self], defaultSubcommand: Take.self
    )

    struct Take: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Force a snapshot (log compaction) on a node.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let format = try connection.format
            let answer = try await connection.withClient { try await $0.call(.POST, "/admin/snapshot", needsLeader: false, as: SnapshotAnswer.self) }
            try printAnswer(answer, format: format, simple: "\(answer.index)", table: "snapshot at index \(answer.index)")
        }
    }

    struct Save: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save the cluster's state to FILE (a backup; `fulcrum restore` starts a new cluster from it).",
            discussion: "The first endpoint that answers takes a fresh snapshot; ask the leader (or use /admin/cluster first) for the newest state."
        )
        @OptionGroup var connection: Connection
        @Argument(help: "The file to write.") var file: String

        func run() async throws {
            let bytes = try await connection.withClient { try await $0.download("/admin/snapshot/archive", limit: 1 << 30) }
            guard FileManager.default.createFile(atPath: file + ".partial", contents: Data(bytes)) else {
                throw CommandFailure("cannot write \(file)")
            }
            do {
                if FileManager.default.fileExists(atPath: file) { try FileManager.default.removeItem(atPath: file) }
                try FileManager.default.moveItem(atPath: file + ".partial", toPath: file)
            } catch {
                throw CommandFailure("cannot write \(file): \(error.localizedDescription)")
            }
            print("saved \(bytes.count) bytes to \(file)")
        }
    }

    /// etcdctl's `snapshot status`: what a saved file holds, checked (no cluster needed).
    struct SnapshotStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "Check a saved snapshot FILE and print its cluster, index, term, hash and size.")
        @Option(name: [.customShort("o"), .long], help: "Output format: table, json or simple.") var output: Connection.OutputFormat = .table
        @Argument(help: "The snapshot file.") var file: String

        struct Row: Encodable {
            var clusterId: String
            var index: UInt64
            var term: UInt64
            var hash: String
            var totalSize: Int
        }

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else { throw CommandFailure("cannot read \(file)") }
            let bytes = [UInt8](data)
            let archive: SnapshotArchive
            do {
                archive = try SnapshotArchive(decoding: bytes)
            } catch {
                throw CommandFailure("\(file): \(error)")
            }
            var hasher = StableHasher()
            hasher.combine(bytes: bytes)
            let hash = String(hasher.finalized, radix: 16)
            let row = Row(clusterId: archive.clusterID, index: archive.index, term: archive.term, hash: hash, totalSize: bytes.count)
            if output == .json { return try printJSON(row) }
            printRows(["CLUSTER", "INDEX", "TERM", "HASH", "TOTAL SIZE"], [[row.clusterId, "\(row.index)", "\(row.term)", row.hash, "\(row.totalSize)"]], format: output)
        }
    }
}

struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "fulcrumctl's version and, with endpoints, each node's.")
    @OptionGroup var connection: Connection

    func run() async throws {
        print("fulcrumctl version: \(FulcrumCtl.version)")
        let configured = connection.endpoints ?? Connection.environment["FULCRUM_ENDPOINTS"]
        guard let configured, !configured.isEmpty else { return }
        try await connection.withClient { client in
            for endpoint in client.endpoints {
                if let answer = try? await client.get("/version", at: endpoint, as: VersionAnswer.self) {
                    print("\(endpoint): fulcrum \(answer.version) (Swift \(answer.swiftVersion))")
                } else {
                    print("\(endpoint): unreachable")
                }
            }
        }
    }
}
