/// How a node serves clients and watches workers. Every field has a key in the node's
/// configuration (see `Docs/configuration.md`); the defaults suit one host.
public struct ServingSettings: Sendable, Equatable {
    /// Base URL other nodes and clients use to reach this node's HTTP API
    /// (`http://host:port`); derived from `http_listen` when not set.
    public var advertisedURL: String = "http://127.0.0.1:8100"
    /// With no reachable leader, a follower routes on its replicated state (marked degraded)
    /// instead of answering 503.
    public var failOpen = false
    /// How often the leader polls each worker's status, and how long one poll may take.
    public var statusIntervalMilliseconds = 50
    public var statusTimeoutMilliseconds = 250
    /// Status changes, prefixes and bindings are proposed to the log at most this often.
    public var flushIntervalMilliseconds = 100
    /// Consecutive successful probes before a worker is healthy, failed ones before unhealthy.
    public var healthySuccesses = 2
    public var unhealthyFailures = 3
    /// Consecutive failures (5xx, connect errors, timeouts) that open a worker's circuit, and
    /// how long it stays open before a trial request is let through.
    public var circuitFailures = 5
    public var circuitOpenMilliseconds = 5_000
    /// How long a follower waits for a reachable leader before failing open or answering 503.
    public var leaderWaitMilliseconds = 1_000
    /// Deadline of a request forwarded to the leader.
    public var forwardTimeoutMilliseconds = 2_000
    /// Connecting to a worker; a request whose connection fails is retried on another worker
    /// this many times (never after the first response byte).
    public var upstreamConnectTimeoutMilliseconds = 1_000
    public var upstreamRetries = 2
    /// Deadline of a whole proxied completion, streaming included.
    public var upstreamTimeoutMilliseconds = 600_000
    /// The model `/rtp_llm/schedule` routes when the request names none and several are served.
    public var defaultModel: String?
    /// How long a FlexLB schedule's reservation holds: rtp-llm frontends never release, so its
    /// load would otherwise count for `reservation_ttl_ms` (10 minutes).
    public var flexLBScheduleHoldMilliseconds = 30_000
    /// How often the leader reads the cached block keys of engines that report them (rtp-llm's
    /// `GetCacheStatus`, PREFILL and PDFUSION workers); FlexLB adapts between 50 and 3,000 ms.
    public var engineCacheIntervalMilliseconds = 500
    /// Each model's tokenizer endpoint (vLLM's `/tokenize` or SGLang's `/v1/tokenize`): text
    /// prompts are routed on token ids, the keys engines' KV events are translated to.
    public var tokenizerURLs: [String: String] = [:]
    /// How long routing waits for a tokenizer before using the history index.
    public var tokenizerTimeoutMilliseconds = 200
    /// Serves `/admin/fault` (storage faults, clock jumps, power loss) for fault-injection
    /// runs; the node must also have installed the fault VFS before opening its log.
    public var faultInjection = false

    public init() {}
}
