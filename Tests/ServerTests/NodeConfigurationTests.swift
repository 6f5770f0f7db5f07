import Raft
import RaftTransport
import Server
import Testing

@Suite struct NodeConfigurationTests {
    @Test func aCompleteFileLoads() throws {
        let configuration = try NodeConfiguration.load(yaml: """
            cluster_id: prod
            node_id: 2
            data_dir: /var/lib/fulcrum
            peer_listen: 10.0.0.2:7100
            http_listen: 0.0.0.0:8100
            bootstrap:
              1: 10.0.0.1:7100
              2: 10.0.0.2:7100
            tick_ms: 25
            durability: normal
            """, source: "node.yaml")
        try configuration.validate()
        #expect(configuration.nodeID == 2)
        #expect(configuration.bootstrap == [1: PeerAddress(host: "10.0.0.1", port: 7100), 2: PeerAddress(host: "10.0.0.2", port: 7100)])
        let settings = configuration.nodeSettings
        #expect(settings.tick == .milliseconds(25))
        #expect(settings.durability == .normal)
        #expect(settings.peerListen == PeerAddress(host: "10.0.0.2", port: 7100))
    }

    func expectError(key: String, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected an error about \(key)")
        } catch let error as ConfigurationError {
            #expect(error.key == key, "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func unknownOrInvalidKeysAreNamed() {
        expectError(key: "peer_lisen") { _ = try NodeConfiguration.load(yaml: "peer_lisen: 1.2.3.4:5", source: "f") }
        expectError(key: "tick_ms") { _ = try NodeConfiguration.load(yaml: "tick_ms: -3", source: "f") }
        expectError(key: "http_listen") { _ = try NodeConfiguration.load(yaml: "http_listen: nowhere", source: "f") }
        expectError(key: "durability") { _ = try NodeConfiguration.load(yaml: "durability: sometimes", source: "f") }
        expectError(key: "bootstrap") { _ = try NodeConfiguration.load(yaml: "bootstrap: {0: 1.2.3.4:5}", source: "f") }
        expectError(key: "bootstrap") {
            var configuration = NodeConfiguration()
            try configuration.set("bootstrap", value: "1=a:1,two=b:2", source: "--bootstrap")
        }
        expectError(key: "node_id") {
            var configuration = NodeConfiguration()
            try configuration.set("bootstrap", value: "1=127.0.0.1:7101", source: "--bootstrap")
            try configuration.validate()
        }
        expectError(key: "bootstrap") {
            var configuration = NodeConfiguration()
            try configuration.set("bootstrap", value: "1=127.0.0.1:7101", source: "--bootstrap")
            try configuration.set("node_id", value: "9", source: "--node-id")
            try configuration.validate()
        }
        expectError(key: "tls_cert") {
            var configuration = NodeConfiguration()
            try configuration.set("tls_cert", value: "/etc/fulcrum/node.pem", source: "--tls-cert")
            try configuration.validate()
        }
    }

    @Test func flagsAndEnvironmentOverrideTheFile() throws {
        var configuration = try NodeConfiguration.load(yaml: "node_id: 1\nhttp_listen: 127.0.0.1:8101", source: "f")
        try configuration.set("http_listen", value: "127.0.0.1:9999", source: "FULCRUM_HTTP_LISTEN")
        try configuration.set("node_id", value: "7", source: "--node-id")
        #expect(configuration.httpListen.port == 9999)
        #expect(configuration.nodeID == 7)
    }
}
