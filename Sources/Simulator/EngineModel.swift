/// One simulated engine as a deterministic, clock-free state machine: continuous batching with
/// chunked prefill (vLLM V1 / SGLang style), a KV cache of fixed capacity in blocks with LRU
/// eviction of unpinned blocks, and prefix reuse by chained block hashes. Time is virtual
/// (seconds); the live server paces it against the wall clock, replays can run it flat out.
public struct EngineModel: Sendable {
    public struct Request: Sendable, Hashable {
        public var id: UInt64
        /// Chained block hashes of the prompt, one per `blockSize` tokens (the last may be partial).
        public var blocks: [UInt64]
        public var inputTokens: Int
        public var outputTokens: Int
        /// Virtual time of arrival, seconds.
        public var arrival: Double
        /// The prompt's KV arrives from a prefill worker (disaggregated decode): nothing to
        /// compute but the last token.
        public var transferredPrompt = false

        public init(id: UInt64, blocks: [UInt64], inputTokens: Int, outputTokens: Int, arrival: Double) {
            self.id = id
            self.blocks = blocks
            self.inputTokens = inputTokens
            self.outputTokens = outputTokens
            self.arrival = arrival
        }
    }

    public enum Event: Sendable, Hashable {
        /// The iteration that finished the prompt ended: the first token exists.
        case firstToken(id: UInt64, time: Double, cachedTokens: Int)
        case token(id: UInt64, time: Double)
        case finished(id: UInt64, time: Double)
        /// The request can never fit this engine's KV cache.
        case rejected(id: UInt64, reason: String)
    }

    struct Sequence: Sendable {
        var request: Request
        var cachedTokens: Int
        /// Prompt tokens whose KV exists (cached or computed).
        var prefilled: Int
        var generated = 0
        var outputBlocks: Int

        var prefillDone: Bool { prefilled >= request.inputTokens }
    }

    public let profile: EngineProfile
    public private(set) var now: Double = 0
    private var waiting: [Request] = []
    private var waitingHead = 0
    private var running: [Sequence] = []
    private var cache: KVBlockCache
    /// The duration of the latest iteration, seconds.
    public private(set) var lastIterationSeconds: Double = 0
    /// Prompt tokens admitted, and how many of them came from the cache (vLLM's prefix-cache
    /// queries and hits).
    public private(set) var promptTokensTotal = 0
    public private(set) var cachedTokensTotal = 0

    public init(profile: EngineProfile) {
        self.profile = profile
        cache = KVBlockCache(capacity: profile.kvCapacityBlocks)
    }

    // MARK: Load, as engines report it

    public var runningRequests: Int { running.count }
    public var waitingRequests: Int { waiting.count - waitingHead }
    /// Blocks held by running requests (their prompt and output). Cached blocks of finished
    /// requests are free to evict and do not count, as engines report it: vLLM's
    /// `kv_cache_usage_perc` is 1 − free/total with evictable cached blocks in the free queue
    /// (`vllm/v1/core/block_pool.py`), SGLang's token usage leaves out evictable tokens.
    public var kvBlocksUsed: Int { cache.used - cache.cachedBlocks }
    public var kvBlocksTotal: Int { cache.capacity }
    public var cachedBlocks: Int { cache.cachedBlocks }
    public var queuedPrefillTokens: Int {
        running.reduce(0) { $0 + max(0, $1.request.inputTokens - $1.prefilled) }
            + waiting[waitingHead...].reduce(0) { $0 + $1.inputTokens }
    }
    public var isIdle: Bool { running.isEmpty && waitingRequests == 0 }
    /// When the next iteration can start: now, or the next arrival when idle.
    public var nextStart: Double? {
        if !running.isEmpty { return now }
        guard waitingHead < waiting.count else { return nil }
        return max(now, waiting[waitingHead].arrival)
    }

    /// Record KV-cache events for ``takeKVEvents()`` (off by default: nothing drains them).
    public var recordsKVEvents: Bool {
        get { cache.recordsEvents }
        set { cache.recordsEvents = newValue }
    }

    /// Blocks stored and evicted since the last call, in order.
    public mutating func takeKVEvents() -> [KVEvent] { cache.takeEvents() }

    /// Every block the engine's KV cache stores now, and the version of that set.
    public var storedBlocks: (version: Int64, blocks: [UInt64]) { (cache.version, cache.storedBlocks) }

    /// How many leading prompt blocks this engine would find cached now.
    public func cachedPrefix(_ blocks: [UInt64]) -> Int { cache.prefixLength(blocks) }

    // MARK: Driving

    /// Queues a request (FCFS). Its arrival must not be earlier than the last one queued.
    public mutating func submit(_ request: Request) {
        waiting.append(request)
    }

    /// Runs one iteration if there is work; returns what happened, with virtual times.
    public mutating func step() -> [Event] {
        guard let start = nextStart else { return [] }
        now = start
        var events: [Event] = []
        var budget = profile.maxBatchedTokens
        var decodeContexts: [Int] = []
        var decoding: [Int] = []
        for (index, sequence) in running.enumerated() where sequence.prefillDone && budget > 0 {
            decodeContexts.append(sequence.request.inputTokens + sequence.generated)
            decoding.append(index)
            budget -= 1
        }
        var chunks: [(q: Int, p: Int)] = []
        var chunked: [(index: Int, q: Int)] = []
        for (index, sequence) in running.enumerated() where !sequence.prefillDone && budget > 0 {
            let q = min(sequence.request.inputTokens - sequence.prefilled, budget)
            chunks.append((q, sequence.prefilled))
            chunked.append((index, q))
            budget -= q
        }
        // Admit arrived requests while there is room in the batch, the sequence slots and the cache.
        while budget > 0, running.count < profile.maxSequences, waitingHead < waiting.count, waiting[waitingHead].arrival <= now {
            let request = waiting[waitingHead]
            let outputBlocks = (request.outputTokens + profile.blockSize - 1) / profile.blockSize
            if request.blocks.count + outputBlocks > cache.capacity {
                events.append(.rejected(id: request.id, reason: "needs \(request.blocks.count + outputBlocks) KV blocks, the engine has \(cache.capacity)"))
                waitingHead += 1
                continue
            }
            let matched = cache.prefixLength(request.blocks)
            guard cache.reserve(request.blocks, extra: outputBlocks) else { break }
            waitingHead += 1
            // At least the last prompt token is computed, as engines do, to produce logits.
            let cached = request.transferredPrompt
                ? max(0, request.inputTokens - 1) : min(matched * profile.blockSize, max(0, request.inputTokens - 1))
            running.append(Sequence(request: request, cachedTokens: cached, prefilled: cached, outputBlocks: outputBlocks))
            promptTokensTotal += request.inputTokens
            cachedTokensTotal += cached
            let q = min(request.inputTokens - cached, budget)
            chunks.append((q, cached))
            chunked.append((running.count - 1, q))
            budget -= q
        }
        if waitingHead > 1_024 && waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
        guard !chunks.isEmpty || !decoding.isEmpty else { return events }
        lastIterationSeconds = profile.iterationSeconds(chunks: chunks, decodeContexts: decodeContexts)
        now += lastIterationSeconds
        var finished: [Int] = []
        for (index, q) in chunked {
            running[index].prefilled += q
            if running[index].prefillDone {
                running[index].generated = 1
                events.append(.firstToken(id: running[index].request.id, time: now, cachedTokens: running[index].cachedTokens))
                if running[index].request.outputTokens <= 1 { finished.append(index) }
            }
        }
        for index in decoding {
            running[index].generated += 1
            events.append(.token(id: running[index].request.id, time: now))
            if running[index].generated >= running[index].request.outputTokens { finished.append(index) }
        }
        for index in finished.sorted(by: >) {
            let sequence = running.remove(at: index)
            cache.release(sequence.request.blocks, extra: sequence.outputBlocks)
            events.append(.finished(id: sequence.request.id, time: now))
        }
        return events
    }

    /// Runs until idle (or `until`), collecting every event.
    public mutating func run(until limit: Double = .infinity) -> [Event] {
        var events: [Event] = []
        while let start = nextStart, start <= limit {
            let batch = step()
            if batch.isEmpty && nextStart == start { break }
            events += batch
        }
        return events
    }
}
