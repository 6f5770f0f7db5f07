import Cluster
import Foundation
import Raft
import RaftTransport
import NetworkTestSupport
import WireCoding

#if canImport(Glibc)
import Glibc
#endif

/// A replicated map of string registers: a command sets `key` to `value` and returns the old one.
struct RegisterMachine: ReplicatedStateMachine {
    var values: [String: String] = [:]
    var applied: [LogIndex] = []

    static func command(_ key: String, _ value: String) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(key)
        writer.write(value)
        return writer.bytes
    }

    mutating func apply(_ command: [UInt8], at index: LogIndex) -> [UInt8] {
        var reader = ByteReader(command)
        guard let key = try? reader.readString(), let value = try? reader.readString() else { return [] }
        let previous = values[key]
        values[key] = value
        applied.append(index)
        return Array((previous ?? "").utf8)
    }

    func snapshot() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(values.keys.sorted()) { writer, key in
            writer.write(key)
            writer.write(values[key]!)
        }
        return writer.bytes
    }

    static func validate(snapshot: [UInt8]) throws {
        var scratch = RegisterMachine()
        try scratch.restore(from: snapshot)
    }

    mutating func restore(from snapshot: [UInt8]) throws {
        var reader = ByteReader(snapshot)
        values = [:]
        for (key, value) in try reader.readArray(minimumBytes: 2, { reader throws(DecodingError) in
            (try reader.readString(), try reader.readString())
        }) {
            values[key] = value
        }
    }
}

/// Nodes of one cluster running in this process, each with its own data directory.
final class LocalCluster: @unchecked Sendable {
    let clusterID = "test-\(UInt32.random(in: 0...UInt32.max))"
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-cluster-\(UUID().uuidString)").path
    var addresses: [NodeID: PeerAddress] = [:]
    var nodes: [NodeID: ClusterNode<RegisterMachine>] = [:]
    var tasks: [NodeID: Task<Void, any Error>] = [:]
    let snapshotEntries: Int

    init(size: Int, snapshotEntries: Int = 10_000) throws {
        self.snapshotEntries = snapshotEntries
        for (offset, port) in freePorts(size).enumerated() {
            addresses[NodeID(offset + 1)] = PeerAddress(host: "127.0.0.1", port: port)
        }
        for id in addresses.keys.sorted() { try start(id, bootstrap: addresses) }
    }

    func settings(_ id: NodeID, bootstrap: [NodeID: PeerAddress]) -> NodeSettings {
        var settings = NodeSettings(
            clusterID: clusterID, dataDirectory: "\(root)/node-\(id)", peerListen: addresses[id]!, bootstrap: bootstrap, nodeID: id
        )
        settings.snapshotEntries = snapshotEntries
        settings.durability = .normal
        return settings
    }

    func start(_ id: NodeID, bootstrap: [NodeID: PeerAddress]) throws {
        let node = try ClusterNode(settings: settings(id, bootstrap: bootstrap), machine: RegisterMachine())
        nodes[id] = node
        tasks[id] = Task { try await node.run() }
    }

    /// A node that is not in the bootstrap list: it waits to be added.
    func startJoiner(_ id: NodeID) throws -> PeerAddress {
        addresses[id] = PeerAddress(host: "127.0.0.1", port: freePorts(1)[0])
        try start(id, bootstrap: [:])
        return addresses[id]!
    }

    func stop(_ id: NodeID) async {
        tasks[id]?.cancel()
        _ = try? await tasks[id]?.value
        tasks[id] = nil
        nodes[id] = nil
    }

    func stopAll() async {
        for id in Array(tasks.keys) { await stop(id) }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Waits until the running nodes agree on one leader; returns it.
    func leader(timeout: Duration = .seconds(10), excluding: Set<NodeID> = []) async throws -> NodeID {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            var leaders = Set<NodeID>()
            var known = true
            for (id, node) in nodes where !excluding.contains(id) {
                let status = await node.status()
                guard let leader = status.leader else { known = false; break }
                leaders.insert(leader)
            }
            if known, leaders.count == 1, let leader = leaders.first, nodes[leader] != nil {
                return leader
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ClusterTestError("no single leader within \(timeout)")
    }

    func write(_ key: String, _ value: String, via id: NodeID) async throws -> String {
        String(decoding: try await nodes[id]!.propose(RegisterMachine.command(key, value)), as: UTF8.self)
    }

    /// Writes through `leader`, following the leadership when the node refuses at the door with
    /// `not_leader` (the proposal was never appended) or its entry was `dropped` (overwritten by
    /// a new leader's log, so it never applies): retrying cannot apply it twice. On a loaded
    /// machine leadership can move between `leader()` and a write.
    func write(_ key: String, _ value: String, following leader: inout NodeID) async throws -> String {
        for _ in 0..<10 {
            do {
                return try await write(key, value, via: leader)
            } catch let error as ClusterError where error.code == .notLeader {
                if let named = error.leader, nodes[named] != nil {
                    leader = named
                } else {
                    leader = try await self.leader()
                }
            } catch let error as ClusterError where error.code == .dropped {
                leader = try await self.leader()
            }
        }
        throw ClusterTestError("leadership kept moving while writing \(key)")
    }
}

struct ClusterTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
