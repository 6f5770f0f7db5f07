import AsyncHTTPClient
import Foundation
import FulcrumAPI
import NIOCore
import NIOPosix
import RaftTransport
import Simulator
import Testing
import WireCoding

/// A real `fulcrum` process under hostile load: thousands of idle connections, a peer that
/// floods frames, workers whose status is slow or garbage. The node must keep routing, cut the
/// abusers off, and keep its memory bounded.
@Suite(.serialized) struct ExhaustionTests {
    /// Resident memory of a process, from /proc, in MiB.
    static func residentMiB(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib / 1024
    }

    static func routeOK(_ cluster: ProcessCluster) async -> Bool {
        (try? await cluster.request(.POST, cluster.endpoint(1) + "/v1/route", json: #"{"model":"m","prompt":"hi"}"#).status) == 200
    }

    /// One node, three registered engines, workers limited to loopback.
    static func with(environment: [String: String] = [:], _ body: (ProcessCluster, EngineFleet) async throws -> Void) async throws {
        let environment = environment.merging(["FULCRUM_WORKER_CIDRS": "127.0.0.0/8"]) { mine, _ in mine }
        try await ServingClusterTests.with(engines: 3, founders: 1, environment: environment) { cluster, fleet in
            try await cluster.waitUntilReady()
            try await ServingClusterTests.register(cluster, fleet, via: 1)
            try await body(cluster, fleet)
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func thousandsOfIdleConnectionsAreBoundedAndCutOff() async throws {
        try await Self.with(environment: ["FULCRUM_HEADER_TIMEOUT_MS": "1500"]) { cluster, _ in
            let pid = cluster.processes[1]!.processIdentifier
            let before = Self.residentMiB(pid)
            let port = cluster.httpPorts[1]!
            var channels: [any Channel] = []
            for _ in 0..<3_000 {
                channels.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
            }
            #expect(await Self.routeOK(cluster), "the node routes while 3,000 idle connections are open")
            let during = Self.residentMiB(pid)
            print("exhaustion: 3,000 idle connections grew the node from \(Int(before)) to \(Int(during)) MiB")
            #expect(during - before < 150, "3,000 idle connections cost \(during - before) MiB")
            // The header timeout closes every connection that never sent a request.
            let deadline = ContinuousClock.now + .seconds(20)
            var open = channels.count
            while open > 0, ContinuousClock.now < deadline {
                open = channels.filter(\.isActive).count
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(open == 0, "\(open) idle connections still open after the header timeout")
            for channel in channels where channel.isActive { try? await channel.close() }
            #expect(await Self.routeOK(cluster))
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func aPeerFloodingFramesIsBoundedAndTheNodeKeepsServing() async throws {
        try await Self.with(environment: ["FULCRUM_PEER_MAX_TRANSFER_BYTES": String(16 << 20)]) { cluster, _ in
            let pid = cluster.processes[1]!.processIdentifier
            let before = Self.residentMiB(pid)
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder())) }
                }
                .connect(host: "127.0.0.1", port: cluster.peerPorts[1]!).get()
            try await channel.writeAndFlush(Frame(kind: .hello, payload: MessageCodec.encode(MessageCodec.Hello(clusterID: "it", from: 2, address: "127.0.0.1:1"))))
            // Endless pieces of a chunked transfer (of a million chunks) that never completes.
            var sent = 0
            let flood = ContinuousClock.now + .seconds(40)
            var position: UInt64 = 0
            var routedDuringFlood = false
            while channel.isActive, ContinuousClock.now < flood {
                var writer = ByteWriter()
                writer.write(UInt64(1))  // transfer
                writer.write(position)
                writer.write(UInt64(1_000_000))  // chunks in the transfer
                writer.write(bytes: [UInt8](repeating: 0xAB, count: 60_000))
                position += 1
                try? await channel.writeAndFlush(Frame(kind: .chunk, payload: writer.bytes))
                sent += 1
                if sent % 200 == 0 { routedDuringFlood = await Self.routeOK(cluster) || routedDuringFlood }
            }
            let grown = Self.residentMiB(pid) - before
            print("exhaustion: the flooding peer sent \(sent) frames (\(sent * 60) KB) before \(channel.isActive ? "the flood ended" : "it was cut off"); the node grew \(Int(grown)) MiB")
            #expect(!channel.isActive, "the node cut off a peer that sent \(sent) frames of a transfer beyond its cap")
            #expect(grown < 300, "the flood grew the node by \(grown) MiB")
            #expect(routedDuringFlood || sent < 200, "the node routed while flooded")
            #expect(await Self.routeOK(cluster))
            try? await channel.close()
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func workersWithSlowOrGarbageStatusAreSidelinedWhileRoutingGoesOn() async throws {
        try await Self.with { cluster, fleet in
            var slow = SimulatedEngine.Faults()
            slow.statusDelayMs = 4_000
            fleet.engines[0].setFaults(slow)
            var garbage = SimulatedEngine.Faults()
            garbage.garbageStatus = true
            fleet.engines[1].setFaults(garbage)
            let deadline = ContinuousClock.now + .seconds(20)
            var sidelined = false
            while !sidelined, ContinuousClock.now < deadline {
                let answer = try await cluster.request(.GET, cluster.endpoint(1) + "/admin/workers")
                let health = Dictionary((answer.decode(WorkerList.self)?.workers ?? []).map { ($0.id, $0.health) }) { a, _ in a }
                sidelined = health["e0"] == "unhealthy" && health["e1"] == "unhealthy" && health["e2"] == "healthy"
                if !sidelined { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(sidelined, "slow and garbage status make workers unhealthy; the good one stays healthy")
            for _ in 0..<50 {
                let answer = try await cluster.request(.POST, cluster.endpoint(1) + "/v1/route", json: #"{"model":"m","prompt":"hi"}"#)
                #expect(answer.status == 200)
                let decision = answer.decode(RouteResponse.self)
                let target = decision?.targets.first?.workerId
                #expect(target == "e2", "routed to \(target ?? "nothing")")
                if let token = decision?.releaseToken {
                    _ = try await cluster.request(.POST, cluster.endpoint(1) + "/v1/release", json: #"{"release_token":"\#(token)"}"#)
                }
            }
        }
    }
}
