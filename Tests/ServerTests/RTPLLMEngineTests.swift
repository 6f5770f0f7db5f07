import Balancer
import FlexLBProtocol
import Foundation
import FulcrumAPI
import GRPCCore
import GRPCNIOTransportHTTP2
@testable import Server
@testable import Serving
import Simulator
import Testing

/// rtp-llm engines as FlexLB meets them: their engine gRPC polled for status and cached keys,
/// requests sent to them as a frontend sends them (`GenerateStreamCall` with token ids).
@Suite(.serialized)
struct RTPLLMEngineTests {
    static func engines(_ count: Int) -> [SimulatedEngine.Options] {
        (0..<count).map { SimulatedEngine.Options(id: "e\($0)", model: "m", profile: .h100_8b) }
    }

    /// Sends `tokens` to the engine at `address` (HTTP port; gRPC on the next) as a frontend
    /// does; returns the outputs streamed back.
    static func generate(_ address: String, requestID: Int64, tokens: [Int32], maxNewTokens: Int32 = 2) async throws -> [GenerateOutputsPB] {
        let (host, port) = splitHostPort(address)
        return try await withGRPCClient(
            transport: .http2NIOPosix(target: .ipv4(address: host, port: port + 1), transportSecurity: .plaintext)
        ) { client in
            var input = GenerateInputPB()
            input.requestID = requestID
            input.tokenIds = tokens
            input.generateConfig.maxNewTokens = maxNewTokens
            return try await RpcService.Client(wrapping: client).generateStreamCall(input) { response in
                var outputs: [GenerateOutputsPB] = []
                for try await message in response.messages { outputs.append(message) }
                return outputs
            }
        }
    }

    static func register(_ harness: ServingHarness, _ index: Int) async throws {
        let answer = try await harness.post(
            "/v1/workers",
            #"{"id":"w\#(index)","model":"m","role":"PDFUSION","address":"\#(harness.engineAddresses[index])","engine":"rtp-llm","capacity":{"block_size":16}}"#
        )
        #expect(answer.status == 200, "\(answer.text)")
    }

    static func view(_ harness: ServingHarness, _ id: String) async throws -> WorkerView? {
        try await harness.get("/admin/workers").decode(WorkerList.self)?.workers.first { $0.id == id }
    }

    static func waitFor(_ what: String, seconds: Double = 10, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting for \(what)")
        throw HarnessError("timed out waiting for \(what)")
    }

    @Test(.timeLimit(.minutes(1)))
    func theLeaderRoutesOnTheKeysEnginesReportAndForgetsThemWhenAnEngineRestarts() async throws {
        try await ServingHarness.with(engines: Self.engines(2), serving: { $0.engineCacheIntervalMilliseconds = 50 }, rtpLLM: true) { harness in
            for index in 0..<2 { try await Self.register(harness, index) }
            try await Self.waitFor("both workers healthy") {
                try await harness.get("/admin/workers").decode(WorkerList.self)?.workers.allSatisfy { $0.health == "healthy" } == true
            }
            // A frontend sends a 100-token prompt to engine 1: 6 full blocks of 16 are cached there.
            let tokens = (0..<100).map { Int32($0 * 7 + 3) }
            let outputs = try await Self.generate(harness.engineAddresses[1], requestID: 77, tokens: tokens)
            #expect(outputs.count == 2)
            #expect(outputs.last?.flattenOutput.finished == [true])
            #expect(outputs.last?.flattenOutput.auxInfo.first?.inputLen == 100)
            try await Self.waitFor("the index to hold engine 1's blocks") { try await Self.view(harness, "w1")?.cachedBlocks == 6 }
            #expect(try await Self.view(harness, "w0")?.cachedBlocks == 0)

            // The frontend's keys for the same prompt (the partial seventh block included) find it.
            let keys = RTPLLMCacheKeys.keys(tokens: tokens, blockSize: 16)
            #expect(keys.count == 7)
            let blockHashes = keys.map { String(UInt64(bitPattern: $0)) }.joined(separator: ",")
            let routed = try await harness.post("/v1/route", #"{"model":"m","request_id":"r1","block_hashes":[\#(blockHashes)],"prompt_tokens":100,"tokens_per_block":16}"#)
            let decision = try #require(routed.decode(RouteResponse.self), "\(routed.text)")
            #expect(decision.targets.first?.workerId == "w1")
            #expect(decision.targets.first?.matchedBlocks == 6)

            // A cold restart starts the cache version again: the index forgets what w1 held.
            harness.engines[1].setFaults({ var faults = SimulatedEngine.Faults(); faults.crashForMs = 200; return faults }())
            try await Self.waitFor("the index to drop engine 1's blocks") { try await Self.view(harness, "w1")?.cachedBlocks == 0 }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aHeldRequestEndsWhenItsEngineReportsItFinished() async throws {
        try await ServingHarness.with(engines: Self.engines(1), rtpLLM: true) { harness in
            try await Self.register(harness, 0)
            try await Self.waitFor("the worker healthy") { try await Self.view(harness, "w0")?.health == "healthy" }
            // Held for a minute, as a frontend's schedule is (frontends never release).
            let routed = try await harness.post("/v1/route", #"{"model":"m","request_id":"4242","prompt_tokens":64,"hold_ms":60000}"#)
            #expect(routed.status == 200, "\(routed.text)")
            #expect(try await Self.view(harness, "w0")?.reservedRequests == 1)
            // Another held request the engine never sees stays.
            _ = try await harness.post("/v1/route", #"{"model":"m","request_id":"4243","prompt_tokens":64,"hold_ms":60000}"#)
            #expect(try await Self.view(harness, "w0")?.reservedRequests == 2)

            _ = try await Self.generate(harness.engineAddresses[0], requestID: 4242, tokens: (0..<64).map { Int32($0) })
            try await Self.waitFor("the finished request's hold to end") { try await Self.view(harness, "w0")?.reservedRequests == 1 }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func anEngineWhoseGRPCStopsAnsweringBecomesUnhealthy() async throws {
        try await ServingHarness.with(engines: Self.engines(1), rtpLLM: true) { harness in
            try await Self.register(harness, 0)
            try await Self.waitFor("the worker healthy") { try await Self.view(harness, "w0")?.health == "healthy" }
            harness.engines[0].setFaults({ var faults = SimulatedEngine.Faults(); faults.crashForMs = 5_000; return faults }())
            try await Self.waitFor("the worker unhealthy") { try await Self.view(harness, "w0")?.health == "unhealthy" }
        }
    }
}

/// How one rtp-llm status answer becomes a report: versions, finished requests, clamps.
struct RTPLLMStatusTests {
    @Test
    func aStatusIsAppliedOnlyWhenItsVersionAdvances() throws {
        var status = WorkerStatusPB()
        status.alive = true
        status.statusVersion = 1_000
        status.runningQueryLen = 3
        status.waitingQueryLen = 2
        status.totalKvCache = 16_000
        status.availableKvCache = 4_000
        status.stepLatencyMs = 12.5
        status.latestFinishedVersion = 50
        var waiting = TaskInfoPB()
        waiting.isWaiting = true
        waiting.inputLength = 1_000
        waiting.prefixLength = 256
        status.runningTaskInfo = [waiting]
        var done = TaskInfoPB()
        done.requestID = 9
        status.finishedTaskList = [done]
        let report = try RTPLLMStatus.report(status, cache: nil, cursor: EngineCursor(), blockSize: 16, now: 5)
        let load = try #require(report.load)
        #expect(load.runningRequests == 3 && load.waitingRequests == 2)
        #expect(load.kvBlocksTotal == 1_000 && load.kvBlocksUsed == 750)
        #expect(load.queuedPrefillTokens == 744)
        #expect(load.stepLatencyMilliseconds == 12.5)
        #expect(report.finishedRequestIDs == ["9"])
        #expect(report.cursor == EngineCursor(statusVersion: 1_000, finishedVersion: 50))

        // The same version again: alive, nothing applied, the cursor stays.
        let again = try RTPLLMStatus.report(status, cache: nil, cursor: report.cursor, blockSize: 16, now: 6)
        #expect(again.load == nil && again.finishedRequestIDs.isEmpty && again.cursor == report.cursor)
        // Version 0 is "no status yet" (FlexLB ignores it).
        status.statusVersion = 0
        #expect(try RTPLLMStatus.report(status, cache: nil, cursor: EngineCursor(), blockSize: 16, now: 6).load == nil)
    }

    @Test
    func hostileNumbersAreClampedAndADeadEngineIsAFailure() throws {
        var status = WorkerStatusPB()
        status.alive = true
        status.statusVersion = .max
        status.runningQueryLen = -5
        status.waitingQueryLen = .max
        status.totalKvCache = .max
        status.availableKvCache = .min
        status.stepLatencyMs = .nan
        var task = TaskInfoPB()
        task.isWaiting = true
        task.inputLength = .max
        task.prefixLength = .min
        status.runningTaskInfo = [task, task, task]
        let load = try #require(try RTPLLMStatus.report(status, cache: nil, cursor: EngineCursor(), blockSize: 0, now: 1).load)
        #expect(load.runningRequests == 0)
        #expect(load.waitingRequests == Bounds.requests)
        #expect(load.kvBlocksTotal == Bounds.tokens && load.kvBlocksUsed == Bounds.tokens)
        #expect(load.queuedPrefillTokens == Bounds.tokens)
        #expect(load.stepLatencyMilliseconds == 0)
        status.alive = false
        #expect(throws: StatusParseError.self) { try RTPLLMStatus.report(status, cache: nil, cursor: EngineCursor(), blockSize: 16, now: 1) }
    }

    @Test
    func cachedKeysAreTheSignedKeysReadAsUnsigned() throws {
        var status = WorkerStatusPB()
        status.alive = true
        var cache = CacheStatusPB()
        cache.version = 4
        cache.cacheKeys = [-1: true, 7: true]
        let report = try RTPLLMStatus.report(status, cache: cache, cursor: EngineCursor(), blockSize: 16, now: 1)
        #expect(report.cache?.version == 4)
        #expect(Set(report.cache?.keys ?? []) == [UInt64.max, 7])
    }

    /// The bytes of the requests FlexLB sends, from upstream's field numbers
    /// (alibaba/rtp-llm 4b8d39cd5, rtp_llm/cpp/model_rpc/proto/model_rpc_service.proto:
    /// StatusVersionPB.latest_finished_version = 2, CacheVersionPB.latest_cache_version = 1 and
    /// need_cache_keys = 2, WorkerStatusPB.status_version = 12, alive = 13, role_type = 20,
    /// CacheStatusPB.cache_keys = 5 as map<int64, bool>), and the method paths (no package).
    @Test
    func wireBytesMatchUpstreamFieldNumbers() throws {
        var status = StatusVersionPB()
        status.latestFinishedVersion = 300
        #expect(try status.serializedBytes() as [UInt8] == [0x10, 0xAC, 0x02])
        var cache = CacheVersionPB()
        cache.latestCacheVersion = -1
        cache.needCacheKeys = true
        #expect(try cache.serializedBytes() as [UInt8] == [0x08] + [UInt8](repeating: 0xFF, count: 9) + [0x01, 0x10, 0x01])
        var worker = WorkerStatusPB()
        worker.statusVersion = 1
        worker.alive = true
        worker.roleType = .roleTypePrefill
        #expect(try worker.serializedBytes() as [UInt8] == [0x60, 0x01, 0x68, 0x01, 0xA0, 0x01, 0x01])
        var keys = CacheStatusPB()
        keys.cacheKeys = [5: true]
        #expect(try keys.serializedBytes() as [UInt8] == [0x2A, 0x04, 0x08, 0x05, 0x10, 0x01])
        #expect(RpcService.Method.GetWorkerStatus.descriptor.fullyQualifiedMethod == "RpcService/GetWorkerStatus")
        #expect(RpcService.Method.GetCacheStatus.descriptor.fullyQualifiedMethod == "RpcService/GetCacheStatus")
        #expect(RpcService.Method.GenerateStreamCall.descriptor.fullyQualifiedMethod == "RpcService/GenerateStreamCall")
    }
}

/// Reported key sets turned into index changes.
struct CachedKeysTrackerTests {
    @Test
    func keySetsBecomeDifferencesAndARestartReconcilesAgainstTheIndex() {
        var tracker = CachedKeysTracker()
        // First report: reconciled against what the index holds (9 came from routing history).
        var change = tracker.changes(workerID: "w", report: CachedKeys(version: 3, keys: [1, 2, 3]), held: [2, 9], cap: 100)
        #expect(change.record == [1, 3] && change.evict == [9])
        // Same version: nothing.
        change = tracker.changes(workerID: "w", report: CachedKeys(version: 3, keys: [1, 2]), held: [], cap: 100)
        #expect(change.record.isEmpty && change.evict.isEmpty)
        // Newer: the difference from the last set, whatever the index holds besides.
        change = tracker.changes(workerID: "w", report: CachedKeys(version: 5, keys: [2, 3, 4]), held: [1, 2, 3, 77], cap: 100)
        #expect(change.record == [4] && change.evict == [1])
        // Older: the engine restarted; everything the index holds and the engine does not report goes.
        change = tracker.changes(workerID: "w", report: CachedKeys(version: 0, keys: []), held: [2, 3, 4, 77], cap: 100)
        #expect(change.record.isEmpty && change.evict == [2, 3, 4, 77])
        // At most `cap` keys of a report are kept.
        change = tracker.changes(workerID: "x", report: CachedKeys(version: 1, keys: [5, 6, 7]), held: [], cap: 2)
        #expect(change.record.count == 2)
    }
}
