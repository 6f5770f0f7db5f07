import ArgumentParser
import AsyncHTTPClient
import Foundation
import FulcrumAPI
import NIOCore
import NIOHTTP1
import NIOSSL

@main
struct FulcrumCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrumctl",
        abstract: "Administer a Fulcrum cluster: endpoints, membership, leadership, snapshots, workers, configuration.",
        discussion: """
            Every flag of the connection has an environment variable: FULCRUM_ENDPOINTS, FULCRUM_CACERT, FULCRUM_CERT, \
            FULCRUM_KEY, FULCRUM_INSECURE_SKIP_TLS_VERIFY, FULCRUM_DIAL_TIMEOUT, FULCRUM_COMMAND_TIMEOUT, FULCRUM_OUTPUT; \
            the API key comes from FULCRUM_API_KEY only (never a flag, so it stays out of process lists).
            """,
        version: FulcrumCtl.version,
        subcommands: [
            Status.self, EndpointCommand.self, Member.self, Leader.self, SnapshotCommand.self, WorkerCommand.self, ConfigCommand.self,
            VersionCommand.self,
        ]
    )

    static let version = "0.1.0"
}

/// Options every command takes; each flag falls back to its FULCRUM_… environment variable.
struct Connection: ParsableArguments {
    @Option(name: .long, help: "Comma-separated node URLs, e.g. http://127.0.0.1:8101 ($FULCRUM_ENDPOINTS).")
    var endpoints: String?

    @Option(name: [.customShort("o"), .long], help: "Output format: table, json or simple ($FULCRUM_OUTPUT; default table).")
    var output: OutputFormat?

    @Option(name: .long, help: "CA bundle that verifies the nodes' HTTPS certificates ($FULCRUM_CACERT).")
    var cacert: String?

    @Option(name: .long, help: "Client certificate, PEM ($FULCRUM_CERT).")
    var cert: String?

    @Option(name: .long, help: "Client certificate's private key, PEM ($FULCRUM_KEY).")
    var key: String?

    @Flag(name: .long, help: "Accept any HTTPS certificate ($FULCRUM_INSECURE_SKIP_TLS_VERIFY=true).")
    var insecureSkipTLSVerify = false

    @Option(name: .long, help: "Time to connect to one endpoint before trying the next, e.g. 2s, 500ms ($FULCRUM_DIAL_TIMEOUT; default 2s).")
    var dialTimeout: String?

    @Option(name: .long, help: "Time for one request to answer, e.g. 15s ($FULCRUM_COMMAND_TIMEOUT; default 15s).")
    var commandTimeout: String?

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case table, json, simple }

    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    var format: OutputFormat {
        get throws {
            if let output { return output }
            guard let text = Self.environment["FULCRUM_OUTPUT"], !text.isEmpty else { return .table }
            guard let format = OutputFormat(rawValue: text) else { throw ValidationError("FULCRUM_OUTPUT must be table, json or simple, not '\(text)'") }
            return format
        }
    }

    func urls() throws -> [String] {
        let text = endpoints ?? Self.environment["FULCRUM_ENDPOINTS"] ?? ""
        let urls = text.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !urls.isEmpty else { throw ValidationError("no endpoints: pass --endpoints or set FULCRUM_ENDPOINTS") }
        for url in urls where !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            throw ValidationError("endpoint '\(url)' must start with http:// or https://")
        }
        return urls.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// `2s`, `500ms`, `1m` or a number of seconds.
    static func duration(_ text: String?, variable: String, default fallback: Duration) throws -> Duration {
        guard let text = text ?? environment[variable], !text.isEmpty else { return fallback }
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value > 0, value * scale <= 3_600 {
                return .milliseconds(Int64(value * scale * 1_000))
            }
        }
        if let value = Double(text), value > 0, value <= 3_600 { return .milliseconds(Int64(value * 1_000)) }
        throw ValidationError("\(variable == "FULCRUM_DIAL_TIMEOUT" ? "--dial-timeout" : "--command-timeout") must be a duration such as 2s or 500ms (at most 1h), not '\(text)'")
    }

    func validate() throws {
        _ = try format
        _ = try Self.duration(dialTimeout, variable: "FULCRUM_DIAL_TIMEOUT", default: .seconds(2))
        _ = try Self.duration(commandTimeout, variable: "FULCRUM_COMMAND_TIMEOUT", default: .seconds(15))
        for (flag, path) in [("--cacert", cacert ?? Self.environment["FULCRUM_CACERT"]), ("--cert", cert ?? Self.environment["FULCRUM_CERT"]), ("--key", key ?? Self.environment["FULCRUM_KEY"])] {
            if let path, !path.isEmpty, !FileManager.default.isReadableFile(atPath: path) { throw ValidationError("\(flag): cannot read \(path)") }
        }
        if (cert ?? Self.environment["FULCRUM_CERT"]) != nil, (key ?? Self.environment["FULCRUM_KEY"]) == nil {
            throw ValidationError("--cert needs --key")
        }
    }

    /// The HTTPS settings, from the flags and their variables.
    func tls() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let path = cacert ?? Self.environment["FULCRUM_CACERT"], !path.isEmpty { tls.trustRoots = .file(path) }
        if let path = cert ?? Self.environment["FULCRUM_CERT"], !path.isEmpty {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(path).map { .certificate($0) }
        }
        if let path = key ?? Self.environment["FULCRUM_KEY"], !path.isEmpty {
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: path, format: .pem))
        }
        if insecureSkipTLSVerify || Self.environment["FULCRUM_INSECURE_SKIP_TLS_VERIFY"] == "true" { tls.certificateVerification = .none }
        return tls
    }

    /// Runs `body` with a client for these endpoints and settings, shutting it down after.
    func withClient<T>(_ body: (AdminClient) async throws -> T) async throws -> T {
        let client = try AdminClient(connection: self)
        do {
            let result = try await body(client)
            try? await client.http.shutdown()
            return result
        } catch {
            try? await client.http.shutdown()
            throw error
        }
    }
}

struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Talks to the admin API, following a follower's "not the leader" answer to the leader.
struct AdminClient {
    let endpoints: [String]
    let http: HTTPClient
    let commandTimeout: Duration

    /// A node that is down must not hold the command up: one connection attempt per endpoint
    /// within the dial timeout, then the next endpoint.
    init(connection: Connection) throws {
        endpoints = try connection.urls()
        var configuration = HTTPClient.Configuration(tlsConfiguration: try connection.tls())
        let dial = try Connection.duration(connection.dialTimeout, variable: "FULCRUM_DIAL_TIMEOUT", default: .seconds(2))
        configuration.timeout.connect = .milliseconds(dial.milliseconds)
        configuration.connectionPool.retryConnectionEstablishment = false
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        commandTimeout = try Connection.duration(connection.commandTimeout, variable: "FULCRUM_COMMAND_TIMEOUT", default: .seconds(15))
    }

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
                return try Self.check(try await send(method, leaderEndpoint + path, body: encoded), at: leaderEndpoint)
            }
            return try Self.check(answer, at: endpoint)
        }
        throw CommandFailure(lastError)
    }

    /// `GET path` on one endpoint, decoded (no failover: the caller asked that node).
    func get<Result: Decodable>(_ path: String, at endpoint: String, as type: Result.Type = Result.self) async throws -> Result {
        try Self.check(try await send(.GET, endpoint + path, body: nil), at: endpoint)
    }

    static func check<Result: Decodable>(_ answer: Answer, at endpoint: String) throws -> Result {
        guard (200..<300).contains(answer.status) else {
            throw CommandFailure("\(endpoint): HTTP \(answer.status): \(answer.error?.message ?? String(decoding: answer.body.prefix(300), as: UTF8.self))")
        }
        do {
            return try FulcrumJSON.decode(Result.self, from: answer.body)
        } catch {
            throw CommandFailure("\(endpoint): unexpected answer (\(error)): \(String(decoding: answer.body.prefix(300), as: UTF8.self))")
        }
    }

    /// The endpoints to address: the given ones, or with `cluster` also every member's endpoint
    /// the replicated state holds (a node announces its `http_advertise` URL when it leads).
    /// Members whose endpoint is not known are named on standard error.
    func targets(cluster: Bool) async throws -> [String] {
        guard cluster else { return endpoints }
        let status = try await call(.GET, "/admin/cluster", needsLeader: false, as: ClusterStatus.self)
        var targets: [String] = []
        var answered: Swift.Set<UInt64> = []
        for endpoint in endpoints {
            if let own = try? await get("/admin/cluster", at: endpoint, as: ClusterStatus.self) { answered.insert(own.id) }
            targets.append(endpoint)
        }
        for member in status.members {
            guard let endpoint = member.endpoint.map({ $0.hasSuffix("/") ? String($0.dropLast()) : $0 }) else {
                if !answered.contains(member.id) {
                    FileHandle.standardError.write(Data("fulcrumctl: member \(member.id) (\(member.address)) has announced no HTTP endpoint; add it to --endpoints\n".utf8))
                }
                continue
            }
            if !targets.contains(endpoint) { targets.append(endpoint) }
        }
        return targets
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

    /// Clusters with API keys: the key comes from FULCRUM_API_KEY, never a flag.
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
                let response = try await http.execute(request, timeout: .seconds(max(120, commandTimeout.seconds)))
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

    func send(_ method: HTTPMethod, _ url: String, body: Data?) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        Self.authorize(&request)
        let response = try await http.execute(request, timeout: .milliseconds(commandTimeout.milliseconds))
        let bytes = try await response.body.collect(upTo: 4 << 20)
        return Answer(status: Int(response.status.code), body: Data(bytes.readableBytesView))
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
    }

    var seconds: Int64 { components.seconds }
}

func printJSON(_ value: some Encodable) throws {
    let encoder = FulcrumJSON.encoder
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// A one-line answer in the chosen format: JSON as the node answered, or the line.
func printAnswer(_ answer: some Encodable, format: Connection.OutputFormat, simple: String, table: String) throws {
    switch format {
    case .json: try printJSON(answer)
    case .simple: print(simple)
    case .table: print(table)
    }
}

/// Rows as a table (aligned columns under a header) or simple (comma-separated, no header).
func printRows(_ header: [String], _ rows: [[String]], format: Connection.OutputFormat) {
    if format == .simple {
        for row in rows { print(row.joined(separator: ", ")) }
        return
    }
    var widths = header.map(\.count)
    for row in rows { for (column, cell) in row.enumerated() where column < widths.count { widths[column] = max(widths[column], cell.count) } }
    for row in [header] + rows {
        print(row.enumerated().map { $1.padding(toLength: widths[min($0, widths.count - 1)], withPad: " ", startingAt: 0) }.joined(separator: "  ")
            .trimmingCharacters(in: .whitespaces))
    }
}

func printStatus(_ status: ClusterStatus, format: Connection.OutputFormat) throws {
    switch format {
    case .json: return try printJSON(status)
    case .simple:
        print("\(status.id), \(status.clusterId), \(status.role), \(status.term), \(status.leader.map(String.init) ?? "-"), \(status.commitIndex), \(status.appliedIndex)")
    case .table:
        let leader = status.leader.map(String.init) ?? "-"
        print("node \(status.id) of cluster \(status.clusterId): \(status.role), term \(status.term), leader \(leader)")
        print("log: first \(status.firstIndex), last \(status.lastIndex), commit \(status.commitIndex), applied \(status.appliedIndex)")
        printMembers(status, format: .table)
    }
}

func printMembers(_ status: ClusterStatus, format: Connection.OutputFormat) {
    let rows = status.members.map { member -> [String] in
        [
            "\(member.id)", member.address, member.endpoint ?? "-", member.voter ? "voter" : "learner",
            member.id == status.leader ? "leader" : "", member.match.map(String.init) ?? "-",
        ]
    }
    printRows(["ID", "PEER ADDRESS", "HTTP ENDPOINT", "KIND", "ROLE", "MATCH"], rows, format: format)
}

