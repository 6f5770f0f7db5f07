import Foundation
public import KVEvents

/// Runs an ``EngineModel`` against the wall clock: each iteration takes as long as the model
/// says, and every request's events (first token, tokens, end) are delivered when they happen.
public actor EngineRuntime {
    public private(set) var model: EngineModel
    private let origin = ContinuousClock.now
    private var streams: [UInt64: AsyncStream<EngineModel.Event>.Continuation] = [:]
    private var nextID: UInt64 = 1
    private var wake: CheckedContinuation<Void, Never>?
    private var running = false

    /// Publishes the cache's changes as KV events (vLLM's and SGLang's), when given.
    let publisher: KVEventPublisher?
    /// Token ids of full blocks whose tokens are known, and each one's parent: what a
    /// `BlockStored` carries. Blocks announced stored, so their removal is announced too.
    private var blockTokens: [UInt64: (parent: UInt64?, tokens: ArraySlice<UInt32>)] = [:]
    private var announced: Set<UInt64> = []

    public init(profile: EngineProfile, publisher: KVEventPublisher? = nil) {
        model = EngineModel(profile: profile)
        self.publisher = publisher
        model.recordsKVEvents = publisher != nil
    }

    /// Seconds since the runtime started (the model's time base).
    private var elapsed: Double {
        let (seconds, attoseconds) = (ContinuousClock.now - origin).components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }

    /// Queues a request now; its events arrive on the returned stream, which ends with
    /// `.finished` or `.rejected`.
    public func submit(
        blocks: [UInt64], inputTokens: Int, outputTokens: Int, transferredPrompt: Bool = false, tokens: [UInt32]? = nil
    ) -> AsyncStream<EngineModel.Event> {
        if publisher != nil, let tokens { remember(blocks: blocks, tokens: tokens) }
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
        model.recordsKVEvents = publisher != nil
        blockTokens = [:]
        announced = []
        publisher?.publish(KVEventBatch(timestamp: Date().timeIntervalSince1970, events: [.allCleared], dataParallelRank: 0))
    }

    private func remember(blocks: [UInt64], tokens: [UInt32]) {
        let size = model.profile.blockSize
        for index in blocks.indices where (index + 1) * size <= tokens.count && blockTokens[blocks[index]] == nil {
            blockTokens[blocks[index]] = (index > 0 ? blocks[index - 1] : nil, tokens[(index * size)..<((index + 1) * size)])
        }
        // Entries of blocks never stored (their requests were refused) do not pile up.
        if blockTokens.count > 4 * max(1, model.kvBlocksTotal) {
            let stored = Set(model.storedBlocks.blocks)
            blockTokens = blockTokens.filter { stored.contains($0.key) || announced.contains($0.key) }
        }
    }

    /// The cache's changes of one step as one batch, as an engine publishes them per step:
    /// consecutive stored blocks of one prompt in one `BlockStored`.
    private func publishEvents() {
        guard let publisher else { return }
        let changes = model.takeKVEvents()
        guard !changes.isEmpty else { return }
        let size = model.profile.blockSize
        var events: [KVCacheEvent] = []
        for change in changes {
            switch change {
            case .stored(let block):
                guard let known = blockTokens[block] else { continue }
                announced.insert(block)
                if case .stored(let hashes, let parent, let tokens, _)? = events.last, let previous = hashes.last, known.parent == previous {
                    events[events.count - 1] = .stored(hashes: hashes + [block], parent: parent, tokens: tokens + known.tokens, blockSize: size)
                } else {
                    events.append(.stored(hashes: [block], parent: known.parent, tokens: Array(known.tokens), blockSize: size))
                }
            case .removed(let block):
                blockTokens[block] = nil
                guard announced.remove(block) != nil else { continue }
                if case .removed(let hashes)? = events.last {
                    events[events.count - 1] = .removed(hashes: hashes + [block])
                } else {
                    events.append(.removed(hashes: [block]))
                }
            }
        }
        publisher.publish(KVEventBatch(timestamp: Date().timeIntervalSince1970, events: events, dataParallelRank: 0))
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
            publishEvents()
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
