// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Fulcrum",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Raft", targets: ["Raft"]),
        .library(name: "Balancer", targets: ["Balancer"]),
        .library(name: "RaftStorage", targets: ["RaftStorage"]),
        .executable(name: "fulcrum-raft-sim", targets: ["RaftSimTool"]),
        .executable(name: "fulcrum-balancer-bench", targets: ["BalancerBench"]),
        .executable(name: "fulcrum", targets: ["FulcrumNode"]),
        .executable(name: "fulcrum-fault-node", targets: ["FaultNode"]),
        .executable(name: "fulcrumctl", targets: ["FulcrumCtl"]),
        .executable(name: "fulcrum-sim", targets: ["SimulatorTool"]),
        .executable(name: "fulcrum-fuzz", targets: ["FuzzTool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.27.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.24.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.14.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.28.0"),
    ],
    targets: [
        // The consensus core: pure, deterministic, no I/O, no clock, no threads.
        .target(name: "Raft", swiftSettings: strict),
        // Deterministic cluster simulator, scenario harness and linearizability checker.
        .target(name: "RaftTestKit", dependencies: ["Raft"], swiftSettings: strict),
        // Runs the simulator from the command line: seeds, soak, replay, core benchmark.
        .executableTarget(
            name: "RaftSimTool",
            dependencies: [
                "Raft", "RaftTestKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // The binary form of Raft's own types (configurations) shared by storage and transport.
        .target(name: "RaftCoding", dependencies: ["Raft", "WireCoding"], swiftSettings: strict),
        // The system liblz4, for snapshot compression.
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        // The system libzmq: engines publish KV-cache events over ZeroMQ.
        // (No pkgConfig: Debian's libzmq.pc adds -isystem flags SwiftPM refuses; the header is in
        // /usr/include and the module map links -lzmq.)
        .systemLibrary(name: "CZMQ", providers: [.apt(["libzmq3-dev"])]),
        // Engines' KV-cache events: MessagePack, vLLM's and SGLang's event batches, ordering and
        // replay over ZeroMQ, and their translation into Fulcrum's prefix-index blocks.
        .target(name: "KVEvents", dependencies: ["Balancer", "CZMQ"], swiftSettings: strict),
        .testTarget(name: "KVEventsTests", dependencies: ["KVEvents", "Balancer"], swiftSettings: strict),
        // A SQLite VFS that undoes unsynced writes at a simulated power loss, delays fsyncs and
        // fails writes (fault-injection runs only; SQLite's crash tests work the same way).
        .target(name: "CFaultVFS", linkerSettings: [.linkedLibrary("sqlite3")]),
        // Raft log, hard state and snapshots in one SQLite database per node (GRDB, system SQLite).
        .target(
            name: "RaftStorage",
            dependencies: ["Raft", "RaftCoding", "WireCoding", "CLZ4", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict
        ),
        // Peer messages over TCP (SwiftNIO): versioned, checksummed frames, batching, reconnects,
        // and peer authentication (mutual TLS naming the node, or an HMAC challenge).
        .target(
            name: "RaftTransport",
            dependencies: [
                "Raft", "RaftCoding", "WireCoding",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RaftTransportTests",
            dependencies: [
                "Raft", "RaftTransport", "WireCoding",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The node runtime: drives Raft with a clock, storage and transport.
        .target(
            name: "Cluster",
            dependencies: [
                "Raft", "RaftStorage", "RaftTransport", "WireCoding", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ClusterTests",
            dependencies: ["Cluster", "Raft", "RaftTransport", "WireCoding", "NetworkTestSupport"],
            swiftSettings: strict
        ),
        // The serving domain, free of HTTP: the balancer as the cluster's state machine, routing
        // decisions on domain types, the leader's duties (status sync, health, breakers,
        // flushes), the cluster clock, serving settings, engine status parsers, metrics.
        .target(
            name: "Serving",
            dependencies: [
                "Balancer", "Cluster", "FulcrumAPI", "KVEvents",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // The Codable request and response types of the HTTP API, shared by the server,
        // fulcrumctl, the agent, the simulator and the tests.
        .target(name: "FulcrumAPI", swiftSettings: strict),
        // The agent's view of its host (CPU, memory, disk, GPUs), for `fulcrum agent`.
        .target(name: "FulcrumAgent", dependencies: ["FulcrumAPI"], swiftSettings: strict),
        // The HTTP shell (Hummingbird): handlers, middleware, forwarding to the leader, error
        // mapping, security, the worker prober, node configuration.
        .target(
            name: "Server",
            dependencies: [
                "Balancer", "Cluster", "Serving", "FulcrumAPI", "FlexLBProtocol",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // rtp-llm's FlexlbService (Protos/rtp-llm), generated once by Scripts/generate-protos.sh
        // and committed: the build runs no protoc plugin.
        .target(
            name: "FlexLBProtocol",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "Server", "Serving", "FulcrumAgent", "NodeCommands", "Cluster", "Raft", "RaftTransport", "Balancer", "Simulator", "NetworkTestSupport", "Fuzzing",
                "FlexLBProtocol", "KVEvents",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        // Simulated inference engines (OpenAI-compatible HTTP, status and metrics endpoints).
        .target(
            name: "Simulator",
            dependencies: [
                "Balancer", "WireCoding", "FlexLBProtocol", "KVEvents",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SimulatorTests",
            dependencies: [
                "Simulator", "Balancer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        // `fulcrum-sim`: runs simulated engines.
        .executableTarget(
            name: "SimulatorTool",
            dependencies: [
                "Simulator", "Balancer", "FulcrumAPI", "FlexLBProtocol", "KVEvents",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The node's commands (serve, agent, restore, recover), run by `fulcrum` and by the
        // test build `fulcrum-fault-node`.
        .target(
            name: "NodeCommands",
            dependencies: [
                "Server", "Serving", "FulcrumAgent", "FulcrumAPI", "Cluster", "Raft", "RaftStorage", "RaftTransport",
                .product(name: "Yams", package: "Yams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // `fulcrum`: the node daemon.
        .executableTarget(name: "FulcrumNode", dependencies: ["NodeCommands"], swiftSettings: strict),
        // Test support: fault injection (the fault VFS, `/admin/fault`) and the node build that
        // has it, `fulcrum-fault-node`. Nothing in a production target links these.
        .target(
            name: "FaultInjection",
            dependencies: [
                "CFaultVFS", "Server", "Serving",
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "FaultNode", dependencies: ["NodeCommands", "FaultInjection", "Server"], swiftSettings: strict),
        // `fulcrumctl`: membership, leadership and snapshots from the command line.
        .executableTarget(
            name: "FulcrumCtl",
            dependencies: [
                "FulcrumAPI", "Cluster", "WireCoding",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Real `fulcrum` processes on loopback, driven over HTTP and through `fulcrumctl`.
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "FulcrumNode", "FaultNode", "FulcrumCtl", "SimulatorTool", "FulcrumAPI", "Simulator", "NetworkTestSupport", "RaftTransport",
                "Raft", "RaftStorage", "RaftTestKit", "Balancer", "WireCoding", "Cluster",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Seeded mutation fuzzing of the decoders a peer, the log or a client can feed.
        .target(
            name: "Fuzzing",
            dependencies: [
                "Balancer", "FulcrumAPI", "KVEvents", "Raft", "RaftStorage", "RaftTransport", "WireCoding",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict
        ),
        // `fulcrum-fuzz`: runs the fuzzing campaigns for a given time (Scripts/fuzz.sh).
        .executableTarget(
            name: "FuzzTool",
            dependencies: [
                "Fuzzing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "FuzzingTests", dependencies: ["Fuzzing"], exclude: ["Corpus"], swiftSettings: strict),
        // Helpers for tests that open sockets (free loopback ports).
        .target(
            name: "NetworkTestSupport",
            dependencies: [
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // A child process for the crash-safety tests: appends and snapshots until killed.
        .executableTarget(name: "StorageTorture", dependencies: ["Raft", "RaftStorage"], swiftSettings: strict),
        .testTarget(
            name: "RaftStorageTests",
            dependencies: ["Raft", "RaftStorage", "StorageTorture", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict
        ),
        // Compact binary encoding (varints, length-prefixed bytes) and a stable hash, shared by
        // everything that writes replicated or persisted bytes.
        .target(name: "WireCoding", swiftSettings: strict),
        // The balancer's domain: worker registry, replicated state machine, strategies, router.
        .target(name: "Balancer", dependencies: ["WireCoding"], swiftSettings: strict),
        // Times routing decisions per strategy and pool size.
        .executableTarget(
            name: "BalancerBench",
            dependencies: ["Balancer", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "BalancerTests",
            dependencies: [
                "Balancer", "WireCoding",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RaftTests",
            dependencies: [
                "Raft", "RaftTestKit",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
