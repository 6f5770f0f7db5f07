import Foundation
import FulcrumAPI
import NetworkTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hostile values and identities against real `fulcrum` processes (issue 16): each test here
/// failed on the code before its fix.
@Suite(.serialized) struct HostileInputProcessTests {
    static let routeKey = "route-only-key-0123456789"
    static let adminKey = "admin-key-0123456789abcdef"

    /// Every admin and worker route, as method and path (with a sample id where one is needed).
    static let protectedRoutes: [(String, String)] = [
        ("GET", "/admin/cluster"), ("GET", "/admin/state"), ("GET", "/admin/members"), ("POST", "/admin/members"),
        ("POST", "/admin/members/7/promote"), ("DELETE", "/admin/members/7"), ("POST", "/admin/leader/transfer"),
        ("POST", "/admin/snapshot"), ("GET", "/admin/snapshot/archive"), ("GET", "/admin/workers"), ("POST", "/admin/workers"),
        ("DELETE", "/admin/workers/w"), ("POST", "/admin/workers/w/drain"), ("POST", "/admin/workers/w/undrain"),
        ("GET", "/admin/config"), ("PUT", "/admin/config/default_policy"), ("PUT", "/admin/config/policies/m"),
        ("DELETE", "/admin/config/policies/m"), ("PUT", "/admin/config/tiers/t"), ("DELETE", "/admin/config/tiers/t"),
        ("PATCH", "/admin/config/settings"), ("POST", "/v1/workers"), ("DELETE", "/v1/workers/w"),
        ("POST", "/v1/workers/w/heartbeat"), ("GET", "/metrics"),
    ]

    /// Spellings of `path` a router might treat as the same route.
    static func spellings(of path: String) -> [String] {
        let parts = path.split(separator: "/").map(String.init)
        let first = parts[0]
        let rest = parts.dropFirst().joined(separator: "/")
        let tail = rest.isEmpty ? "" : "/" + rest
        var encodedFirst = first
        if let letter = first.first {
            encodedFirst = String(format: "%%%02X", letter.asciiValue ?? 0) + first.dropFirst()
        }
        return [
            path, "/" + path, path.replacingOccurrences(of: "/", with: "//"), "/./" + first + tail,
            "/" + first + "/." + tail, "/x/../" + first + tail, "/" + encodedFirst + tail,
            "/" + first + (rest.isEmpty ? "" : "%2F" + rest.replacingOccurrences(of: "/", with: "%2F")),
            path + "/", path.uppercased(), "/" + first.capitalized + tail, path + "?x=1", path + "#frag",
        ]
    }

    @Test(.timeLimit(.minutes(3)))
    func aRouteOnlyKeyReachesNoAdminOrWorkerRouteWhateverThePathSpelling() async throws {
        let cluster = try ProcessCluster(founders: 1, environment: [
            "FULCRUM_API_KEYS": "\(Self.routeKey):route,\(Self.adminKey):admin", "FULCRUM_LOG_LEVEL": "warning",
        ])
        defer { cluster.stopAll() }
        cluster.defaultHeaders = [("Authorization", "Bearer \(Self.adminKey)")]
        _ = try await cluster.leader()
        let port = cluster.httpPorts[1]!
        var tried = 0
        var admitted: [String] = []
        for (method, path) in Self.protectedRoutes {
            for target in Self.spellings(of: path) {
                let status = try await RawHTTP.status(
                    port: port, method: method, target: target, headers: ["Authorization: Bearer \(Self.routeKey)"], body: "{}"
                )
                tried += 1
                if (200..<300).contains(status) { admitted.append("\(method) \(target) → \(status)") }
            }
        }
        #expect(tried > 300)
        #expect(admitted.isEmpty, "a route-only key was admitted: \(admitted)")
        // The admin key still works, and the route key still routes (the check is not just closed).
        #expect(try await RawHTTP.status(port: port, method: "GET", target: "/admin/cluster", headers: ["Authorization: Bearer \(Self.adminKey)"]) == 200)
        let route = try await RawHTTP.status(
            port: port, method: "POST", target: "/v1/route", headers: ["Authorization: Bearer \(Self.routeKey)"], body: #"{"model":"m"}"#
        )
        #expect(route == 404, "no worker for m yet, but admitted: \(route)")
    }
}

/// Requests written byte for byte, so no client library normalises the request target.
enum RawHTTP {
    /// Sends one request (Connection: close) and returns the status code of the answer.
    static func status(port: Int, method: String, target: String, headers: [String] = [], body: String? = nil) async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result { try exchange(port: port, method: method, target: target, headers: headers, body: body) })
            }.start()
        }
    }

    private static func exchange(port: Int, method: String, target: String, headers: [String], body: String?) throws -> Int {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for header in headers { head += header + "\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        var bytes = Array((head + "\r\n" + (body ?? "")).utf8)
        guard send(fd, &bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw IntegrationError("send failed") }
        var received: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, !received.contains(UInt8(ascii: "\n")) {
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&probe, 1, 100) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 1024)
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[..<count]
        }
        let line = String(decoding: received.prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return 0 }
        return status
    }
}

extension HostileInputProcessTests {
    /// Issue 16, item 1: a worker's absurd load killed the leader at its next least_load
    /// decision, and every leader after it (the value was replicated).
    @Test(.timeLimit(.minutes(3)))
    func anAbsurdLoadFromAWorkerStopsNoNode() async throws {
        let cluster = try ProcessCluster(founders: 3, environment: ["FULCRUM_LOG_LEVEL": "warning"])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        let registration = #"{"id":"w","model":"m","role":"PDFUSION","address":"127.0.0.1:9","labels":{"status":"none"}}"#
        #expect(try await cluster.request(.POST, cluster.endpoint(leader) + "/v1/workers", json: registration).status == 200)
        let policy = try await cluster.request(
            .PUT, cluster.endpoint(leader) + "/admin/config/policies/m", json: #"{"strategies":{"PDFUSION":"least_load"}}"#
        )
        #expect(policy.status == 200, "\(policy)")
        // Refused where they enter, naming the field (1e300 is not an integer at all: the body).
        for (value, field) in [("9223372036854775807", "load.running_requests"), ("1e300", "body"), ("-1", "load.running_requests")] {
            let beat = try await cluster.request(
                .POST, cluster.endpoint(leader) + "/v1/workers/w/heartbeat",
                json: #"{"load":{"running_requests":\#(value),"waiting_requests":1}}"#
            )
            #expect(beat.status == 400 && beat.error?.field == field, "\(value): \(beat)")
        }
        // Whatever was taken reaches the log within a flush; then every node routes on it.
        try await Task.sleep(for: .milliseconds(500))
        try await routeEverywhere(cluster, round: "absurd")
        // A load at the bound is taken and routed on.
        let bounded = try await cluster.request(
            .POST, cluster.endpoint(leader) + "/v1/workers/w/heartbeat", json: #"{"load":{"running_requests":1048576,"waiting_requests":1048576}}"#
        )
        #expect(bounded.status == 200, "\(bounded)")
        try await Task.sleep(for: .milliseconds(500))
        try await routeEverywhere(cluster, round: "bounded")
        for id in cluster.founders { #expect(cluster.processes[id]?.isRunning == true, "node \(id) stopped") }
    }

    private func routeEverywhere(_ cluster: ProcessCluster, round: String) async throws {
        for attempt in 0..<2 {
            for id in cluster.founders where cluster.processes[id]?.isRunning == true {
                let answer = try? await cluster.request(.POST, cluster.endpoint(id) + "/v1/route", json: #"{"model":"m","request_id":"\#(round)-\#(attempt)-\#(id)"}"#)
                #expect(answer?.status == 200, "\(round): route via \(id): \(answer.map(String.init(describing:)) ?? "no answer")")
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }
}

extension HostileInputProcessTests {
    /// Issue 16, item 5: `/v1/release` counted its outcome against whatever `worker_id` it
    /// named before checking that anything was released: five calls opened any worker's circuit.
    @Test(.timeLimit(.minutes(2)))
    func aReleaseCountsItsOutcomeOnlyAgainstTheWorkersItHeld() async throws {
        let cluster = try ProcessCluster(founders: 1, environment: ["FULCRUM_LOG_LEVEL": "warning"])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        let url = cluster.endpoint(leader)
        for id in ["held", "bystander"] {
            let body = #"{"id":"\#(id)","model":"m","role":"PDFUSION","address":"127.0.0.1:9","labels":{"status":"none"}}"#
            #expect(try await cluster.request(.POST, url + "/v1/workers", json: body).status == 200)
        }
        // Route until a decision holds "held" (so the bystander is never part of it).
        var token: String?
        for attempt in 0..<40 where token == nil {
            let answer = try await cluster.request(.POST, url + "/v1/route", json: #"{"model":"m","request_id":"r\#(attempt)"}"#)
            if let decision = answer.decode(RouteResponse.self), decision.targets.first?.workerId == "held" { token = decision.releaseToken }
        }
        let held = try #require(token)
        // The real release names another worker; four more name it with tokens that release nothing.
        for (index, candidate) in [held, held, "\(leader).1.999999", "\(leader).1.1", "999.1.1"].enumerated() {
            let answer = try await cluster.request(
                .POST, url + "/v1/release", json: #"{"release_token":"\#(candidate)","outcome":"server_error","worker_id":"bystander"}"#
            )
            #expect(index == 0 ? answer.status == 200 : answer.status == 404, "\(candidate): \(answer)")
        }
        // A dead worker's open circuit is not closed by a release that held nothing of it.
        for _ in 0..<5 {
            _ = try await cluster.request(.POST, url + "/v1/release", json: #"{"release_token":"\#(held)","outcome":"ok","worker_id":"held"}"#)
        }
        try await Task.sleep(for: .milliseconds(400))
        let workers = try #require(try await cluster.request(.GET, url + "/admin/workers").decode(WorkerList.self)).workers
        #expect(workers.first { $0.id == "bystander" }?.circuit == "closed", "\(workers.map { ($0.id, $0.circuit) })")
    }
}

extension HostileInputProcessTests {
    /// Issue 16, item 6: a status probe's deadline ended when the headers arrived, so a worker
    /// that sent headers and then stalled froze the polling round for every worker: a dead one
    /// was never marked down.
    @Test(.timeLimit(.minutes(2)))
    func aWorkerThatStallsMidAnswerHoldsNoPollingRound() async throws {
        let staller = try StallingServer()
        defer { staller.stop() }
        let cluster = try ProcessCluster(founders: 1, environment: [
            "FULCRUM_LOG_LEVEL": "warning", "FULCRUM_STATUS_INTERVAL_MS": "50", "FULCRUM_STATUS_TIMEOUT_MS": "250",
        ])
        defer { cluster.stopAll() }
        let leader = try await cluster.leader()
        try await cluster.waitUntilReady()
        let url = cluster.endpoint(leader)
        let dead = freePorts(1)[0]
        for (id, port) in [("staller", staller.port), ("dead", dead)] {
            let body = #"{"id":"\#(id)","model":"m","role":"PDFUSION","address":"127.0.0.1:\#(port)"}"#
            #expect(try await cluster.request(.POST, url + "/v1/workers", json: body).status == 200)
        }
        var health: [String: String] = [:]
        let deadline = ContinuousClock.now + .seconds(8)
        while ContinuousClock.now < deadline, health["dead"] != "unhealthy" || health["staller"] != "unhealthy" {
            try await Task.sleep(for: .milliseconds(200))
            let workers = try await cluster.request(.GET, url + "/admin/workers").decode(WorkerList.self)?.workers ?? []
            health = Dictionary(workers.map { ($0.id, $0.health) }) { first, _ in first }
        }
        #expect(health["dead"] == "unhealthy" && health["staller"] == "unhealthy", "\(health)")
        #expect(staller.connections > 0, "the staller was polled")
    }
}

/// Answers every connection with a status line and headers promising a body, then sends
/// nothing more and keeps the connection open.
final class StallingServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var accepted: [Int32] = []
    private var stopped = false

    var connections: Int { lock.withLock { accepted.count } }

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var reuse: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else { throw IntegrationError("staller: cannot listen") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in serve() }.start()
    }

    private func serve() {
        while true {
            var probe = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            if poll(&probe, 1, 100) <= 0 {
                if lock.withLock({ stopped }) { return }
                continue
            }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            _ = recv(client, &buffer, buffer.count, 0)
            var head = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"running".utf8)
            _ = send(client, &head, head.count, Int32(MSG_NOSIGNAL))
            lock.withLock { accepted.append(client) }
        }
    }

    func stop() {
        let open = lock.withLock {
            stopped = true
            defer { accepted = [] }
            return accepted
        }
        for fd in open { close(fd) }
        close(listener)
    }
}
