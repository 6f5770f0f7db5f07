import Balancer
public import FlexLBProtocol
public import GRPCCore
public import GRPCNIOTransportHTTP2
import Foundation
import Synchronization

/// A simulated engine's rtp-llm personality: the engine gRPC (`RpcService`) an rtp-llm engine
/// serves on its HTTP port + 1, as alibaba/rtp-llm 4b8d39cd5 serves it
/// (`rtp_llm/cpp/model_rpc/LocalRpcServer.cc`, `RpcServerRuntimeMeta.h`, `KVCacheManager.cc`):
///
/// - `GenerateStreamCall` runs `token_ids` through the engine's timing model; the prompt's
///   blocks are rtp-llm's rolling block keys (``RTPLLMCacheKeys``, full blocks), so what the
///   engine caches is named as a frontend names it in `block_cache_keys`;
/// - `GetWorkerStatus` answers the engine's load, its running tasks, and the tasks finished
///   after the asked `latest_finished_version` (finished versions count up from the engine's
///   start time in microseconds; the last 1,000 are kept); `status_version` is the time in
///   microseconds;
/// - `GetCacheStatus` answers every stored block key with the cache's version, which counts
///   changes and starts again at 0 when the engine restarts cold.
public final class RTPLLMEngineService: RpcService.SimpleServiceProtocol {
    private struct Book {
        var running: [Int64: TaskInfoPB] = [:]
        var finished: [(version: Int64, info: TaskInfoPB)] = []
        var nextFinishedVersion: Int64
        var lastStatusVersion: Int64 = 0
    }

    /// Finished tasks kept for `GetWorkerStatus` (upstream's `finished_capacity_`).
    static let finishedCapacity = 1_000

    public let engine: SimulatedEngine
    private let book: Mutex<Book>

    public init(engine: SimulatedEngine) {
        self.engine = engine
        book = Mutex(Book(nextFinishedVersion: Self.microseconds()))
    }

    static func microseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

    var blockSize: Int { engine.options.profile?.blockSize ?? 16 }

    private func checkUp() throws {
        if engine.isDown { throw RPCError(code: .unavailable, message: "engine down") }
    }

    public func getWorkerStatus(request: StatusVersionPB, context: ServerContext) async throws -> WorkerStatusPB {
        try checkUp()
        let load = await engine.runtime?.load()
        var status = WorkerStatusPB()
        status.role = "RoleType.\(engine.options.role)"
        status.roleType = Self.roleType(engine.options.role)
        status.alive = true
        status.dpSize = 1
        status.tpSize = 1
        status.precision = "FP16"
        status.maxSeqLen = Int64(engine.options.profile?.kvCapacityTokens ?? 32_768)
        status.maxBatchTokensSize = Int64(engine.options.profile?.maxBatchedTokens ?? 8_192)
        status.stepLatencyMs = load?.stepMilliseconds ?? Double(engine.options.tokenIntervalMilliseconds)
        status.totalKvCache = Int64((load?.kvBlocksTotal ?? 8_192) * blockSize)
        status.availableKvCache = Int64(((load?.kvBlocksTotal ?? 8_192) - (load?.kvBlocksUsed ?? 0)) * blockSize)
        book.withLock { book in
            book.lastStatusVersion = max(book.lastStatusVersion + 1, Self.microseconds())
            status.statusVersion = book.lastStatusVersion
            status.runningTaskInfo = book.running.keys.sorted().map { book.running[$0]! }
            var latest = request.latestFinishedVersion
            for (version, info) in book.finished where version > request.latestFinishedVersion {
                status.finishedTaskList.append(info)
                latest = max(latest, version)
            }
            status.latestFinishedVersion = latest
            status.waitingQueryLen = Int32(book.running.values.filter(\.isWaiting).count)
            status.runningQueryLen = Int32(book.running.count) - status.waitingQueryLen
        }
        if let load {
            status.waitingQueryLen = Int32(load.waiting)
            status.runningQueryLen = Int32(load.running)
        }
        return status
    }

    public func getCacheStatus(request: CacheVersionPB, context: ServerContext) async throws -> CacheStatusPB {
        try checkUp()
        var status = CacheStatusPB()
        status.blockSize = Int64(blockSize)
        if let runtime = engine.runtime {
            let load = await runtime.load()
            status.totalKvCache = Int64(load.kvBlocksTotal * blockSize)
            status.availableKvCache = Int64((load.kvBlocksTotal - load.kvBlocksUsed) * blockSize)
            let stored = await runtime.storedBlocks()
            status.version = stored.version
            if request.needCacheKeys {
                for block in stored.blocks { status.cacheKeys[Int64(bitPattern: block)] = true }
            }
        }
        return status
    }

    public func generateStreamCall(
        request: GenerateInputPB, response: RPCWriter<GenerateOutputsPB>, context: ServerContext
    ) async throws {
        try checkUp()
        let tokens = request.tokenIds
        let outputTokens = engine.options.role == "PREFILL"
            ? 1 : max(1, min(Int(request.generateConfig.maxNewTokens > 0 ? request.generateConfig.maxNewTokens : Int32(engine.options.defaultOutputTokens)), 100_000))
        var info = TaskInfoPB()
        info.requestID = request.requestID
        info.inputLength = Int64(tokens.count)
        info.isWaiting = true
        info.phase = .received
        info.priority = request.priority
        let started = ContinuousClock.now
        book.withLock { $0.running[request.requestID] = info }
        defer { finish(info, started: started) }

        func output(_ index: Int, finished: Bool, cached: Int) async throws {
            var aux = AuxInfoPB()
            aux.inputLen = Int32(tokens.count)
            aux.prefixLen = Int32(cached)
            aux.totalReuseLen = Int32(cached)
            aux.localReuseLen = Int32(cached)
            aux.outputLen = Int32(index + 1)
            aux.stepOutputLen = 1
            aux.iterCount = Int32(index + 1)
            var ids = TensorPB()
            ids.dataType = .int32
            ids.shape = [1, 1]
            var token = Int32(index % 32_000).littleEndian
            ids.int32Data = withUnsafeBytes(of: &token) { Data($0) }
            var message = GenerateOutputsPB()
            message.requestID = request.requestID
            message.flattenOutput.finished = [finished]
            message.flattenOutput.auxInfo = [aux]
            message.flattenOutput.outputIds = ids
            try await response.write(message)
        }

        guard let runtime = engine.runtime else {
            for index in 0..<outputTokens {
                if index == 0 { markRunning(request.requestID, cached: 0) }
                let interval = engine.options.tokenIntervalMilliseconds
                if interval > 0 { try await Task.sleep(for: .milliseconds(interval)) }
                try await output(index, finished: index == outputTokens - 1, cached: 0)
            }
            return
        }
        let blocks = RTPLLMCacheKeys.keys(tokens: tokens, blockSize: blockSize, fullBlocksOnly: true).map { UInt64(bitPattern: $0) }
        let events = await runtime.submit(blocks: blocks, inputTokens: tokens.count, outputTokens: outputTokens)
        var cached = 0
        var index = 0
        for await event in events {
            switch event {
            case .firstToken(_, _, let tokens):
                cached = tokens
                markRunning(request.requestID, cached: cached)
            case .token:
                break
            case .finished:
                continue
            case .rejected(_, let reason):
                throw RPCError(code: .resourceExhausted, message: reason)
            }
            try await output(index, finished: index == outputTokens - 1, cached: cached)
            index += 1
        }
    }

    private func markRunning(_ requestID: Int64, cached: Int) {
        book.withLock { book in
            book.running[requestID]?.isWaiting = false
            book.running[requestID]?.phase = .running
            book.running[requestID]?.prefixLength = Int64(cached)
        }
    }

    private func finish(_ info: TaskInfoPB, started: ContinuousClock.Instant) {
        book.withLock { book in
            var done = book.running.removeValue(forKey: info.requestID) ?? info
            done.endTimeMs = Self.microseconds() / 1_000
            done.executionTimeMs = Int64((ContinuousClock.now - started).components.seconds * 1_000)
                + (ContinuousClock.now - started).components.attoseconds / 1_000_000_000_000_000
            if book.finished.count >= Self.finishedCapacity { book.finished.removeFirst() }
            book.finished.append((book.nextFinishedVersion, done))
            book.nextFinishedVersion += 1
        }
    }

    static func roleType(_ role: String) -> RoleTypePB {
        switch role {
        case "PREFILL": .roleTypePrefill
        case "DECODE": .roleTypeDecode
        case "VIT": .roleTypeVit
        default: .roleTypePdfusion
        }
    }
}

extension RTPLLMEngineService {
    /// A gRPC server of this service on `host:port` (an rtp-llm engine's HTTP port + 1); run it
    /// with `serve()`.
    public func makeServer(host: String, port: Int) -> GRPCServer<HTTP2ServerTransport.Posix> {
        GRPCServer(transport: .http2NIOPosix(address: .ipv4(host: host, port: port), transportSecurity: .plaintext), services: [self])
    }
}
