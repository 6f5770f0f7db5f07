import Foundation
import Server
import NodeCommands
import Testing
import Yams

/// The shipped configurations and Kubernetes manifests: every config loads, the manifests
/// validate against Kubernetes' schemas, selectors match labels, and the founders the
/// entrypoint derives match the replica count.
@Suite struct DeploymentTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func files(under folder: String, ending suffix: String) throws -> [URL] {
        let base = root.appendingPathComponent(folder)
        let enumerator = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil)
        return (enumerator?.allObjects as? [URL] ?? []).filter { $0.path.hasSuffix(suffix) }.sorted { $0.path < $1.path }
    }

    static func documents(_ name: String) throws -> [[String: Any]] {
        let text = try String(contentsOf: root.appendingPathComponent("Deploy/kubernetes/base/\(name)"), encoding: .utf8)
        return try Yams.load_all(yaml: text).compactMap { $0 as? [String: Any] }
    }

    @Test func everyExampleConfigurationLoadsAndValidates() throws {
        let configs = try Self.files(under: "Config", ending: ".yaml")
        #expect(configs.count >= 8)
        for file in configs {
            let text = try String(contentsOf: file, encoding: .utf8)
            do {
                let configuration = try NodeConfiguration.load(yaml: text, source: file.lastPathComponent)
                try configuration.validate()
            } catch {
                Issue.record("\(file.path): \(error)")
            }
        }
    }

    @Test func everyConfigurationKeyIsDocumentedWithItsDefault() throws {
        let text = try String(contentsOf: Self.root.appendingPathComponent("Docs/configuration.md"), encoding: .utf8)
        let rows = text.split(separator: "\n").filter { $0.hasPrefix("| `") }
        for key in NodeConfiguration.keys.sorted() {
            let row = rows.first { $0.contains("`\(key)`") }
            #expect(row != nil, "Docs/configuration.md has no row for \(key)")
            // Every row has a default column (a value, "none" or a derivation).
            if let row { #expect(row.split(separator: "|").count >= 3, "\(key): \(row)") }
        }
    }

    @Test func theConfigMapCarriesTheKubernetesExample() throws {
        let configMap = try #require(try Self.documents("configmap.yaml").first)
        let data = try #require(configMap["data"] as? [String: String])
        let example = try String(contentsOf: Self.root.appendingPathComponent("Config/kubernetes/fulcrum.yaml"), encoding: .utf8)
        let body = example.split(separator: "\n", omittingEmptySubsequences: false).drop { $0.hasPrefix("#") }.joined(separator: "\n")
        #expect(body == data["fulcrum.yaml"])
    }

    @Test func selectorsMatchLabelsAndQuorumIsKept() throws {
        let statefulSet = try #require(try Self.documents("statefulset.yaml").first)
        let spec = try #require(statefulSet["spec"] as? [String: Any])
        let template = try #require(spec["template"] as? [String: Any])
        let labels = try #require((template["metadata"] as? [String: Any])?["labels"] as? [String: String])
        func matches(_ selector: [String: String]?) -> Bool {
            guard let selector, !selector.isEmpty else { return false }
            return selector.allSatisfy { labels[$0.key] == $0.value }
        }
        #expect(matches((spec["selector"] as? [String: Any])?["matchLabels"] as? [String: String]))
        #expect(spec["podManagementPolicy"] as? String == "Parallel")
        let replicas = try #require(spec["replicas"] as? Int)
        #expect(replicas == 3)

        let services = try Self.documents("services.yaml")
        let peer = try #require(services.first { ($0["metadata"] as? [String: Any])?["name"] as? String == spec["serviceName"] as? String })
        let peerSpec = try #require(peer["spec"] as? [String: Any])
        #expect(peerSpec["clusterIP"] as? String == "None" && peerSpec["publishNotReadyAddresses"] as? Bool == true)
        for service in services { #expect(matches((service["spec"] as? [String: Any])?["selector"] as? [String: String])) }
        let client = try #require(services.first { ($0["spec"] as? [String: Any])?["clusterIP"] == nil })
        #expect((client["spec"] as? [String: Any])?["publishNotReadyAddresses"] == nil)

        let budget = try #require(try Self.documents("pdb.yaml").first?["spec"] as? [String: Any])
        #expect(matches((budget["selector"] as? [String: Any])?["matchLabels"] as? [String: String]))
        #expect(budget["minAvailable"] as? Int == replicas / 2 + 1)

        let pod = try #require(template["spec"] as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        let environment = (container["env"] as? [[String: Any]] ?? []).reduce(into: [String: String]()) { result, item in
            if let name = item["name"] as? String, let value = item["value"] as? String { result[name] = value }
        }
        #expect(environment["FULCRUM_INITIAL_CLUSTER_SIZE"] == String(replicas))
        #expect(environment["FULCRUM_PEER_SERVICE"] == spec["serviceName"] as? String)
        #expect(((container["readinessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["path"] as? String == "/readyz")
        #expect(((container["livenessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["path"] as? String == "/healthz")
        #expect((pod["securityContext"] as? [String: Any])?["runAsNonRoot"] as? Bool == true)
        let resources = try #require(container["resources"] as? [String: Any])
        #expect(resources["requests"] != nil && resources["limits"] != nil)
        let claims = (spec["volumeClaimTemplates"] as? [[String: Any]] ?? []).compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
        let mounts = (container["volumeMounts"] as? [[String: Any]] ?? []).filter { $0["mountPath"] as? String == "/var/lib/fulcrum" }
        #expect(mounts.count == 1 && claims.contains(mounts[0]["name"] as? String ?? ""))
    }

    @Test func theEntrypointDerivesFoundersFromTheReplicaCount() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-entry-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let fake = directory.appendingPathComponent("fulcrum")
        try "#!/bin/sh\necho \"$FULCRUM_NODE_ID|$FULCRUM_BOOTSTRAP|$FULCRUM_PEER_ADVERTISE|$FULCRUM_HTTP_ADVERTISE|$*\"\n"
            .write(to: fake, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake.path)
        for ordinal in 0..<3 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [Self.root.appendingPathComponent("Deploy/docker/entrypoint.sh").path, "--config", "/etc/fulcrum/fulcrum.yaml"]
            process.environment = [
                "POD_NAME": "fulcrum-\(ordinal)", "POD_NAMESPACE": "llm", "FULCRUM_INITIAL_CLUSTER_SIZE": "3",
                "FULCRUM_PEER_SERVICE": "fulcrum-peers", "FULCRUM_BIN": fake.path, "PATH": "/usr/bin:/bin",
            ]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            process.waitUntilExit()
            let fields = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|", omittingEmptySubsequences: false)
            #expect(fields.count == 5)
            #expect(fields[0] == "\(ordinal + 1)")
            let founders = fields[1].split(separator: ",")
            #expect(founders == (0..<3).map { "\($0 + 1)=fulcrum-\($0).fulcrum-peers.llm.svc.cluster.local:7100" })
            #expect(fields[2] == "fulcrum-\(ordinal).fulcrum-peers.llm.svc.cluster.local:7100")
            #expect(fields[3] == "http://fulcrum-\(ordinal).fulcrum-peers.llm.svc.cluster.local:8100")
            #expect(fields[4] == "serve --config /etc/fulcrum/fulcrum.yaml")
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func manifestsValidateAgainstTwoKubernetesVersions() throws {
        let manifests = try Self.files(under: "Deploy/kubernetes", ending: ".yaml").map(\.path)
        #expect(manifests.count >= 4)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "kubernetes_validate", "--strict", "-k", "1.29.0", "-k", "1.33.0"] + manifests
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "kubernetes-validate (pip install kubernetes-validate; Scripts/test.sh does): \(output)")
        #expect(!output.contains("ERROR") && output.contains("against version 1.33"))
    }
}
