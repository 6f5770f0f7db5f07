/// `POST /v1/workers` and `POST /admin/workers`: register a worker, or update it.
public struct WorkerRegistration: Codable, Sendable, Hashable {
    public struct Capacity: Codable, Sendable, Hashable {
        public var kvBlocks: Int?
        public var blockSize: Int?
        public var maxBatch: Int?
        public var maxRequests: Int?
        public var prefillTokensPerSecond: Double?

        public init(kvBlocks: Int? = nil, blockSize: Int? = nil, maxBatch: Int? = nil, maxRequests: Int? = nil, prefillTokensPerSecond: Double? = nil) {
            self.kvBlocks = kvBlocks
            self.blockSize = blockSize
            self.maxBatch = maxBatch
            self.maxRequests = maxRequests
            self.prefillTokensPerSecond = prefillTokensPerSecond
        }
    }

    public var id: String
    public var model: String
    public var role: String
    public var address: String
    public var group: String?
    public var labels: [String: String]?
    public var capacity: Capacity?
    public var location: RouteRequest.Location?
    /// The engine behind the worker: `fulcrum` (the simulator's dialect, the default), `vllm`,
    /// `sglang` or `rtp-llm`; it chooses how its status is read (a `status` label overrides).
    public var engine: String?
    /// Read only to refuse it: an engine's key is named (`labels.api_key_ref`), never sent.
    public var apiKey: String?
    /// Where the engine publishes its KV-cache events (vLLM's and SGLang's
    /// `--kv-events-config`): a ZeroMQ PUB `endpoint` and, optionally, its ROUTER
    /// `replay_endpoint`, both `tcp://HOST:PORT`.
    public var kvEvents: KVEventsEndpoints?

    public struct KVEventsEndpoints: Codable, Sendable, Hashable {
        public var endpoint: String
        public var replayEndpoint: String?

        public init(endpoint: String, replayEndpoint: String? = nil) {
            self.endpoint = endpoint
            self.replayEndpoint = replayEndpoint
        }
    }

    public init(
        id: String, model: String, role: String, address: String, group: String? = nil, labels: [String: String]? = nil,
        capacity: Capacity? = nil, location: RouteRequest.Location? = nil, engine: String? = nil
    ) {
        self.engine = engine
        self.id = id
        self.model = model
        self.role = role
        self.address = address
        self.group = group
        self.labels = labels
        self.capacity = capacity
        self.location = location
    }
}

/// An engine's load in Fulcrum's native status format (`GET /status` on a simulated engine,
/// or the `load` of a heartbeat). Every field is optional; unknown fields are ignored.
public struct EngineStatus: Codable, Sendable, Hashable {
    public var runningRequests: Int?
    public var waitingRequests: Int?
    public var queuedPrefillTokens: Int?
    public var kvBlocksUsed: Int?
    public var kvBlocksTotal: Int?
    public var stepLatencyMs: Double?

    public init(
        runningRequests: Int? = nil, waitingRequests: Int? = nil, queuedPrefillTokens: Int? = nil, kvBlocksUsed: Int? = nil,
        kvBlocksTotal: Int? = nil, stepLatencyMs: Double? = nil
    ) {
        self.runningRequests = runningRequests
        self.waitingRequests = waitingRequests
        self.queuedPrefillTokens = queuedPrefillTokens
        self.kvBlocksUsed = kvBlocksUsed
        self.kvBlocksTotal = kvBlocksTotal
        self.stepLatencyMs = stepLatencyMs
    }
}

/// `POST /v1/workers/{id}/heartbeat`: host resources pushed by `fulcrum agent`, optionally a load.
public struct Heartbeat: Codable, Sendable, Hashable {
    public struct Resources: Codable, Sendable, Hashable {
        public struct GPU: Codable, Sendable, Hashable {
            public var utilization: Double
            public var memoryTotalBytes: Int64
            public var memoryUsedBytes: Int64

            public init(utilization: Double, memoryTotalBytes: Int64, memoryUsedBytes: Int64) {
                self.utilization = utilization
                self.memoryTotalBytes = memoryTotalBytes
                self.memoryUsedBytes = memoryUsedBytes
            }
        }

        public var coreLoads: [Double]?
        public var memoryTotalBytes: Int64?
        public var memoryUsedBytes: Int64?
        public var diskTotalBytes: Int64?
        public var diskUsedBytes: Int64?
        public var gpus: [GPU]?

        public init(
            coreLoads: [Double]? = nil, memoryTotalBytes: Int64? = nil, memoryUsedBytes: Int64? = nil, diskTotalBytes: Int64? = nil,
            diskUsedBytes: Int64? = nil, gpus: [GPU]? = nil
        ) {
            self.coreLoads = coreLoads
            self.memoryTotalBytes = memoryTotalBytes
            self.memoryUsedBytes = memoryUsedBytes
            self.diskTotalBytes = diskTotalBytes
            self.diskUsedBytes = diskUsedBytes
            self.gpus = gpus
        }
    }

    public var resources: Resources?
    public var load: EngineStatus?
    public var location: RouteRequest.Location?

    public init(resources: Resources? = nil, load: EngineStatus? = nil, location: RouteRequest.Location? = nil) {
        self.resources = resources
        self.load = load
        self.location = location
    }
}

public struct Accepted: Codable, Sendable, Hashable {
    public var accepted: Bool

    public init(accepted: Bool = true) { self.accepted = accepted }
}

/// One worker in `GET /admin/workers`.
public struct WorkerView: Codable, Sendable, Hashable {
    public var id: String
    public var model: String
    public var role: String
    public var address: String
    public var group: String
    public var health: String
    public var draining: Bool
    public var circuit: String
    public var labels: [String: String]
    public var runningRequests: Int
    public var waitingRequests: Int
    public var kvUsage: Double
    public var cores: Int
    public var memoryFreeBytes: UInt64
    public var gpus: Int
    /// Blocks the replicated prefix index holds for the worker.
    public var cachedBlocks: Int?
    /// Requests this node's router holds reserved on the worker (the leader's are the ones that
    /// count; a follower's router holds none).
    public var reservedRequests: Int?

    public init(
        id: String, model: String, role: String, address: String, group: String, health: String, draining: Bool, circuit: String,
        labels: [String: String], runningRequests: Int, waitingRequests: Int, kvUsage: Double, cores: Int, memoryFreeBytes: UInt64, gpus: Int
    ) {
        self.id = id
        self.model = model
        self.role = role
        self.address = address
        self.group = group
        self.health = health
        self.draining = draining
        self.circuit = circuit
        self.labels = labels
        self.runningRequests = runningRequests
        self.waitingRequests = waitingRequests
        self.kvUsage = kvUsage
        self.cores = cores
        self.memoryFreeBytes = memoryFreeBytes
        self.gpus = gpus
    }
}

public struct WorkerList: Codable, Sendable, Hashable {
    public var workers: [WorkerView]

    public init(workers: [WorkerView]) { self.workers = workers }
}
