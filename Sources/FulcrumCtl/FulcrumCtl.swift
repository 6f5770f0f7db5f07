import ArgumentParser
import AsyncHTTPClient
import Foundation
import FulcrumAPI
import NIOCore
import NIOHTTP1

@main
struct FulcrumCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrumctl",
        abstract: "Administer a Fulcrum cluster: status, membership, leadership, snapshots.",
        discussion: "Endpoints come from --endpoints or FULCRUM_ENDPOINTS (comma-separated HTTP URLs of the nodes).",
        subcommands: [Status.self, Member.self, Leader.self, SnapshotCommand.self]
    )
}

/// Options every command takes.
struct Connection: ParsableArguments {
    @Option(name: .long, help: "Comma-separated node URLs, e.g. http://127.0.0.1:8101 (default: $FULCRUM_ENDPOINTS).")
    var endpoints: String?

    @Option(name: [.customShort("o"), .long], help: "Output format: table or json.")
    var output: OutputFormat = .table

    enum OutputFormat: String, ExpressibleByArgument { case table, json }

    func urls() throws -> [String] {
        let text = endpoints ?? ProcessInfo.processInfo.environment["FULCRUM_ENDPOINTS"] ?? ""
        let urls = text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !urls.isEmpty else { throw ValidationError("no endpoints: pass --endpoints or set FULCRUM_ENDPOINTS") }
        for url in urls where !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw ValidationError("endpoint '\(url)' must start with http:// or https://")
        }
        return urls.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }
}

struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Talks to the admin API, following a follower's "not the leader" answer to the leader.
struct AdminClient {
    let endpoints: [String]

    /// A node that is down must not hold the command up: one quick connection attempt per
    /// endpoint, then the next endpoint.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(1)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    struct Answer {
        var status: Int
        var body: Data

        /// The error the node answered, when the body is one.
        var error: ErrorBody.Detail? { (try? FulcrumJSON.decode(ErrorBody.self, from: body))?.error }
    }

    /// An empty JSON body, for commands that send none.
    struct NoBody: Encodable {}

    /// Sends the command to the first endpoint that answers; a follower's 421 (this needs the
    /// leader) is followed to the leader's endpoint. Returns the answer decoded as `Result`.
    func call<Result: Decodable>(
        _ method: HTTPMethod, _ path: String, body: (some Encodable & Sendable)? = NoBody?.none, needsLeader: Bool,
        as type: Result.Type = Result.self
    ) async throws -> Result {
        let encoded = try body.map { try FulcrumJSON.encode($0) }
        var lastError = "no endpoint answered"
        for endpoint in endpoints {
            let answer: Answer
            do {
                answer = try await send(method, endpoint + path, body: encoded)
            } catch {
                lastError = "\(endpoint): \(error)"
                continue
            }
            if answer.status == 421, needsLeader, let detail = answer.error {
                guard let leader = detail.leaderId else {
                    lastError = "\(endpoint): \(detail.message)"
                    continue
                }
                guard let leaderEndpoint = await endpointOfNode(leader) else {
                    throw CommandFailure(
                        "node \(leader) leads (peer address \(detail.leaderPeerAddress ?? "?")), "
                            + "but none of the endpoints is that node; add its HTTP URL to --endpoints"
                    )
                }
                return try check(try await send(method, leaderEndpoint + path, body: encoded), at: leaderEndpoint)
            }
            return try check(answer, at: endpoint)
        }
        throw CommandFailure(lastError)
    }

    private func check<Result: Decodable>(_ answer: Answer, at endpoint: String) throws -> Result {
        guard (200..<300).contains(answer.status) else {
            throw CommandFailure("\(endpoint): HTTP \(answer.status): \(answer.error?.message ?? String(decoding: answer.body.prefix(300), as: UTF8.self))")
        }
        do {
            return try FulcrumJSON.decode(Result.self, from: answer.body)
        } catch {
            throw CommandFailure("\(endpoint): unexpected answer (\(error)): \(String(decoding: answer.body.prefix(300), as: UTF8.self))")
        }
    }

    private func endpointOfNode(_ id: UInt64) async -> String? {
        for endpoint in endpoints {
            if let answer = try? await send(.GET, endpoint + "/admin/cluster", body: nil),
                (try? FulcrumJSON.decode(ClusterStatus.self, from: answer.body))?.id == id
            {
                return endpoint
            }
        }
        return nil
    }

    /// Clusters with API keys: the key (admin scope) comes from FULCRUM_API_KEY, never a flag.
    static func authorize(_ request: inout HTTPClientRequest) {
        if let key = ProcessInfo.processInfo.environment["FULCRUM_API_KEY"], !key.isEmpty {
            request.headers.add(name: "Authorization", value: "Bearer \(key)")
        }
    }

    /// The raw body of `GET path` from the first endpoint that answers 200.
    func download(_ path: String, limit: Int) async throws -> [UInt8] {
        var lastError = "no endpoint answered"
        for endpoint in endpoints {
            var request = HTTPClientRequest(url: endpoint + path)
            Self.authorize(&request)
            do {
                let response = try await Self.http.execute(request, timeout: .seconds(120))
                let bytes = try await response.body.collect(upTo: limit)
                guard response.status.code == 200 else {
                    lastError = "\(endpoint): HTTP \(response.status.code): \(String(buffer: bytes).prefix(300))"
                    continue
                }
                return Array(bytes.readableBytesView)
            } catch {
                lastError = "\(endpoint): \(error)"
            }
        }
        throw CommandFailure(lastError)
    }

    private func send(_ method: HTTPMethod, _ url: String, body: Data?) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        Self.authorize(&request)
        let response = try await Self.http.execute(request, timeout: .seconds(15))
        let bytes = try await response.body.collect(upTo: 4 << 20)
        return Answer(status: Int(response.status.code), body: Data(bytes.readableBytesView))
    }
}

func printJSON(_ value: some Encodable) throws {
    let encoder = FulcrumJSON.encoder
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func printStatus(_ status: ClusterStatus, format: Connection.OutputFormat) throws {
    guard format == .table else { return try printJSON(status) }
    let leader = status.leader.map(String.init) ?? "-"
    print("node \(status.id) of cluster \(status.clusterId): \(status.role), term \(status.term), leader \(leader)")
    print("log: first \(status.firstIndex), last \(status.lastIndex), commit \(status.commitIndex), applied \(status.appliedIndex)")
    printMembers(status)
}

func printMembers(_ status: ClusterStatus) {
    let rows = status.members.map { member -> [String] in
        [
            "\(member.id)", member.address, member.voter ? "voter" : "learner",
            member.id == status.leader ? "leader" : "", member.match.map(String.init) ?? "-",
        ]
    }
    let header = ["ID", "PEER ADDRESS", "KIND", "ROLE", "MATCH"]
    var widths = header.map(\.count)
    for row in rows { for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) } }
    for row in [header] + rows {
        print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the cluster as the first reachable node sees it.")
    @OptionGroup var connection: Connection

    func run() async throws {
        let status = try await AdminClient(endpoints: connection.urls()).call(.GET, "/admin/cluster", needsLeader: false, as: ClusterStatus.self)
        try printStatus(status, format: connection.output)
    }
}

struct Member: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, add (as learner), promote or remove members.",
        subcommands: [List.self, Add.self, Promote.self, Remove.self]
    )

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        func run() async throws {
            let status = try await AdminClient(endpoints: connection.urls()).call(.GET, "/admin/members", needsLeader: false, as: ClusterStatus.self)
            if connection.output == .json { try printJSON(status) } else { printMembers(status) }
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

        func run() async throws {
            let status = try await AdminClient(endpoints: connection.urls())
                .call(.POST, "/admin/members", body: AddMember(id: id, address: address), needsLeader: true, as: ClusterStatus.self)
            try printStatus(status, format: connection.output)
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a caught-up learner a voter.")
        @OptionGroup var connection: Connection
        @Argument(help: "The learner's id.") var id: UInt64

        func run() async throws {
            let status = try await AdminClient(endpoints: connection.urls())
                .call(.POST, "/admin/members/\(id)/promote", needsLeader: true, as: ClusterStatus.self)
            try printStatus(status, format: connection.output)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a member (voter or learner).")
        @OptionGroup var connection: Connection
        @Argument(help: "The member's id.") var id: UInt64

        func run() async throws {
            let status = try await AdminClient(endpoints: connection.urls()).call(.DELETE, "/admin/members/\(id)", needsLeader: true, as: ClusterStatus.self)
            try printStatus(status, format: connection.output)
        }
    }
}

struct Leader: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Leadership.", subcommands: [Transfer.self])

    struct Transfer: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hand leadership to a node (default: the most caught-up voter).")
        @OptionGroup var connection: Connection
        @Option(help: "The voter to hand leadership to.") var to: UInt64?

        func run() async throws {
            let answer = try await AdminClient(endpoints: connection.urls())
                .call(.POST, "/admin/leader/transfer", body: LeaderTransfer(to: to), needsLeader: true, as: LeaderAnswer.self)
            if connection.output == .json { try printJSON(answer) } else { print("leader: node \(answer.leader)") }
        }
    }
}

struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Snapshots: compact a node's log, or save the state to a file.",
        subcommands: [Take.self, Save.self], defaultSubcommand: Take.self
    )

    struct Take: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Force a snapshot (log compaction) on a node.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let answer = try await AdminClient(endpoints: connection.urls()).call(.POST, "/admin/snapshot", needsLeader: false, as: SnapshotAnswer.self)
            if connection.output == .json { try printJSON(answer) } else { print("snapshot at index \(answer.index)") }
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
            let bytes = try await AdminClient(endpoints: connection.urls()).download("/admin/snapshot/archive", limit: 1 << 30)
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
}
