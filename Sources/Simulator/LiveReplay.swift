public import AsyncHTTPClient
import FlexLBProtocol
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import Synchronization

/// Replays a trace against a live endpoint (a Fulcrum node, a peer router, or one engine): each
/// request is sent at its arrival time (divided by `speed`) as a streaming completion, open
/// loop, and its TTFT, end-to-end time, cached tokens (from the engine's usage) and worker are
/// recorded.
public struct LiveReplay: Sendable {
    public var target: String
    public var speed: Double
    /// Stop sending after this many seconds of replay (nil: the whole trace).
    public var duration: Double?
    public var model: String
    public var tokensPerBlock: Int
    /// Also send the block ids as `fulcrum_block_hashes` (routers that read them route on them).
    public var sendHashes: Bool
    public var timeoutSeconds: Int64
    /// Serve each request as an rtp-llm frontend does instead: `Schedule` on the target's FlexLB
    /// gRPC (its port + 2), then `GenerateStreamCall` on the chosen rtp-llm engine.
    public var flexLB = false
    /// Tokens in one of the router's prefix blocks, to read `X-Fulcrum-Matched-Blocks` as tokens:
    /// the trace's blocks when their ids are sent, else 16 (Fulcrum's token blocks, and its
    /// 64-byte text blocks over the simulator's 4-byte tokens).
    public var routerTokensPerBlock: Int { sendHashes ? tokensPerBlock : 16 }

    public init(target: String, speed: Double = 1, duration: Double? = nil, model: String = "sim-model", tokensPerBlock: Int = Trace.mooncakeTokensPerBlock, sendHashes: Bool = false, timeoutSeconds: Int64 = 600) {
        self.target = target
        self.speed = speed
        self.duration = duration
        self.model = model
        self.tokensPerBlock = tokensPerBlock
        self.sendHashes = sendHashes
        self.timeoutSeconds = timeoutSeconds
    }

    final class Progress: Sendable {
        struct Counts {
            var sent = 0
            var done = 0
            var errors = 0
            var cached = 0
            var input = 0
        }

        let counts = Mutex(Counts())
    }

    public func run(_ trace: [TraceRequest], client: HTTPClient, progress report: @escaping @Sendable (String) -> Void) async -> [RequestRecord] {
        let selected = trace.filter { duration == nil || $0.timestampMilliseconds / 1000 / speed < duration! }
        let progress = Progress()
        let start = ContinuousClock.now
        let reporter = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .seconds(5))
                let counts = progress.counts.withLock { $0 }
                let elapsed = (ContinuousClock.now - start).components.seconds
                let hit = counts.input > 0 ? 100 * Double(counts.cached) / Double(counts.input) : 0
                report(String(
                    format: "t=%4lds  sent %d/%d  done %d  errors %d  in flight %d  hit %.1f%%",
                    elapsed, counts.sent, selected.count, counts.done, counts.errors, counts.sent - counts.done - counts.errors, hit
                ))
            }
        }
        var flexLBClient: FlexLBReplayClient?
        let pool = GRPCClientPool()
        // The node's FlexLB gRPC is on its HTTP port + 2.
        if flexLB, let url = URL(string: target), let host = url.host, let port = url.port, let client = try? pool.client(host: host, port: port + 2) {
            flexLBClient = FlexLBReplayClient(
                scheduler: FlexlbService.Client(wrapping: client), engines: pool, tokensPerBlock: tokensPerBlock, timeoutSeconds: timeoutSeconds
            )
        }
        let flex = flexLBClient
        let records = await withTaskGroup(of: RequestRecord.self) { group in
            for (index, request) in selected.enumerated() {
                let due = start + .milliseconds(Int64(request.timestampMilliseconds / speed))
                if due > .now { try? await Task.sleep(until: due) }
                progress.counts.withLock { $0.sent += 1 }
                group.addTask {
                    let record: RequestRecord
                    if let flex {
                        let sentAt = ContinuousClock.now
                        var flexRecord = RequestRecord(index: index, sentAt: Self.seconds(sentAt - start), inputTokens: request.inputTokens)
                        await flex.send(index: index, request, record: &flexRecord, sentAt: sentAt)
                        record = flexRecord
                    } else {
                        record = await self.send(index: index, request, client: client, start: start)
                    }
                    progress.counts.withLock { counts in
                        if record.error == nil {
                            counts.done += 1
                            counts.cached += record.cachedTokens
                            counts.input += record.inputTokens
                        } else {
                            counts.errors += 1
                        }
                    }
                    return record
                }
            }
            var records: [RequestRecord] = []
            for await record in group { records.append(record) }
            return records.sorted { $0.index < $1.index }
        }
        reporter.cancel()
        pool.shutdown()
        return records
    }

    func body(for request: TraceRequest) -> String {
        let text = PromptBlocks.text(forBlockIDs: request.blockIDs, inputTokens: request.inputTokens, tokensPerBlock: tokensPerBlock)
        var body = #"{"model":"\#(model)","stream":true,"stream_options":{"include_usage":true},"max_tokens":\#(request.outputTokens),"prompt":"\#(text)""#
        if sendHashes {
            body += #","fulcrum_block_hashes":[\#(request.blockIDs.map(String.init).joined(separator: ","))],"#
                + #""fulcrum_tokens_per_block":\#(tokensPerBlock),"fulcrum_input_tokens":\#(request.inputTokens)"#
        }
        return body + "}"
    }

    func send(index: Int, _ request: TraceRequest, client: HTTPClient, start: ContinuousClock.Instant) async -> RequestRecord {
        let sentAt = ContinuousClock.now
        var record = RequestRecord(index: index, sentAt: Self.seconds(sentAt - start), inputTokens: request.inputTokens)
        var http = HTTPClientRequest(url: target + "/v1/completions")
        http.method = .POST
        http.headers.add(name: "Content-Type", value: "application/json")
        http.body = .bytes(ByteBuffer(string: body(for: request)))
        do {
            let response = try await client.execute(http, timeout: .seconds(timeoutSeconds))
            record.worker = response.headers.first(name: "X-Fulcrum-Worker")
            if let matched = response.headers.first(name: "X-Fulcrum-Matched-Blocks").flatMap(Int.init), matched >= 0 {
                record.predictedCachedTokens = min(min(matched, request.inputTokens) * routerTokensPerBlock, request.inputTokens)
            }
            guard response.status.code == 200 else {
                let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                record.error = "HTTP \(response.status.code): \(text.prefix(200))"
                return record
            }
            var pending = ""
            var finished = false
            for try await chunk in response.body {
                pending += String(buffer: chunk)
                while let end = pending.range(of: "\n\n") {
                    let event = String(pending[..<end.lowerBound])
                    pending = String(pending[end.upperBound...])
                    guard event.hasPrefix("data: ") else { continue }
                    let payload = event.dropFirst(6)
                    if payload == "[DONE]" {
                        finished = true
                        continue
                    }
                    if record.ttft == nil { record.ttft = Self.seconds(ContinuousClock.now - sentAt) }
                    guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else { continue }
                    if record.worker == nil, let engine = object["engine"] as? String { record.worker = engine }
                    if let usage = object["usage"] as? [String: Any] {
                        record.cachedTokens = (usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int ?? 0
                    }
                }
            }
            record.endToEnd = Self.seconds(ContinuousClock.now - sentAt)
            if !finished || record.ttft == nil { record.error = "the stream ended early" }
        } catch {
            record.error = "\(error)"
        }
        return record
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
