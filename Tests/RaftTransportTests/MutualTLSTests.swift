import Foundation
import Raft
import RaftTransport
import Testing

/// A throwaway CA and node certificates made with the openssl command for one test.
struct TestPKI {
    let directory: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-pki-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for ca in ["ca", "rogue-ca"] {
            try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", "\(ca).key", "-out", "\(ca).pem", "-days", "2", "-subj", "/CN=\(ca)"])
        }
        // The common name is the node id the certificate stands for (`node-<id>`); "nameless"
        // is signed by the cluster's CA but names no node.
        for (node, commonName, ca) in [("a", "node-1", "ca"), ("b", "node-2", "ca"), ("rogue", "node-3", "rogue-ca"), ("nameless", "fulcrum", "ca")] {
            try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", "\(node).key", "-out", "\(node).csr", "-subj", "/CN=\(commonName)"])
            try openssl(["x509", "-req", "-in", "\(node).csr", "-CA", "\(ca).pem", "-CAkey", "\(ca).key",
                         "-CAcreateserial", "-out", "\(node).pem", "-days", "2"])
        }
    }

    func files(_ node: String, ca: String = "ca") -> RaftTransport.TLSFiles {
        .init(certificateChain: "\(directory)/\(node).pem", privateKey: "\(directory)/\(node).key", trustRoots: "\(directory)/\(ca).pem")
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("openssl \(arguments.first ?? "") failed") }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite struct MutualTLSTests {
    @Test(.timeLimit(.minutes(1)))
    func onlyPeersWithACertificateFromTheClusterCAGetThrough() async throws {
        let pki = try TestPKI()
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        func settings(_ files: RaftTransport.TLSFiles?) -> RaftTransport.Settings {
            var settings = RaftTransport.Settings()
            settings.tls = files
            return settings
        }
        let loopback = PeerAddress(host: "127.0.0.1", port: 0)
        let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: loopback, settings: settings(pki.files("b")))
        let a = try RaftTransport(nodeID: 1, clusterID: "c", listen: loopback, settings: settings(pki.files("a")))
        let rogue = try RaftTransport(nodeID: 3, clusterID: "c", listen: loopback, settings: settings(pki.files("rogue", ca: "rogue-ca")))
        let plain = try RaftTransport(nodeID: 4, clusterID: "c", listen: loopback)
        try await withThrowingTaskGroup(of: Void.self) { group in
            let portB = try await LoopbackTests.start(b, in: &group)
            for transport in [a, rogue, plain] { _ = try await LoopbackTests.start(transport, in: &group) }
            let addressB = PeerAddress(host: "127.0.0.1", port: portB)
            // Peers without a certificate from the cluster's CA try first ...
            for (transport, id) in [(rogue, UInt64(3)), (plain, UInt64(4))] {
                transport.setPeers([2: addressB])
                transport.send([Message(kind: .heartbeat, from: id, to: 2, term: 1)])
            }
            try await Task.sleep(for: .milliseconds(300))
            // ... and only the member with one gets through.
            a.setPeers([2: addressB])
            a.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1, commit: 5)])
            let received = try await LoopbackTests.receive(1, from: b)
            #expect(received.map(\.from) == [1])
            group.cancelAll()
        }
    }

    /// A member's certificate is its identity: it cannot say hello as another node, and a
    /// certificate that names no node is refused, even from the cluster's CA.
    @Test(.timeLimit(.minutes(1)))
    func theCertificateNotTheHelloNamesThePeer() async throws {
        let pki = try TestPKI()
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        func settings(_ files: RaftTransport.TLSFiles) -> RaftTransport.Settings {
            var settings = RaftTransport.Settings()
            settings.tls = files
            return settings
        }
        let loopback = PeerAddress(host: "127.0.0.1", port: 0)
        let b = try RaftTransport(nodeID: 2, clusterID: "c", listen: loopback, settings: settings(pki.files("b")))
        // Holds node 1's certificate but says it is node 5.
        let impostor = try RaftTransport(nodeID: 5, clusterID: "c", listen: loopback, settings: settings(pki.files("a")))
        let nameless = try RaftTransport(nodeID: 6, clusterID: "c", listen: loopback, settings: settings(pki.files("nameless")))
        let a = try RaftTransport(nodeID: 1, clusterID: "c", listen: loopback, settings: settings(pki.files("a")))
        try await withThrowingTaskGroup(of: Void.self) { group in
            let portB = try await LoopbackTests.start(b, in: &group)
            for transport in [impostor, nameless, a] { _ = try await LoopbackTests.start(transport, in: &group) }
            let addressB = PeerAddress(host: "127.0.0.1", port: portB)
            impostor.setPeers([2: addressB])
            impostor.send([Message(kind: .heartbeat, from: 5, to: 2, term: 1)])
            nameless.setPeers([2: addressB])
            nameless.send([Message(kind: .heartbeat, from: 6, to: 2, term: 1)])
            // Node 1 dials node 2's address expecting node 3 there: it must not send.
            a.setPeers([3: addressB])
            a.send([Message(kind: .heartbeat, from: 1, to: 3, term: 1)])
            try await LoopbackTests.waitFor { b.refusals.snapshot["identity_mismatch", default: 0] >= 1 && b.refusals.snapshot["unauthenticated", default: 0] >= 1 }
            a.setPeers([2: addressB])
            a.send([Message(kind: .heartbeat, from: 1, to: 2, term: 1, commit: 9)])
            let received = try await LoopbackTests.receive(1, from: b)
            #expect(received.map(\.from) == [1])
            group.cancelAll()
        }
    }

    @Test func unreadableCertificatesFailAtStartUp() {
        var settings = RaftTransport.Settings()
        settings.tls = .init(certificateChain: "/nonexistent/cert.pem", privateKey: "/nonexistent/key.pem", trustRoots: "/nonexistent/ca.pem")
        #expect(throws: (any Error).self) {
            _ = try RaftTransport(nodeID: 1, clusterID: "c", listen: PeerAddress(host: "127.0.0.1", port: 0), settings: settings)
        }
    }
}
