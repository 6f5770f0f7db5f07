import ArgumentParser
import Foundation
import FulcrumAPI
import NIOHTTP1

/// The worker registry: list, drain, undrain, remove.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "The worker registry: list, drain, undrain, remove.",
        subcommands: [List.self, Drain.self, Undrain.self, Remove.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every worker with its health, circuit, drain state and load.")
        @OptionGroup var connection: Connection
        @Flag(help: "Read after a read barrier (linearizable: every acknowledged change is in).") var consistent = false

        func run() async throws {
            let format = try connection.format
            let list = try await connection.withClient {
                try await $0.call(.GET, "/admin/workers" + (consistent ? "?consistent=true" : ""), needsLeader: false, as: WorkerList.self)
            }
            if format == .json { return try printJSON(list) }
            printRows(
                ["ID", "MODEL", "ROLE", "ADDRESS", "HEALTH", "CIRCUIT", "DRAINING", "RUNNING", "WAITING", "KV USAGE"],
                list.workers.map {
                    [$0.id, $0.model, $0.role, $0.address, $0.health, $0.circuit, "\($0.draining)", "\($0.runningRequests)", "\($0.waitingRequests)",
                     String(format: "%.2f", $0.kvUsage)]
                },
                format: format
            )
        }
    }

    /// One replicated change to one worker, printed as the node answered it.
    static func change(_ connection: Connection, _ method: HTTPMethod, _ path: String) async throws {
        let format = try connection.format
        let result = try await connection.withClient { try await $0.call(method, path, needsLeader: true, as: CommandResult.self) }
        if format == .json { return try printJSON(result) }
        print(result.result)
        if !result.applied { throw ExitCode(1) }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop sending new requests to a worker (those in flight finish).")
        @OptionGroup var connection: Connection
        @Argument(help: "The worker's id.") var id: String
        func run() async throws { try await WorkerCommand.change(connection, .POST, "/admin/workers/\(id.pathEscaped)/drain") }
    }

    struct Undrain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send requests to a drained worker again.")
        @OptionGroup var connection: Connection
        @Argument(help: "The worker's id.") var id: String
        func run() async throws { try await WorkerCommand.change(connection, .POST, "/admin/workers/\(id.pathEscaped)/undrain") }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deregister a worker.")
        @OptionGroup var connection: Connection
        @Argument(help: "The worker's id.") var id: String
        func run() async throws { try await WorkerCommand.change(connection, .DELETE, "/admin/workers/\(id.pathEscaped)") }
    }
}

/// The routing configuration in the log: read it, change one setting.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "The replicated routing configuration: get it, set a setting.",
        subcommands: [Get.self, SetCommand.self]
    )

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the configuration (with KEY, one setting's value).")
        @OptionGroup var connection: Connection
        @Argument(help: "A setting, e.g. prefix_blocks_per_worker.") var key: String?

        func run() async throws {
            let format = try connection.format
            let configuration = try await connection.withClient { try await $0.call(.GET, "/admin/config", needsLeader: false, as: BalancerConfiguration.self) }
            let settings = (try? JSONSerialization.jsonObject(with: FulcrumJSON.encode(configuration.settings)) as? [String: Any]) ?? [:]
            if let key {
                guard RoutingSettingsConfig.keys.contains(key) else { throw ValidationError("unknown setting \(key); known: \(RoutingSettingsConfig.keys.sorted().joined(separator: ", "))") }
                let value = settings[key].map { "\($0)" } ?? "-"
                if format == .json { print(#"{"\#(key)": \#(value == "-" ? "null" : value)}"#) } else { print(value) }
                return
            }
            if format == .json { return try printJSON(configuration) }
            printRows(["SETTING", "VALUE"], settings.keys.sorted().map { [$0, "\(settings[$0]!)"] }, format: format)
            if format == .table {
                print("")
                print("default strategies: " + (configuration.defaultPolicy.strategies ?? [:]).map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ", "))
                for (model, policy) in configuration.policies.sorted(by: { $0.key < $1.key }) {
                    print("\(model): " + (policy.strategies ?? [:]).map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ", "))
                }
                for (alias, model) in (configuration.aliases ?? [:]).sorted(by: { $0.key < $1.key }) { print("alias \(alias) -> \(model)") }
            }
        }
    }

    struct SetCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set", abstract: "Change one routing setting through the log (the leader checks the value).")
        @OptionGroup var connection: Connection
        @Argument(help: "The setting, e.g. prefix_blocks_per_worker.") var key: String
        @Argument(help: "Its new value (a number).") var value: String

        func validate() throws {
            guard RoutingSettingsConfig.keys.contains(key) else {
                throw ValidationError("unknown setting \(key); known: \(RoutingSettingsConfig.keys.sorted().joined(separator: ", "))")
            }
            guard let number = Double(value), number.isFinite else { throw ValidationError("\(key): '\(value)' is not a number") }
        }

        struct Patch: Encodable, Sendable {
            var key: String
            var value: Double

            struct Key: CodingKey {
                var stringValue: String
                var intValue: Int? { nil }
                init(stringValue: String) { self.stringValue = stringValue }
                init?(intValue: Int) { nil }
            }

            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: Key.self)
                if value == value.rounded(), abs(value) < 9e15 {
                    try container.encode(Int64(value), forKey: Key(stringValue: key))
                } else {
                    try container.encode(value, forKey: Key(stringValue: key))
                }
            }
        }

        func run() async throws {
            let format = try connection.format
            let result = try await connection.withClient {
                try await $0.call(.PATCH, "/admin/config/settings", body: Patch(key: key, value: Double(value)!), needsLeader: true, as: CommandResult.self)
            }
            if format == .json { return try printJSON(result) }
            print(result.result)
            if !result.applied { throw ExitCode(1) }
        }
    }
}

extension String {
    /// As one path component.
    var pathEscaped: String { addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? self }
}
