import Balancer
import FlexLBProtocol
import GRPCCore
import GRPCNIOTransportHTTP2
import Serving

/// Polls rtp-llm engines as FlexLB does (alibaba/rtp-llm 4b8d39cd5,
/// `GrpcWorkerStatusRunner.java`, `GrpcCacheStatusCheckRunner.java`, `EngineGrpcService.java`):
/// `RpcService.GetWorkerStatus` with the newest finished-request version seen, and, when the
/// cursor says so, `GetCacheStatus` with `need_cache_keys`, on the engine's HTTP port + 1 (or its
/// `grpc_port` label). One HTTP/2 connection per engine (a ``GRPCClientPool``), reused across
/// polls; connections to engines not polled for a minute are closed.
final class RTPLLMWorkerProber: Sendable {
    private let clients = GRPCClientPool()

    func probe(_ worker: Worker, cursor: EngineCursor, timeoutMilliseconds: Int, now: Milliseconds) async throws -> EngineReport {
        let target = try Self.grpcTarget(of: worker)
        let service = RpcService.Client(wrapping: try clients.client(host: target.host, port: target.port))
        var options = CallOptions.defaults
        options.timeout = .milliseconds(Int64(timeoutMilliseconds))
        var request = StatusVersionPB()
        request.latestFinishedVersion = cursor.finishedVersion
        let status = try await service.getWorkerStatus(request, options: options)
        var cache: CacheStatusPB?
        if cursor.readsCache {
            var cacheRequest = CacheVersionPB()
            cacheRequest.needCacheKeys = true
            cacheRequest.latestCacheVersion = -1
            // A failed cache read costs the keys of this round, not the worker's health.
            cache = try? await service.getCacheStatus(cacheRequest, options: options)
        }
        return try RTPLLMStatus.report(status, cache: cache, cursor: cursor, blockSize: worker.capacity.blockSize, now: now)
    }

    /// `host:port` of the engine's gRPC: its `grpc_port` label, else the HTTP port + 1.
    static func grpcTarget(of worker: Worker) throws -> (host: String, port: Int) {
        let (host, httpPort) = splitHostPort(worker.address)
        let port = worker.labels["grpc_port"].flatMap(Int.init) ?? httpPort + 1
        guard !host.isEmpty, (1...65_535).contains(port) else {
            throw StatusParseError(field: "address", "no gRPC port for \(worker.address)")
        }
        return (host, port)
    }

    /// Closes every connection.
    func shutdown() { clients.shutdown() }
}

/// An rtp-llm engine's status and cache status as one ``EngineReport``, every number clamped
/// into the balancer's bounds where it enters.
enum RTPLLMStatus {
    /// At most this many finished requests are taken from one answer (engines keep 1,000).
    static let maxFinished = 10_000

    static func report(
        _ status: WorkerStatusPB, cache: CacheStatusPB?, cursor: EngineCursor, blockSize: Int, now: Milliseconds
    ) throws(StatusParseError) -> EngineReport {
        guard status.alive else { throw StatusParseError(field: "alive", "the engine reports itself not alive") }
        var next = cursor
        var report = EngineReport(load: nil, cursor: cursor)
        if let cache {
            report.cache = CachedKeys(version: cache.version, keys: cache.cacheKeys.keys.map { UInt64(bitPattern: $0) })
        }
        // FlexLB applies a status only when its version advances; 0 is "no status yet".
        guard status.statusVersion > cursor.statusVersion else { return report }
        next.statusVersion = status.statusVersion
        let perBlock = max(blockSize, 1)
        let total = Bounds.count(Int(clamping: status.totalKvCache), Bounds.tokens)
        let available = Bounds.count(Int(clamping: status.availableKvCache), total)
        var queued = 0.0
        for task in status.runningTaskInfo where task.isWaiting {
            queued += Double(max(0, task.inputLength)) - Double(max(0, min(task.prefixLength, task.inputLength)))
        }
        report.load = EngineLoad(
            runningRequests: Bounds.count(Int(status.runningQueryLen), Bounds.requests),
            waitingRequests: Bounds.count(Int(status.waitingQueryLen), Bounds.requests),
            queuedPrefillTokens: Bounds.count(queued, Bounds.tokens),
            kvBlocksUsed: (total - available) / perBlock, kvBlocksTotal: total / perBlock,
            stepLatencyMilliseconds: Bounds.real(status.stepLatencyMs, Bounds.stepMilliseconds), reportedAt: now
        )
        report.finishedRequestIDs = status.finishedTaskList.prefix(maxFinished).map { String($0.requestID) }
        next.finishedVersion = max(cursor.finishedVersion, status.latestFinishedVersion)
        report.cursor = next
        return report
    }
}
