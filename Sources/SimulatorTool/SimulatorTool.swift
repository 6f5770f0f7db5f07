import ArgumentParser
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Simulator

@main
struct SimulatorTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fulcrum-sim",
        abstract: "Simulated inference engines for Fulcrum.",
        subcommands: [Engines.self, Traffic.self]
    )
}

struct Engines: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start simulated engines on loopback, one HTTP server each.")

    @Option(help: "Number of engines.") var count = 4
    @Option(help: "Port of the first engine; the others follow.") var basePort = 9000
    @Option(help: "Listen host.") var host = "127.0.0.1"
    @Option(help: "Model served.") var model = "sim-model"
    @Option(help: "Role of every engine: VIT, PREFILL, DECODE or PDFUSION.") var role = "PDFUSION"
    @Option(help: "Milliseconds between streamed tokens.") var tokenIntervalMs = 0
    @Option(help: "Tokens generated when a request sets no max_tokens.") var outputTokens = 16

    func validate() throws {
        guard (1...1024).contains(count) else { throw ValidationError("--count must be in 1...1024") }
        guard (1...65_535).contains(basePort), basePort + count - 1 <= 65_535 else { throw ValidationError("--base-port leaves no room for \(count) engines") }
        guard ["VIT", "PREFILL", "DECODE", "PDFUSION"].contains(role) else { throw ValidationError("--role must be VIT, PREFILL, DECODE or PDFUSION") }
        guard tokenIntervalMs >= 0, outputTokens >= 0 else { throw ValidationError("--token-interval-ms and --output-tokens must not be negative") }
    }

    func run() async throws {
        var logger = Logger(label: "fulcrum-sim")
        logger.logLevel = .warning
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        for index in 0..<count {
            let engine = SimulatedEngine(options: .init(
                id: "engine-\(index + 1)", model: model, role: role, tokenIntervalMilliseconds: tokenIntervalMs, defaultOutputTokens: outputTokens
            ))
            let app = Application(router: engine.makeRouter(), configuration: .init(address: .hostname(host, port: basePort + index)), logger: logger)
            services.append(.init(service: app))
        }
        FileHandle.standardOutput.write(Data("\(count) simulated \(role) engines of \(model) on \(host):\(basePort)...\(basePort + count - 1)\n".utf8))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
