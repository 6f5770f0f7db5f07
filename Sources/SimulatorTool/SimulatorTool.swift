import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Hummingbird
import Logging
import ServiceLifecycle
import Simulator
import KVEvents

@main
struct SimulatorTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum-sim",
        abstract: "Simulated inference engines for Fulcrum.",
        subcommands: [Engines.self, Traffic.self, Replay.self, Offline.self, Simulate.self, Compare.self, Evaluate.self, Generate.self, StatusEngines.self, FlexLBLoad.self]
    )
}

struct Engines: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start simulated engines on loopback, one HTTP server each.")

    @Option(help: "Number of engines.") var count = 4
    @Option(help: "Port of the first engine; the others follow.") var basePort = 9000
    @Option(help: "Listen host.") var host = "127.0.0.1"
    @Option(help: "Model served.") var model = "sim-model"
    @Option(help: "Role of every engine: VIT, PREFILL, DECODE or PDFUSION.") var role = "PDFUSION"
    @Option(help: "Timing model: h100-8b (default), a100-8b, a JSON file of EngineProfile fields, or fast (no model: --token-interval-ms per token).")
    var profile = "h100-8b"
    @Option(help: "Tokens per KV block (and per prompt block hash); traces use 512.") var blockSize: Int?
    @Option(help: "KV-cache capacity in tokens.") var kvTokens: Int?
    @Option(help: "fast profile: milliseconds between streamed tokens.") var tokenIntervalMs = 0
    @Option(help: "Tokens generated when a request sets no max_tokens.") var outputTokens = 16
    @Option(help: "Personality: fulcrum (Fulcrum's PD headers), vllm (NIXL's kv_transfer_params hand-off), sglang (the bootstrap hand-off; the bootstrap server is on the HTTP port), or rtp-llm (also rtp-llm's engine gRPC on the HTTP port + 1; engines then take every other port). Every engine serves all status formats.")
    var engine = "fulcrum"
    @Option(help: "Like the engines' --api-key: guarded routes want Authorization: Bearer KEY.") var apiKey: String?
    @Option(help: "Publish KV-cache events over ZeroMQ as --kv-events-config does (modelled engines): engine i's PUB on this port + 2i, its replay ROUTER on the next; vllm engines encode maps, sglang engines tagged arrays.")
    var kvEventsBasePort: Int?

    /// Ports between consecutive engines: rtp-llm engines use their HTTP port and the next.
    var portStride: Int { engine == "rtp-llm" ? 2 : 1 }

    func validate() throws {
        guard (1...1024).contains(count) else { throw ValidationError("--count must be in 1...1024") }
        guard EngineDialect(rawValue: engine) != nil else {
            throw ValidationError("--engine must be one of \(EngineDialect.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard (1...65_535).contains(basePort), basePort + count * portStride - 1 <= 65_535 else { throw ValidationError("--base-port leaves no room for \(count) engines") }
        guard ["VIT", "PREFILL", "DECODE", "PDFUSION"].contains(role) else { throw ValidationError("--role must be VIT, PREFILL, DECODE or PDFUSION") }
        if let kvEventsBasePort {
            guard (1...65_535).contains(kvEventsBasePort), kvEventsBasePort + 2 * count - 1 <= 65_535 else { throw ValidationError("--kv-events-base-port leaves no room for \(count) engines") }
            guard profile != "fast" else { throw ValidationError("--kv-events-base-port needs a timing model (the fast profile has no KV cache)") }
        }
        guard tokenIntervalMs >= 0, outputTokens >= 0 else { throw ValidationError("--token-interval-ms and --output-tokens must not be negative") }
    }

    func engineProfile() throws -> EngineProfile? {
        guard profile != "fast" else { return nil }
        return try Self.profile(profile, blockSize: blockSize, kvTokens: kvTokens)
    }

    /// A named profile (h100-8b, a100-8b) or a JSON file of `EngineProfile`'s fields, with the
    /// block size and KV capacity overridden when given.
    static func profile(_ profile: String, blockSize: Int?, kvTokens: Int?) throws -> EngineProfile {
        var chosen: EngineProfile
        if let named = EngineProfile.named(profile) {
            chosen = named
        } else {
            guard let data = FileManager.default.contents(atPath: profile) else {
                throw ValidationError("--profile: not h100-8b, a100-8b, fast, or a readable JSON file: \(profile)")
            }
            do {
                chosen = try JSONDecoder().decode(EngineProfile.self, from: data)
            } catch {
                throw ValidationError("--profile \(profile): \(error)")
            }
        }
        if let blockSize {
            guard blockSize > 0 else { throw ValidationError("--block-size must be positive") }
            chosen.blockSize = blockSize
        }
        if let kvTokens {
            guard kvTokens > 0 else { throw ValidationError("--kv-tokens must be positive") }
            chosen.kvCapacityTokens = kvTokens
        }
        return chosen
    }

    func run() async throws {
        var logger = Logger(label: "fulcrum-sim")
        logger.logLevel = .warning
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        let timing = try engineProfile()
        FileHandle.standardOutput.write(Data("profile: \(timing.map(\.description) ?? "fast (no timing model, \(tokenIntervalMs) ms per token)")\n".utf8))
        for index in 0..<count {
            let dialect = EngineDialect(rawValue: engine) ?? .fulcrum
            var publisher: KVEventPublisher?
            if let kvEventsBasePort {
                let port = kvEventsBasePort + 2 * index
                publisher = try KVEventPublisher(endpoint: "tcp://\(host):\(port)", replayEndpoint: "tcp://\(host):\(port + 1)", encoding: dialect.kvEventEncoding)
            }
            var options = SimulatedEngine.Options(
                id: "engine-\(index + 1)", model: model, role: role, tokenIntervalMilliseconds: tokenIntervalMs, defaultOutputTokens: outputTokens,
                profile: timing, dialect: dialect, apiKey: apiKey
            )
            options.sideChannelHost = host
            let engine = SimulatedEngine(options: options, kvEvents: publisher)
            let port = basePort + index * portStride
            let app = Application(router: engine.makeRouter(), configuration: .init(address: .hostname(host, port: port)), logger: logger)
            services.append(.init(service: app))
            if self.engine == "rtp-llm" {
                services.append(.init(service: GRPCService(server: RTPLLMEngineService(engine: engine).makeServer(host: host, port: port + 1))))
            }
        }
        let last = basePort + (count - 1) * portStride
        FileHandle.standardOutput.write(Data("\(count) simulated \(engine) \(role) engines of \(model) on \(host):\(basePort)...\(last)\n".utf8))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// A gRPC server as a service of the group: served until graceful shutdown.
struct GRPCService: Service {
    let server: GRPCServer<HTTP2ServerTransport.Posix>

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}
