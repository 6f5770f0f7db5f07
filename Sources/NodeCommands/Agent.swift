import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Server
import Serving
import FulcrumAgent
import FulcrumAPI

/// `fulcrum agent`: runs beside an inference engine, registers it with the cluster and sends
/// heartbeats with the host's resources, with retry, backoff and failover between nodes.
struct Agent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register a worker and send its host's resources to the cluster.",
        discussion: "The API key, when the cluster needs one, comes from FULCRUM_API_KEY (a key with the worker scope)."
    )

    @Option(help: "Cluster node URLs, comma-separated (any node; followers forward).") var cluster: String
    @Option(help: "Worker id (unique in the cluster).") var workerId: String
    @Option(help: "Model the engine serves.") var model: String
    @Option(help: "VIT, PREFILL, DECODE or PDFUSION.") var role: String
    @Option(help: "host:port of the engine's HTTP API.") var address: String
    @Option(help: "Placement group.") var group: String?
    @Option(name: .customLong("label"), help: "key=value label (repeatable); status=native|vllm|sglang|tcp|none picks the status format.")
    var labels: [String] = []
    @Option(help: "Milliseconds between heartbeats.") var intervalMs = 1_000
    @Option(help: "Filesystem whose usage is reported.") var diskPath = "/"
    @Flag(help: "Send one heartbeat and exit (for checks).") var once = false

    func validate() throws {
        guard !endpoints.isEmpty else { throw ValidationError("--cluster needs at least one http(s):// URL") }
        guard ["VIT", "PREFILL", "DECODE", "PDFUSION"].contains(role) else { throw ValidationError("--role must be VIT, PREFILL, DECODE or PDFUSION") }
        guard (100...3_600_000).contains(intervalMs) else { throw ValidationError("--interval-ms must be in 100...3600000") }
        for label in labels where label.split(separator: "=", maxSplits: 1).count != 2 {
            throw ValidationError("--label expects key=value, got '\(label)'")
        }
    }

    var endpoints: [String] {
        cluster.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("http://") || $0.hasPrefix("https://") }
            .map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    func run() async throws {
        var logger = Logger(label: "fulcrum.agent")
        logger.logLevel = .info
        var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(1)))
        // A node that is down fails at once, so the agent moves on to the next one.
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            try await heartbeatLoop(client: client, logger: logger)
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    private func heartbeatLoop(client: HTTPClient, logger: Logger) async throws {
        let key = ProcessInfo.processInfo.environment["FULCRUM_API_KEY"]
        var labelMap: [String: String] = [:]
        for label in labels {
            let parts = label.split(separator: "=", maxSplits: 1)
            labelMap[String(parts[0])] = String(parts[1])
        }
        let registration = try FulcrumJSON.encode(WorkerRegistration(
            id: workerId, model: model, role: role, address: address, group: group ?? "", labels: labelMap
        ))
        var endpointIndex = 0
        var backoff = 0.2
        var registered = false
        var sample: [(busy: UInt64, total: UInt64)]?
        while !Task.isCancelled {
            let endpoint = endpoints[endpointIndex % endpoints.count]
            do {
                if !registered {
                    try await send(client, "POST", endpoint + "/v1/workers", registration, key: key)
                    registered = true
                    logger.info("registered \(workerId) with \(endpoint)")
                }
                let (stats, next) = HostStats.read(previous: sample, diskPath: diskPath)
                sample = next
                let beat = try FulcrumJSON.encode(stats.heartbeat)
                let status = try await send(client, "POST", endpoint + "/v1/workers/\(workerId)/heartbeat", beat, key: key, allowNotFound: true)
                if status == 404 {
                    registered = false
                    continue
                }
                backoff = 0.2
                if once { return }
                try await Task.sleep(for: .milliseconds(intervalMs))
            } catch let error as AgentError where error.fatal {
                throw ValidationError(error.message)
            } catch is CancellationError {
                return
            } catch {
                logger.warning("\(endpoint): \(error); retrying in \(String(format: "%.1f", backoff)) s")
                endpointIndex += 1
                try await Task.sleep(for: .milliseconds(Int(backoff * 1000 * Double.random(in: 0.5...1.5))))
                backoff = min(backoff * 2, 10)
            }
        }
    }

    struct AgentError: Error, CustomStringConvertible {
        var message: String
        var fatal: Bool
        var description: String { message }
    }

    @discardableResult
    private func send(_ client: HTTPClient, _ method: String, _ url: String, _ body: Data, key: String?, allowNotFound: Bool = false) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.method = .RAW(value: method)
        request.headers.add(name: "Content-Type", value: "application/json")
        if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(5))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        let status = Int(response.status.code)
        if (200..<300).contains(status) || (allowNotFound && status == 404) { return status }
        if status == 400 || status == 401 || status == 403 {
            throw AgentError(message: "the cluster refused the worker (\(status)): \(text)", fatal: true)
        }
        throw AgentError(message: "\(status): \(text)", fatal: false)
    }
}
