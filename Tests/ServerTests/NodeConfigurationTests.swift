import Raft
import RaftTransport
import Foundation
import Server
import NodeCommands
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
            peer_secret: a-secret-of-more-than-16-bytes
            """, source: "node.yaml")
        try configuration.validate()
        #expect(configuration.nodeID == 2)
        #expect(configuration.bootstrap == [1: PeerAddress(host: "10.0.0.1", port: 7100), 2: PeerAddress(host: "10.0.0.2", port: 7100)])
        let settings = try configuration.nodeSettings()
        #expect(settings.transport.secret == (try PeerSecret(text: "a-secret-of-more-than-16-bytes")))
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

    /// Peers on a non-loopback address need mutual TLS or the shared secret, unless the
    /// operator accepts the risk, and then the node warns; so does a public HTTP listener
    /// without API keys.
    @Test func unauthenticatedPeersOffLoopbackAreRefusedOrWarnedAbout() throws {
        expectError(key: "peer_listen") {
            try NodeConfiguration.load(yaml: "peer_listen: 0.0.0.0:7100", source: "f").validate()
        }
        expectError(key: "peer_listen") {
            try NodeConfiguration.load(yaml: "peer_listen: 10.1.2.3:7100\ninsecure_peers: false", source: "f").validate()
        }
        expectError(key: "peer_secret") {
            _ = try NodeConfiguration.load(yaml: "peer_listen: 10.1.2.3:7100\npeer_secret: too-short", source: "f").nodeSettings()
        }
        expectError(key: "peer_secret_file") {
            _ = try NodeConfiguration.load(yaml: "peer_secret_file: /nonexistent/secret", source: "f").nodeSettings()
        }
        expectError(key: "peer_secret") {
            try NodeConfiguration.load(yaml: "peer_secret: 0123456789abcdef0\npeer_secret_file: /x", source: "f").validate()
        }
        let loopback = try NodeConfiguration.load(yaml: "peer_listen: 127.0.0.1:7100", source: "f")
        try loopback.validate()
        #expect(loopback.startupWarnings.isEmpty)
        let insecure = try NodeConfiguration.load(yaml: "peer_listen: 0.0.0.0:7100\nhttp_listen: 0.0.0.0:8100\ninsecure_peers: true", source: "f")
        try insecure.validate()
        #expect(insecure.startupWarnings.count == 2)
        #expect(insecure.startupWarnings.contains { $0.hasPrefix("insecure_peers") })
        #expect(insecure.startupWarnings.contains { $0.hasPrefix("no API keys") })
        let secretFile = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-peer-\(UUID().uuidString)").path
        try "0123456789abcdef0123\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: secretFile) }
        let secured = try NodeConfiguration.load(yaml: "peer_listen: 0.0.0.0:7100\npeer_secret_file: \(secretFile)", source: "f")
        try secured.validate()
        #expect(secured.startupWarnings.isEmpty)
        #expect(try secured.nodeSettings().transport.secret == (try PeerSecret(text: "0123456789abcdef0123")))
    }

    @Test func flagsAndEnvironmentOverrideTheFile() throws {
        var configuration = try NodeConfiguration.load(yaml: "node_id: 1\nhttp_listen: 127.0.0.1:8101", source: "f")
        try configuration.set("http_listen", value: "127.0.0.1:9999", source: "FULCRUM_HTTP_LISTEN")
        try configuration.set("node_id", value: "7", source: "--node-id")
        #expect(configuration.httpListen.port == 9999)
        #expect(configuration.nodeID == 7)
    }

    @Test func servingAndSecurityKeysLoad() throws {
        let keyFile = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-keys-\(UUID().uuidString)").path
        try "# comment\nfile-key-0123456789abcdef route,worker\n\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: keyFile) }
        let configuration = try NodeConfiguration.load(yaml: """
            http_listen: 0.0.0.0:8100
            http_advertise: http://fulcrum-0.fulcrum:8100/
            fail_open: true
            status_interval_ms: 100
            flush_interval_ms: 200
            circuit_failures: 7
            default_model: llama
            api_keys:
              - key: admin-key-0123456789abcdef
                scopes: [admin]
            api_key_file: \(keyFile)
            allow_cidrs: [10.0.0.0/8, 127.0.0.1]
            rate_limit_rps: 50
            rate_limit_burst: 100
            max_body_bytes: 2097152
            header_timeout_ms: 5000
            cors_origins: https://app.example
            log_level: debug
            """, source: "node.yaml")
        try configuration.validate()
        let serving = configuration.servingSettings
        #expect(serving.advertisedURL == "http://fulcrum-0.fulcrum:8100")
        #expect(serving.failOpen && serving.statusIntervalMilliseconds == 100 && serving.flushIntervalMilliseconds == 200)
        #expect(serving.circuitFailures == 7 && serving.defaultModel == "llama")
        let security = try configuration.securitySettings()
        #expect(security.apiKeys.map(\.key) == ["admin-key-0123456789abcdef", "file-key-0123456789abcdef"])
        #expect(security.apiKeys[1].scopes == [.route, .worker])
        #expect(security.allowedNetworks.map(\.description) == ["10.0.0.0/8", "127.0.0.1/32"])
        #expect(security.rateLimitPerSecond == 50 && security.rateLimitBurst == 100 && security.maxBodyBytes == 2_097_152)
        #expect(security.corsOrigins == ["https://app.example"] && configuration.logLevel == "debug")
        // Without http_advertise the URL comes from http_listen (a wildcard host becomes loopback).
        #expect(NodeConfiguration().servingSettings.advertisedURL == "http://127.0.0.1:8100")
        var flags = NodeConfiguration()
        try flags.set("api_keys", value: "flag-key-0123456789abcdef:route+metrics", source: "FULCRUM_API_KEYS")
        #expect(flags.security.apiKeys.first?.scopes == [.route, .metrics])
    }

    @Test func badServingAndSecurityValuesAreNamed() {
        let cases: [(String, String)] = [
            ("fail_open: maybe", "fail_open"), ("status_interval_ms: 0", "status_interval_ms"), ("allow_cidrs: [10.0.0.0/40]", "allow_cidrs"),
            ("api_keys: [{key: short, scopes: [admin]}]", "api_keys"), ("api_keys: [{key: long-enough-key-0123456789, scopes: [root]}]", "api_keys"),
            ("rate_limit_rps: -1", "rate_limit_rps"), ("max_body_bytes: 10", "max_body_bytes"), ("http_advertise: fulcrum:8100", "http_advertise"),
            ("log_level: loud", "log_level"), ("upstream_retries: 11", "upstream_retries"),
        ]
        for (yaml, key) in cases {
            expectError(key: key) { _ = try NodeConfiguration.load(yaml: yaml, source: "f") }
        }
        expectError(key: "http_tls_cert") {
            var configuration = NodeConfiguration()
            try configuration.set("http_tls_key", value: "/k.pem", source: "f")
            try configuration.validate()
        }
        expectError(key: "api_key_file") {
            var configuration = NodeConfiguration()
            try configuration.set("api_key_file", value: "/nonexistent/keys", source: "f")
            _ = try configuration.securitySettings()
        }
    }
}
