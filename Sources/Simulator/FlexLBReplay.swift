import Balancer
import FlexLBProtocol
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2

/// A trace replayed as rtp-llm frontends serve it: each request's token ids (made up per trace
/// block id, so equal blocks are equal tokens), `block_cache_keys` from rtp-llm's rolling hash
/// over them, `Schedule` on a node's FlexLB gRPC (its HTTP port + 2), then `GenerateStreamCall`
/// with the same request id on the chosen engine's gRPC (`fulcrum-sim engines --engine
/// rtp-llm`). TTFT is the first streamed output; cached tokens are the engine's reuse length.
struct FlexLBReplayClient: Sendable {
    let scheduler: FlexlbService.Client<HTTP2ClientTransport.Posix>
    let engines: GRPCClientPool
    let tokensPerBlock: Int
    let timeoutSeconds: Int64
    /// Request ids of this replay: a random high offset, so reruns against the same engines
    /// never reuse one.
    let idBase = Int64.random(in: 1 << 40...(1 << 50))

    /// The prompt of a trace request as token ids: block id *b* is `tokensPerBlock` tokens
    /// derived from *b*, the last block cut to the request's length.
    static func tokens(blockIDs: [UInt64], inputTokens: Int, tokensPerBlock: Int) -> [Int32] {
        var tokens: [Int32] = []
        tokens.reserveCapacity(blockIDs.count * tokensPerBlock)
        for id in blockIDs {
            var state = id &* 0x9E37_79B9_7F4A_7C15 | 1
            for _ in 0..<tokensPerBlock {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                tokens.append(Int32(state % 150_000))
            }
        }
        return Array(tokens.prefix(max(1, inputTokens)))
    }

    func send(index: Int, _ request: TraceRequest, record: inout RequestRecord, sentAt: ContinuousClock.Instant) async {
        let tokens = Self.tokens(blockIDs: request.blockIDs, inputTokens: request.inputTokens, tokensPerBlock: tokensPerBlock)
        var schedule = FlexlbScheduleRequestPB()
        schedule.requestID = idBase + Int64(index)
        schedule.blockCacheKeys = RTPLLMCacheKeys.keys(tokens: tokens, blockSize: tokensPerBlock)
        schedule.seqLen = Int64(tokens.count)
        schedule.generateTimeout = timeoutSeconds * 1_000
        schedule.requestTimeMs = Int64(Date().timeIntervalSince1970 * 1_000)
        schedule.maxNewTokens = Int32(clamping: request.outputTokens)
        schedule.numBeams = 1
        schedule.model = "engine_service"
        schedule.cacheKeyBlockSize = Int64(tokensPerBlock)
        schedule.priority = 50
        do {
            var options = CallOptions.defaults
            options.timeout = .seconds(timeoutSeconds)
            let answer = try await scheduler.schedule(schedule, options: options)
            guard answer.code == 200, let server = answer.serverStatus.first else {
                record.error = "Schedule: code \(answer.code) \(answer.errorMessage)"
                return
            }
            record.worker = "\(server.serverIp):\(server.httpPort)"
            var input = GenerateInputPB()
            input.requestID = schedule.requestID
            input.tokenIds = tokens
            input.generateConfig.maxNewTokens = Int32(clamping: max(1, request.outputTokens))
            let engine = RpcService.Client(wrapping: try engines.client(host: server.serverIp, port: Int(server.grpcPort)))
            let (ttft, reuse, finished) = try await engine.generateStreamCall(input, options: options) { response in
                var ttft: Duration?
                var reuse = 0
                var finished = false
                for try await output in response.messages {
                    if ttft == nil { ttft = ContinuousClock.now - sentAt }
                    reuse = Int(output.flattenOutput.auxInfo.first?.totalReuseLen ?? 0)
                    finished = output.flattenOutput.finished.first ?? false
                }
                return (ttft, reuse, finished)
            }
            record.ttft = ttft.map(LiveReplay.seconds)
            record.cachedTokens = reuse
            record.endToEnd = LiveReplay.seconds(ContinuousClock.now - sentAt)
            if !finished || ttft == nil { record.error = "the stream ended early" }
        } catch {
            record.error = "\(error)"
        }
    }
}
