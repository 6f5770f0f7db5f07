import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One network namespace per node, each with a veth pair into a bridge in the test's own
/// namespace, on a private /24 that this run made up: the nodes talk to each other, and the test
/// to them, across real interfaces, and partitions are nftables rules inside the namespaces.
/// No other address is ever a target. Needs root, iproute2 and nftables; ``make(nodes:)``
/// answers nil when the machine does not allow it, and callers fall back to the TCP proxy.
///
/// A partition cuts connections by who opened them (conntrack's direction), as the proxy does:
/// cutting a→b drops every packet of connections a opened to b, both ways, and leaves b's
/// connections to a alone. Both directions cut is a full partition. Connections that cross a new
/// cut are not closed; they stall, as on a real network.
final class NetworkLab: Sendable {
    let tag: String
    let subnet: String
    let nodes: [UInt64]

    private init(tag: String, subnet: String, nodes: [UInt64]) {
        self.tag = tag
        self.subnet = subnet
        self.nodes = nodes
    }

    func namespace(_ node: UInt64) -> String { "fulcrum-\(tag)-\(node)" }
    func address(_ node: UInt64) -> String { "\(subnet).\(node)" }
    var bridge: String { "fb\(tag)" }
    var hostAddress: String { "\(subnet).254" }

    /// Builds the namespaces for `nodes` (ids 1…253), or nil when the machine cannot.
    static func make(nodes: [UInt64]) -> NetworkLab? {
        guard getuid() == 0, nodes.allSatisfy({ (1...253).contains($0) }),
            FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip"),
            (try? shell(["nft", "--version"])) != nil
        else { return nil }
        removeAbandonedLabs()
        let pid = getpid()
        let lab = NetworkLab(tag: String(pid), subnet: "10.213.\(Int(pid) % 250)", nodes: nodes)
        do {
            try lab.build()
            return lab
        } catch {
            print("network namespaces unavailable (\(error)); partitions go through the TCP proxy")
            lab.tearDown()
            return nil
        }
    }

    private func build() throws {
        try Self.shell(["ip", "link", "add", bridge, "type", "bridge"])
        try Self.shell(["ip", "addr", "add", "\(hostAddress)/24", "dev", bridge])
        try Self.shell(["ip", "link", "set", bridge, "up"])
        for node in nodes {
            let space = namespace(node)
            let host = "fv\(tag)n\(node)"
            let inside = "fp\(tag)n\(node)"
            try Self.shell(["ip", "netns", "add", space])
            try Self.shell(["ip", "link", "add", host, "type", "veth", "peer", "name", inside])
            try Self.shell(["ip", "link", "set", host, "master", bridge])
            try Self.shell(["ip", "link", "set", host, "up"])
            try Self.shell(["ip", "link", "set", inside, "netns", space])
            try Self.shell(["ip", "-n", space, "link", "set", "lo", "up"])
            try Self.shell(["ip", "-n", space, "addr", "add", "\(address(node))/24", "dev", inside])
            try Self.shell(["ip", "-n", space, "link", "set", inside, "up"])
        }
        cut([])
    }

    /// Cuts exactly the connections opened from `pair.from` to `pair.to` for every pair given.
    func cut(_ pairs: Set<Partitions.Pair>) {
        for node in nodes {
            let cutFrom = pairs.filter { $0.to == node }.map { address($0.from) }.sorted()
            var rules = "flush ruleset\ntable inet fulcrum {\n"
            rules += "  chain input { type filter hook input priority 0; policy accept;\n"
            if !cutFrom.isEmpty { rules += "    ip saddr { \(cutFrom.joined(separator: ", ")) } ct direction original drop\n" }
            rules += "  }\n  chain output { type filter hook output priority 0; policy accept;\n"
            if !cutFrom.isEmpty { rules += "    ip daddr { \(cutFrom.joined(separator: ", ")) } ct direction reply drop\n" }
            rules += "  }\n}\n"
            do {
                try Self.shell(["ip", "netns", "exec", namespace(node), "nft", "-f", "-"], input: rules)
            } catch {
                print("nft in \(namespace(node)) failed: \(error)")
            }
        }
    }

    func tearDown() {
        for node in nodes { _ = try? Self.shell(["ip", "netns", "del", namespace(node)]) }
        _ = try? Self.shell(["ip", "link", "del", bridge])
    }

    /// Namespaces and bridges of runs whose process is gone (a test killed mid-run).
    private static func removeAbandonedLabs() {
        guard let spaces = try? shell(["ip", "netns", "list"]) else { return }
        var tags = Set<String>()
        for line in spaces.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard parts.count == 3, parts[0] == "fulcrum", let pid = Int32(parts[1]) else { continue }
            guard kill(pid, 0) != 0 else { continue }
            _ = try? shell(["ip", "netns", "del", name])
            tags.insert(String(parts[1]))
        }
        for tag in tags { _ = try? shell(["ip", "link", "del", "fb\(tag)"]) }
    }

    /// Runs a command (found on PATH, /usr/sbin included); its output, or an error with its
    /// standard error when it fails.
    @discardableResult
    static func shell(_ arguments: [String], input: String? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = (environment["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        let feed = Pipe()
        if input != nil { process.standardInput = feed }
        try process.run()
        if let input {
            feed.fileHandleForWriting.write(Data(input.utf8))
            try feed.fileHandleForWriting.close()
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let failure = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw IntegrationError("\(arguments.joined(separator: " ")) exited with \(process.terminationStatus): \(failure)")
        }
        return text
    }
}
