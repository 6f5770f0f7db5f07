import AsyncHTTPClient
import Balancer
import NIOCore
import NIOPosix
import Serving
import FulcrumAPI

/// Reads a worker's status over the network for the leader's duties: its engine's status
/// endpoint (native, vLLM or SGLang format) over the shared HTTP client, rtp-llm's engine gRPC,
/// or a TCP connect.
struct HTTPWorkerProber: WorkerProber {
    let client: HTTPClient
    let clock: ClusterClock
    /// Engines started with `--api-key` want theirs on status calls too.
    let keys: EngineKeys
    /// rtp-llm engines are read over their gRPC instead.
    let rtpLLM = RTPLLMWorkerProber()

    /// The deadline covers the whole answer, body included: a worker that sends its headers
    /// and then stalls fails its probe on time instead of holding the polling round.
    func probe(_ worker: Worker, format: StatusFormat, cursor: EngineCursor, timeoutMilliseconds: Int) async throws -> EngineReport {
        try await withDeadline(.now + .milliseconds(timeoutMilliseconds), "a status probe of \(worker.id)") {
            if format == .rtpLLM {
                return try await rtpLLM.probe(worker, cursor: cursor, timeoutMilliseconds: timeoutMilliseconds, now: clock.now())
            }
            return EngineReport(load: try await probeOnce(worker, format: format, timeoutMilliseconds: timeoutMilliseconds))
        }
    }

    private func probeOnce(_ worker: Worker, format: StatusFormat, timeoutMilliseconds: Int) async throws -> EngineLoad? {
        guard let path = format.path else {
            try await Self.tcpConnect(worker.address, timeoutMilliseconds: timeoutMilliseconds, group: client.eventLoopGroup)
            return nil
        }
        var request = HTTPClientRequest(url: "http://\(worker.address)\(path)")
        request.method = .GET
        if let authorization = keys.authorization(for: worker) { request.headers.add(name: "Authorization", value: authorization) }
        let response = try await client.execute(request, timeout: .milliseconds(Int64(timeoutMilliseconds)))
        guard (200..<300).contains(response.status.code) else {
            throw StatusParseError(description: "status \(response.status.code)")
        }
        let body = try await response.body.collect(upTo: 1 << 20)
        return try StatusParser.parse(format, Array(body.readableBytesView), now: clock.now())
    }

    static func tcpConnect(_ address: String, timeoutMilliseconds: Int, group: any EventLoopGroup) async throws {
        let parts = address.split(separator: ":")
        guard parts.count >= 2, let port = Int(parts.last!) else { throw StatusParseError(description: "bad address \(address)") }
        let host = parts.dropLast().joined(separator: ":")
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(.milliseconds(Int64(timeoutMilliseconds)))
            .connect(host: host, port: port).get()
        try await channel.close()
    }
}
