import ArgumentParser
import AsyncHTTPClient
import Foundation
import FulcrumAPI
import NIOCore
import Synchronization

/// `fulcrum-sim traffic`: multi-turn conversations through a Fulcrum cluster's OpenAI-compatible
/// proxy, printing every interval what happened: the leader, requests, failures, the prefix
/// hit ratio Fulcrum reported, and requests per worker. Fails over between the given nodes.
struct Traffic: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send chat traffic with shared prefixes through a cluster and report.")

    @Option(help: "Node base URLs, comma-separated; requests go to any, failing over.") var targets: String
    @Option(help: "Model to ask for.") var model = "sim-model"
    @Option(help: "Conversations that grow turn by turn (shared prefixes).") var conversations = 24
    @Option(help: "Requests in flight at once.") var concurrency = 4
    @Option(help: "Seconds between reports.") var intervalSeconds = 5
    @Option(help: "Stop after this many seconds (0: run until interrupted).") var durationSeconds = 0
    @Option(help: "Tokens to generate per request.") var maxTokens = 8

    func validate() throws {
        guard !urls.isEmpty else { throw ValidationError("--targets needs at least one http(s):// URL") }
        guard (1...10_000).contains(conversations), (1...1_024).contains(concurrency), intervalSeconds > 0, durationSeconds >= 0 else {
            throw ValidationError("--conversations 1...10000, --concurrency 1...1024, --interval-seconds > 0, --duration-seconds >= 0")
        }
    }

    var urls: [String] {
        targets.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("http://") || $0.hasPrefix("https://") }
    }

    final class Tallies: Sendable {
        let state = Mutex(Tally())
        func withLock<Result>(_ body: (inout Tally) -> Result) -> Result { state.withLock { body(&$0) } }
    }

    struct Tally: Sendable {
        var ok = 0
        var failed = 0
        var matched = 0
        var prompt = 0
        var perWorker: [String: Int] = [:]
        var lastError = ""
    }

    func run() async throws {
        var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(1)))
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let tally = Tallies()
        let urls = urls
        let started = ContinuousClock.now
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for lane in 0..<concurrency {
                    group.addTask { try await self.lane(lane, urls: urls, client: client, tally: tally) }
                }
                group.addTask { try await self.report(urls: urls, client: client, tally: tally, started: started) }
                if durationSeconds > 0 {
                    group.addTask { try await Task.sleep(for: .seconds(durationSeconds)) }
                    try await group.next()
                    group.cancelAll()
                } else {
                    try await group.next()
                }
            }
        } catch is CancellationError {
        }
        let total = tally.withLock { $0 }
        Self.say("total: \(total.ok) ok, \(total.failed) failed, hit ratio \(Self.percent(total.matched, total.prompt))")
        try? await client.shutdown()
    }

    private func lane(_ lane: Int, urls: [String], client: HTTPClient, tally: Tallies) async throws {
        var turns = [Int](repeating: 0, count: conversations)
        var target = lane % urls.count
        var random = SystemRandomNumberGenerator()
        while !Task.isCancelled {
            let conversation = Int.random(in: 0..<conversations, using: &random)
            turns[conversation] += 1
            let background = String(repeating: "Background for conversation \(conversation). ", count: 12)
            var messages = [#"{"role":"system","content":"You are assistant \#(conversation). \#(background)"}"#]
            for turn in 0..<turns[conversation] {
                messages.append(#"{"role":"user","content":"Question \#(turn) of conversation \#(conversation): tell me more about topic \#(turn * 7 + conversation)."}"#)
                messages.append(#"{"role":"assistant","content":"Answer \#(turn): here is what I know about topic \#(turn * 7 + conversation)."}"#)
            }
            if turns[conversation] > 20 { turns[conversation] = 0 }
            let body = #"{"model":"\#(model)","stream":true,"max_tokens":\#(maxTokens),"messages":[\#(messages.joined(separator: ","))]}"#
            var request = HTTPClientRequest(url: urls[target] + "/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
            do {
                let response = try await client.execute(request, timeout: .seconds(10))
                _ = try await response.body.collect(upTo: 1 << 20)
                let status = response.status.code
                tally.withLock { tally in
                    guard status == 200 else {
                        tally.failed += 1
                        tally.lastError = "HTTP \(status) from \(urls[target])"
                        return
                    }
                    tally.ok += 1
                    tally.matched += Int(response.headers.first(name: "X-Fulcrum-Matched-Blocks") ?? "") ?? 0
                    tally.prompt += Int(response.headers.first(name: "X-Fulcrum-Prompt-Blocks") ?? "") ?? 0
                    tally.perWorker[response.headers.first(name: "X-Fulcrum-Worker") ?? "?", default: 0] += 1
                }
                if status != 200 { target = (target + 1) % urls.count }
            } catch {
                tally.withLock {
                    $0.failed += 1
                    $0.lastError = "\(urls[target]): \(error)"
                }
                target = (target + 1) % urls.count
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func report(urls: [String], client: HTTPClient, tally: Tallies, started: ContinuousClock.Instant) async throws {
        var previous = Tally()
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(intervalSeconds))
            let now = tally.withLock { $0 }
            var leader = "none"
            for url in urls {
                if let response = try? await client.execute(HTTPClientRequest(url: url + "/rtp_llm/master/info"), timeout: .seconds(1)),
                   let body = try? await response.body.collect(upTo: 1 << 16),
                   let info = try? FulcrumJSON.verbatimDecoder.decode(MasterInfo.self, from: Data(buffer: body)), info.leaderId > 0 {
                    let id = info.leaderId
                    leader = "node \(id)"
                    break
                }
            }
            let ok = now.ok - previous.ok
            let failed = now.failed - previous.failed
            let workers = now.perWorker.keys.sorted().map { "\($0) \(now.perWorker[$0]! - (previous.perWorker[$0] ?? 0))" }.joined(separator: ", ")
            let elapsed = Int((ContinuousClock.now - started).components.seconds)
            var line = String(format: "t=%4ds  leader %@  %5d ok  %3d failed  %6.1f req/s  hit %@  per worker: %@",
                              elapsed, leader, ok, failed, Double(ok) / Double(intervalSeconds),
                              Self.percent(now.matched - previous.matched, now.prompt - previous.prompt), workers)
            if failed > 0 { line += "  (last error: \(now.lastError.prefix(120)))" }
            Self.say(line)
            previous = now
        }
    }

    /// Writes a line at once (stdout to a pipe is otherwise block-buffered).
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    static func percent(_ part: Int, _ whole: Int) -> String {
        whole == 0 ? "  -  " : String(format: "%5.1f%%", 100 * Double(part) / Double(whole))
    }
}
