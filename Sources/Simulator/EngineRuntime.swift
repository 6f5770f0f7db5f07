/// Runs an ``EngineModel`` against the wall clock: each iteration takes as long as the model
/// says, and every request's events (first token, tokens, end) are delivered when they happen.
public actor EngineRuntime {
    public private(set) var model: EngineModel
    private let origin = ContinuousClock.now
    private var streams: [UInt64: AsyncStream<EngineModel.Event>.Continuation] = [:]
    private var nextID: UInt64 = 1
    private var wake: CheckedContinuation<Void, Never>?
    private var running = false

    public init(profile: EngineProfile) { model = EngineModel(profile: profile) }

    /// Seconds since the runtime started (the model's time base).
    private var elapsed: Double {
        let (seconds, attoseconds) = (ContinuousClock.now - origin).components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }

    /// Queues a request now; its events arrive on the returned stream, which ends with
    /// `.finished` or `.rejected`.
    public func submit(blocks: [UInt64], inputTokens: Int, outputTokens: Int, transferredPrompt: Bool = false) -> AsyncStream<EngineModel.Event> {
        let id = nextID
        nextID += 1
        let (stream, continuation) = AsyncStream<EngineModel.Event>.makeStream()
        streams[id] = continuation
        var request = EngineModel.Request(
            id: id, blocks: blocks, inputTokens: max(1, inputTokens), outputTokens: max(1, outputTokens), arrival: max(elapsed, model.now)
        )
        request.transferredPrompt = transferredPrompt
        model.submit(request)
        startIfNeeded()
        return stream
    }

    /// What the engine reports on its status endpoints.
    public struct Load: Sendable {
        public var running: Int
        public var waiting: Int
        public var kvBlocksUsed: Int
        public var kvBlocksTotal: Int
        public var queuedPrefillTokens: Int
        public var stepMilliseconds: Double
        public var promptTokensTotal: Int
        public var cachedTokensTotal: Int
    }

    public func load() -> Load {
        Load(
            running: model.runningRequests, waiting: model.waitingRequests, kvBlocksUsed: model.kvBlocksUsed,
            kvBlocksTotal: model.kvBlocksTotal, queuedPrefillTokens: model.queuedPrefillTokens,
            stepMilliseconds: model.lastIterationSeconds * 1000,
            promptTokensTotal: model.promptTokensTotal, cachedTokensTotal: model.cachedTokensTotal
        )
    }

    /// Every block stored in the KV cache, with the version of that set.
    public func storedBlocks() -> (version: Int64, blocks: [UInt64]) { model.storedBlocks }

    /// Drops every cached prefix and waits for nothing: a cold engine (between benchmark runs).
    public func reset() {
        let profile = model.profile
        for continuation in streams.values { continuation.finish() }
        streams = [:]
        model = EngineModel(profile: profile)
    }

    private func startIfNeeded() {
        if let wake {
            self.wake = nil
            wake.resume()
        }
        guard !running else { return }
        running = true
        Task { await self.loop() }
    }

    private func loop() async {
        while !Task.isCancelled {
            if model.isIdle {
                await withCheckedContinuation { continuation in wake = continuation }
                continue
            }
            if let start = model.nextStart, start > elapsed {
                try? await Task.sleep(for: .seconds(start - elapsed))
            }
            let events = model.step()
            let due = model.now - elapsed
            if due > 0 { try? await Task.sleep(for: .seconds(due)) }
            for event in events { deliver(event) }
            if events.isEmpty && model.nextStart != nil && !model.isIdle {
                // Waiting requests cannot be admitted yet (KV full) and nothing runs: wait a bit.
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    private func deliver(_ event: EngineModel.Event) {
        switch event {
        case .firstToken(let id, _, _), .token(let id, _):
            streams[id]?.yield(event)
        case .finished(let id, _), .rejected(let id, _):
            streams[id]?.yield(event)
            streams.removeValue(forKey: id)?.finish()
        }
    }
}
