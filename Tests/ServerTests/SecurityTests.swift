import AsyncHTTPClient
import Foundation
import NetworkTestSupport
import NIOCore
import NIOPosix
import NIOSSL
@testable import Server
@testable import Serving
import Simulator
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The HTTP listener's protections against a live socket.
@Suite(.serialized) struct SecurityTests {
    static let routeKey = "route-key-0123456789abcdef"
    static let adminKey = "admin-key-0123456789abcdef"
    static let workerKey = "worker-key-0123456789abcdef"

    static func keyed() -> SecuritySettings {
        var security = SecuritySettings()
        security.apiKeys = [
            .init(key: routeKey, scopes: [.route]), .init(key: adminKey, scopes: [.admin]), .init(key: workerKey, scopes: [.worker, .metrics]),
        ]
        return security
    }

    @Test(.timeLimit(.minutes(1)))
    func keysAndScopesGuardEveryEndpoint() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: Self.keyed()) { harness in
            let register = #"{"id":"w0","model":"m","role":"PDFUSION","address":"\#(harness.engineAddresses[0])"}"#
            let anonymous = try await harness.post("/v1/workers", register)
            #expect(anonymous.status == 401 && anonymous.errorField == "authorization")
            let wrong = try await harness.post("/v1/workers", register, headers: [("Authorization", "Bearer not-a-key-at-all-0000")])
            #expect(wrong.status == 401)
            let routeOnly = try await harness.post("/v1/workers", register, headers: [("Authorization", "Bearer \(Self.routeKey)")])
            #expect(routeOnly.status == 403 && routeOnly.text.contains("worker"))
            let worker = try await harness.post("/v1/workers", register, headers: [("X-API-Key", Self.workerKey)])
            #expect(worker.status == 200, "\(worker.text)")
            #expect(try await harness.post("/v1/route", #"{"model":"m"}"#, headers: [("X-API-Key", Self.workerKey)]).status == 403)
            #expect(try await harness.post("/v1/route", #"{"model":"m"}"#, headers: [("Authorization", "Bearer \(Self.routeKey)")]).status == 200)
            #expect(try await harness.post("/v1/route", #"{"model":"m"}"#, headers: [("Authorization", "Bearer \(Self.adminKey)")]).status == 200)
            #expect(try await harness.get("/admin/cluster", headers: [("Authorization", "Bearer \(Self.routeKey)")]).status == 403)
            #expect(try await harness.get("/admin/cluster", headers: [("Authorization", "Bearer \(Self.adminKey)")]).status == 200)
            #expect(try await harness.get("/metrics").status == 401)
            #expect(try await harness.get("/metrics", headers: [("X-API-Key", Self.workerKey)]).status == 200)
            #expect(try await harness.get("/healthz").status == 200)
            #expect(try await harness.get("/readyz").status == 200)
            let metrics = try await harness.get("/metrics", headers: [("X-API-Key", Self.adminKey)])
            #expect(metrics.text.contains("fulcrum_auth_failures_total 6"), "\(metrics.text.split(separator: "\n").filter { $0.contains("auth") })")
        }
    }

    /// Issue 16, item 10: failed authentications were never rate-limited.
    @Test(.timeLimit(.minutes(1)))
    func guessingKeysIsRateLimited() async throws {
        var security = Self.keyed()
        security.rateLimitPerSecond = 0.5
        security.rateLimitBurst = 4
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            var statuses: [Int] = []
            for guess in 0..<10 {
                statuses.append(try await harness.get("/rtp_llm/master/info", headers: [("Authorization", "Bearer guess-\(guess)")]).status)
            }
            #expect(statuses.prefix(4).allSatisfy { $0 == 401 }, "\(statuses)")
            #expect(statuses.filter { $0 == 429 }.count >= 5, "\(statuses)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func rateLimitsPerClientWithRetryAfter() async throws {
        var security = Self.keyed()
        // One token every 2 s: the ten requests below get at most one more on a slow, loaded machine.
        security.rateLimitPerSecond = 0.5
        security.rateLimitBurst = 4
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            var statuses: [Int] = []
            var retryAfter: String?
            for _ in 0..<10 {
                let answer = try await harness.get("/rtp_llm/master/info", headers: [("Authorization", "Bearer \(Self.routeKey)")])
                statuses.append(answer.status)
                if answer.status == 429 { retryAfter = answer.headers.first(name: "Retry-After") }
            }
            #expect(statuses.prefix(4).allSatisfy { $0 == 200 })
            #expect(statuses.filter { $0 == 429 }.count >= 5)
            #expect(retryAfter == "1" || retryAfter == "2", "Retry-After \(retryAfter ?? "none")")
            // Another key has its own bucket.
            #expect(try await harness.get("/rtp_llm/master/info", headers: [("Authorization", "Bearer \(Self.adminKey)")]).status == 200)
            // Probes are never throttled.
            for _ in 0..<10 { #expect(try await harness.get("/healthz").status == 200) }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func oversizedBodiesAreRefusedWith413() async throws {
        var security = SecuritySettings()
        security.maxBodyBytes = 1_024
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let big = #"{"model":"m","prompt":"\#(String(repeating: "x", count: 4_000))"}"#
            let answer = try await harness.post("/v1/route", big)
            #expect(answer.status == 413 && answer.errorField == "body")
            // Chunked, so no Content-Length to check up front.
            var request = HTTPClientRequest(url: harness.url + "/v1/route")
            request.method = .POST
            let chunks = (0..<8).map { _ in ByteBuffer(string: String(repeating: "y", count: 500)) }
            request.body = .stream(chunks.async, length: .unknown)
            let response = try await ServingHarness.client.execute(request, timeout: .seconds(5))
            #expect(response.status.code == 413)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func sourcesOutsideTheAllowListAreRefused() async throws {
        var security = SecuritySettings()
        security.allowedNetworks = [CIDR("10.0.0.0/8")!]
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let answer = try await harness.get("/admin/cluster")
            #expect(answer.status == 403 && answer.text.contains("forbidden_source"))
        }
        security.allowedNetworks = [CIDR("127.0.0.0/8")!]
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let answer = try await harness.get("/admin/cluster")
            #expect(answer.status == 200)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func securityHeadersAlwaysAndCORSOnlyWhenConfigured() async throws {
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")]) { harness in
            for path in ["/healthz", "/nowhere"] {
                let answer = try await harness.get(path, headers: [("Origin", "https://evil.example")])
                #expect(answer.headers.first(name: "X-Content-Type-Options") == "nosniff")
                #expect(answer.headers.first(name: "X-Frame-Options") == "DENY")
                #expect(answer.headers.first(name: "Access-Control-Allow-Origin") == nil)
            }
        }
        var security = SecuritySettings()
        security.corsOrigins = ["https://app.example"]
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let allowed = try await harness.get("/healthz", headers: [("Origin", "https://app.example")])
            #expect(allowed.headers.first(name: "Access-Control-Allow-Origin") == "https://app.example")
            let other = try await harness.get("/healthz", headers: [("Origin", "https://evil.example")])
            #expect(other.headers.first(name: "Access-Control-Allow-Origin") == nil)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aSlowHeaderClientIsCutOff() async throws {
        var security = SecuritySettings()
        security.headerTimeoutMilliseconds = 400
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let port = Int(harness.url.split(separator: ":").last!)!
            let started = ContinuousClock.now
            let closed = try await SlowClient.onThread { try SlowClient.trickleHeaders(port: port, byteEvery: .milliseconds(100), limit: .seconds(10)) }
            #expect(closed)
            let elapsed = ContinuousClock.now - started
            #expect(elapsed < .seconds(3), "cut off after \(elapsed)")
            // A normal client on a fresh connection is served.
            #expect(try await harness.get("/healthz").status == 200)
        }
    }

    /// Issue 16, item 8: a body trickled a byte at a time held a connection and a task for as
    /// long as the client liked; the body deadline ends it.
    @Test(.timeLimit(.minutes(1)))
    func aSlowBodyClientIsCutOff() async throws {
        var security = SecuritySettings()
        security.bodyTimeoutMilliseconds = 500
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let port = Int(harness.url.split(separator: ":").last!)!
            let started = ContinuousClock.now
            let closed = try await SlowClient.onThread { try SlowClient.trickleBody(port: port, byteEvery: .milliseconds(50), limit: .seconds(15)) }
            #expect(closed)
            let elapsed = ContinuousClock.now - started
            #expect(elapsed < .seconds(3), "cut off after \(elapsed)")
            #expect(try await harness.get("/healthz").status == 200)
        }
    }

    /// Issue 16, item 8: the listener took every connection offered. Past `max_connections`
    /// a new one is closed as it opens, and counted; once one closes, the next is served.
    @Test(.timeLimit(.minutes(1)))
    func connectionsPastTheCapAreClosedAndCounted() async throws {
        var security = SecuritySettings()
        security.maxConnections = 4
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let port = Int(harness.url.split(separator: ":").last!)!
            let held = try (0..<4).map { _ in try connectLoopback(port: port) }
            try await Task.sleep(for: .milliseconds(200))
            let refused = try await SlowClient.onThread {
                let fd = try connectLoopback(port: port)
                defer { close(fd) }
                return !SlowClient.exchange(fd)
            }
            #expect(refused, "a fifth connection was served")
            for fd in held { close(fd) }
            try await Task.sleep(for: .milliseconds(300))
            let metrics = try await harness.get("/metrics")
            #expect(metrics.status == 200)
            let line = metrics.text.split(separator: "\n").first { $0.hasPrefix("fulcrum_http_connections_refused_total ") }
            #expect((line?.split(separator: " ").last.flatMap { Double($0) } ?? 0) >= 1, "\(line ?? "no line")")
        }
    }

    /// A kept-alive connection idle for longer than the header timeout stays open for its next
    /// request (closing it sooner races with clients that reuse it); the idle timeout ends it.
    @Test(.timeLimit(.minutes(1)))
    func aKeptAliveConnectionOutlivesTheHeaderTimeoutUntilItIsIdleTooLong() async throws {
        var security = SecuritySettings()
        security.headerTimeoutMilliseconds = 300
        security.idleTimeoutMilliseconds = 1_500
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security) { harness in
            let port = Int(harness.url.split(separator: ":").last!)!
            let reused = try await SlowClient.onThread { try SlowClient.keptAlive(port: port, pause: .milliseconds(800)) }
            #expect(reused.first && reused.second, "\(reused)")
            let expired = try await SlowClient.onThread { try SlowClient.keptAlive(port: port, pause: .milliseconds(2_500)) }
            #expect(expired.first && !expired.second, "\(expired)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func servesHTTPSWhenGivenACertificate() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        openssl.arguments = [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(directory)/key.pem", "-out", "\(directory)/cert.pem",
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ]
        openssl.standardError = FileHandle.nullDevice
        openssl.standardOutput = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        try #require(openssl.terminationStatus == 0)
        var security = SecuritySettings()
        security.tlsCertificate = "\(directory)/cert.pem"
        security.tlsKey = "\(directory)/key.pem"
        try await ServingHarness.with(engines: [.init(id: "a", model: "m")], security: security, tls: true) { harness in
            var configuration = HTTPClient.Configuration()
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file("\(directory)/cert.pem")
            configuration.tlsConfiguration = tls
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            do {
                let response = try await client.execute(HTTPClientRequest(url: harness.url + "/healthz"), timeout: .seconds(5))
                #expect(response.status.code == 200)
                #expect(response.headers.first(name: "Strict-Transport-Security") != nil)
            } catch {
                Issue.record("HTTPS request failed: \(error)")
            }
            try await client.shutdown()
        }
    }
}

/// A client that sends a request head one byte at a time.
enum SlowClient {
    /// Runs blocking socket code on a thread of its own: blocking one of the few threads of
    /// the concurrency pool (two on this machine) for seconds stalls every test running beside.
    static func onThread<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Swift.Result { try body() }) }.start()
        }
    }

    /// Sends a request on `fd` and reads until a whole `/healthz` answer (or 2 s); whether it was a 200.
    static func exchange(_ fd: Int32) -> Bool {
        var request = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        guard send(fd, &request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return false }
        var received: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < deadline {
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&probe, 1, 100) > 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received += buffer[..<count]
            let text = String(decoding: received, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n"), let length = text.range(of: "content-length: ", options: .caseInsensitive),
                let value = Int(text[length.upperBound...].prefix { $0.isNumber }),
                text.utf8.count >= text.utf8.distance(from: text.startIndex, to: end.upperBound) + value
            {
                return text.hasPrefix("HTTP/1.1 200")
            }
        }
        return false
    }

    /// Two requests on one kept-alive connection, `pause` apart; whether each got a 200.
    static func keptAlive(port: Int, pause: Duration) throws -> (first: Bool, second: Bool) {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        let first = exchange(fd)
        Thread.sleep(forTimeInterval: Double(pause.components.seconds) + Double(pause.components.attoseconds) * 1e-18)
        return (first, exchange(fd))
    }

    static func trickleHeaders(port: Int, byteEvery interval: Duration, limit: Duration) throws -> Bool {
        let head = Array("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: \(String(repeating: "a", count: 500))\r\n\r\n".utf8)
        return try trickle(port: port, whole: [], then: head, byteEvery: interval, limit: limit)
    }

    /// A complete request head, then its 500-byte body a byte at a time.
    static func trickleBody(port: Int, byteEvery interval: Duration, limit: Duration) throws -> Bool {
        let body = Array(#"{"model":"m","prompt":"\#(String(repeating: "a", count: 474))"}"#.utf8)
        let head = Array("POST /v1/route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
        return try trickle(port: port, whole: head, then: body, byteEvery: interval, limit: limit)
    }

    /// Sends `whole` at once, then `bytes` one every `interval`; true when the server closed the
    /// connection before `limit`.
    static func trickle(port: Int, whole: [UInt8], then bytes: [UInt8], byteEvery interval: Duration, limit: Duration) throws -> Bool {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        var first = whole
        if !first.isEmpty, send(fd, &first, first.count, Int32(MSG_NOSIGNAL)) < 0 { return true }
        let start = ContinuousClock.now
        for byte in bytes {
            if ContinuousClock.now - start > limit { return false }
            var value = byte
            if send(fd, &value, 1, Int32(MSG_NOSIGNAL)) < 0 { return true }
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(interval.components.seconds * 1000 + interval.components.attoseconds / 1_000_000_000_000_000)
            if poll(&probe, 1, milliseconds) > 0 {
                var buffer = [UInt8](repeating: 0, count: 64)
                if recv(fd, &buffer, 64, 0) <= 0 { return true }
            }
        }
        return false
    }
}
