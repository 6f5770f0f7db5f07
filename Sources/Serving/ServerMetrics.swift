public import Cluster
import Foundation
public import Prometheus
import Synchronization

/// The node's Prometheus metrics, in base units (`_seconds`, `_total`). One registry per node,
/// so several nodes can share a process (tests) without sharing series.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    public static let latencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    ]

    /// vLLM's TTFT buckets (1 ms … 2,560 s): a queue that grows for minutes still lands in a
    /// bucket.
    public static let ttftBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(20), .milliseconds(40), .milliseconds(60),
        .milliseconds(80), .milliseconds(100), .milliseconds(250), .milliseconds(500), .milliseconds(750), .seconds(1),
        .seconds(2.5), .seconds(5), .seconds(7.5), .seconds(10), .seconds(20), .seconds(40), .seconds(80), .seconds(160),
        .seconds(640), .seconds(2_560),
    ]

    /// etcd's disk buckets (1 ms doubling to 8.192 s), for fsyncs and snapshots.
    public static let diskBuckets: [Duration] = (0..<14).map { .microseconds(1_000 << $0) }

    /// etcd's peer round-trip buckets (0.1 ms doubling to 0.8192 s).
    public static let peerRoundTripBuckets: [Duration] = (0..<14).map { .microseconds(100 << $0) }

    /// An apply slower than this is counted as slow (etcd's warning threshold).
    public static let slowApply = Duration.milliseconds(100)

    static let pdHelp = "Prefill to decode hand-offs, by protocol and outcome."
    static let prefixHelp = "Prompt blocks of proxied requests, by whether the worker was expected to hold them."
    static let leaderHelp = "1 for the leader this node knows, by id."
    static let kvEventsHelp = "Engine KV-cache events applied to the index, unmapped blocks and resets."
    static let tokenizerHelp = "Prompts tokenised for routing, by outcome."

    /// The version `fulcrum_build_info` reports.
    public static let version = "0.1.0"

    public let proposals: Counter
    public let proposalsFailed: Counter
    public let proposalsPending: Gauge
    public let elections: Counter
    public let leaderChanges: Counter
    public let hasLeader: Gauge
    public let isLearner: Gauge
    public let slowApplies: Counter
    public let snapshots: Counter
    public let snapshotBytes: Gauge
    public let upstreamRetries: Counter
    let fsyncDuration: DurationHistogram
    let applyDuration: DurationHistogram
    let snapshotDuration: DurationHistogram
    public let forwarded: Counter
    public let forwardFailures: Counter
    public let degradedRoutes: Counter
    public let rateLimited: Counter
    public let authFailures: Counter
    public let connectionsRefused: Counter
    public let term: Gauge
    public let isLeader: Gauge
    private let leaderSeries = Mutex<UInt64?>(nil)
    /// One round-trip histogram per peer, made on its first sample (peers are members: bounded).
    private let peerRoundTrips = Mutex<[UInt64: DurationHistogram]>([:])
    public let commitIndex: Gauge
    public let appliedIndex: Gauge
    private let workerSeries = Mutex<Set<[String]>>([])
    /// The last counts seen of counters kept elsewhere (by name, then reason).
    private let externalSeen = Mutex<[String: [String: Int]]>([:])

    public init() {
        proposals = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_proposals_total", help: "Entries this node proposed to the log."))
        proposalsFailed = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_proposals_failed_total", help: "Proposals that failed (not the leader, a timeout, a dropped entry, a stopped node)."))
        proposalsPending = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_proposals_pending", help: "Proposals waiting to be committed and applied."))
        elections = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_elections_total", help: "Elections this node started (it became a candidate)."))
        leaderChanges = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_leader_changes_seen_total", help: "Times this node saw a new leader."))
        hasLeader = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_has_leader", help: "1 when this node knows a leader."))
        isLearner = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_is_learner", help: "1 when this node is a learner (not a voter)."))
        slowApplies = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_slow_applies_total", help: "Applies of committed entries that took over 100 ms."))
        snapshots = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_snapshots_total", help: "Snapshots this node took (the log compacted)."))
        snapshotBytes = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_snapshot_size_bytes", help: "Size of the last snapshot this node took."))
        upstreamRetries = registry.makeCounter(descriptor: .fulcrum("fulcrum_upstream_retries_total", help: "Proxied requests sent to another worker after a connection failure."))
        registry.makeGauge(
            descriptor: .fulcrum("fulcrum_build_info", help: "Always 1; the labels say which Fulcrum this is."),
            labels: [("version", Self.version), ("swift_version", Self.swiftVersion)]
        ).set(to: 1)
        // Series with known labels exist from the start (a rate over a missing series is nothing).
        for outcome in ["applied", "unmapped_blocks", "reset"] {
            _ = registry.makeCounter(descriptor: .fulcrum("fulcrum_kv_events_total", help: Self.kvEventsHelp), labels: [("outcome", outcome)])
        }
        for outcome in ["ok", "cached", "prefix", "error"] {
            _ = registry.makeCounter(descriptor: .fulcrum("fulcrum_tokenizer_requests_total", help: Self.tokenizerHelp), labels: [("outcome", outcome)])
        }
        for outcome in ["ok", "error"] {
            _ = registry.makeCounter(descriptor: .fulcrum("fulcrum_status_polls_total"), labels: [("outcome", outcome)])
        }
        for outcome in ["ok", "prefill_failed", "decode_failed"] {
            for protocolName in ["fulcrum", "vllm", "sglang"] {
                _ = registry.makeCounter(descriptor: .fulcrum("fulcrum_pd_handoffs_total", help: Self.pdHelp), labels: [("protocol", protocolName), ("outcome", outcome)])
            }
        }
        fsyncDuration = registry.makeDurationHistogram(
            descriptor: .fulcrum("fulcrum_disk_wal_fsync_duration_seconds", help: "One fsynced write of the Raft log (entries, hard state)."), buckets: Self.diskBuckets
        )
        applyDuration = registry.makeDurationHistogram(
            descriptor: .fulcrum("fulcrum_raft_apply_duration_seconds", help: "Applying committed entries to the state machine."), buckets: Self.latencyBuckets
        )
        snapshotDuration = registry.makeDurationHistogram(
            descriptor: .fulcrum("fulcrum_raft_snapshot_duration_seconds", help: "Taking a snapshot and compacting the log."), buckets: Self.diskBuckets
        )
        forwarded = registry.makeCounter(descriptor: .fulcrum("fulcrum_forwarded_requests_total", help: "Requests a follower forwarded to the leader."))
        forwardFailures = registry.makeCounter(descriptor: .fulcrum("fulcrum_forward_failures_total", help: "Forwards that found no reachable leader."))
        degradedRoutes = registry.makeCounter(descriptor: .fulcrum("fulcrum_degraded_routes_total", help: "Requests a follower routed itself, with no leader (fail_open)."))
        rateLimited = registry.makeCounter(descriptor: .fulcrum("fulcrum_rate_limited_total", help: "Requests refused by the rate limit."))
        authFailures = registry.makeCounter(descriptor: .fulcrum("fulcrum_auth_failures_total", help: "Requests refused for a missing or wrong API key, scope or source."))
        connectionsRefused = registry.makeCounter(descriptor: .fulcrum("fulcrum_http_connections_refused_total", help: "HTTP connections closed as they opened because max_connections were open."))
        term = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_term", help: "Current Raft term."))
        isLeader = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_is_leader", help: "1 when this node leads."))
        commitIndex = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_commit_index", help: "Highest log index known committed."))
        appliedIndex = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_applied_index", help: "Highest log index applied here."))
    }

    public static var swiftVersion: String {
        #if swift(>=6.2)
        "6.2"
        #elseif swift(>=6.1)
        "6.1"
        #else
        "6.0"
        #endif
    }

    /// What the node's Ready loop reports (``NodeEvents``).
    public func record(_ event: NodeEvent) {
        switch event {
        case .persisted(let duration):
            fsyncDuration.recordNanoseconds(duration.nanoseconds)
        case .applied(_, let duration):
            applyDuration.recordNanoseconds(duration.nanoseconds)
            if duration > Self.slowApply { slowApplies.increment() }
        case .snapshot(let bytes, let duration):
            snapshotDuration.recordNanoseconds(duration.nanoseconds)
            snapshots.increment()
            snapshotBytes.set(to: Double(bytes))
        case .campaign:
            elections.increment()
        case .peerRoundTrip(let peer, let duration):
            let registry = registry
            let histogram = peerRoundTrips.withLock { histograms in
                if let existing = histograms[peer] { return existing }
                let made = registry.makeDurationHistogram(
                    descriptor: .fulcrum("fulcrum_network_peer_round_trip_time_seconds", help: "A leader's heartbeat to a peer until its answer (etcd's etcd_network_peer_round_trip_time_seconds)."),
                    labels: [("to", String(peer))], buckets: Self.peerRoundTripBuckets
                )
                histograms[peer] = made
                return made
            }
            histogram.recordNanoseconds(duration.nanoseconds)
        }
    }

    /// `fulcrum_raft_leader{leader_id}` = 1 for the known leader (an id is a label, not a
    /// value); no series while there is none.
    public func leader(_ id: UInt64?) {
        hasLeader.set(to: id == nil ? 0 : 1)
        let previous = leaderSeries.withLock { series in
            defer { series = id }
            return series
        }
        guard previous != id else { return }
        if let previous {
            registry.unregisterGauge(registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_leader", help: Self.leaderHelp), labels: [("leader_id", String(previous))]))
        }
        if let id {
            registry.makeGauge(
                descriptor: .fulcrum("fulcrum_raft_leader", help: Self.leaderHelp), labels: [("leader_id", String(id))]
            ).set(to: 1)
        }
    }

    /// Prompt blocks a worker was expected to hold (`hit`) or not (`miss`) when a request was
    /// sent to it.
    public func prefixBlocks(worker: String, matched: Int, total: Int) {
        let matched = max(0, min(matched, total))
        registry.makeCounter(descriptor: .fulcrum("fulcrum_worker_prefix_blocks_total", help: Self.prefixHelp), labels: [("worker", worker), ("result", "hit")])
            .increment(by: Int64(matched))
        registry.makeCounter(descriptor: .fulcrum("fulcrum_worker_prefix_blocks_total", help: Self.prefixHelp), labels: [("worker", worker), ("result", "miss")])
            .increment(by: Int64(total - matched))
    }

    /// One prefill → decode hand-off, by the engines' protocol (`fulcrum`, `vllm`, `sglang`) and
    /// how it ended (`ok`, `prefill_failed`, `decode_failed`).
    public func pdHandoff(protocol protocolName: String, outcome: String) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_pd_handoffs_total", help: Self.pdHelp),
            labels: [("protocol", protocolName), ("outcome", outcome)]).increment()
    }

    public func httpRequest(route: String, method: String, status: Int, duration: Duration) {
        let labels = [("route", route), ("method", method)]
        registry.makeCounter(descriptor: .fulcrum("fulcrum_http_requests_total"), labels: labels + [("status", String(status))]).increment()
        registry.makeDurationHistogram(descriptor: .fulcrum("fulcrum_http_request_duration_seconds"), labels: labels, buckets: Self.latencyBuckets)
            .recordNanoseconds(duration.nanoseconds)
    }

    public func decision(model: String, role: String, strategy: String, reason: String) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_routing_decisions_total"),
            labels: [("model", model), ("role", role), ("strategy", strategy), ("reason", reason)]
        ).increment()
    }

    public func decisionDuration(model: String, _ duration: Duration) {
        registry.makeDurationHistogram(descriptor: .fulcrum("fulcrum_routing_decision_duration_seconds"), labels: [("model", model)], buckets: Self.latencyBuckets
        ).recordNanoseconds(duration.nanoseconds)
    }

    public func routingError(model: String, code: String) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_routing_errors_total"), labels: [("model", model), ("code", code)]).increment()
    }

    public func upstream(model: String, role: String, outcome: String) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_upstream_requests_total"), labels: [("model", model), ("role", role), ("outcome", outcome)]
        ).increment()
    }

    public func upstreamTTFT(model: String, _ duration: Duration) {
        registry.makeDurationHistogram(descriptor: .fulcrum("fulcrum_upstream_ttft_seconds"), labels: [("model", model)], buckets: Self.ttftBuckets
        ).recordNanoseconds(duration.nanoseconds)
    }

    public func statusPoll(outcome: String) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_status_polls_total"), labels: [("outcome", outcome)]).increment()
    }

    /// Brings `fulcrum_raft_messages_dropped_total{reason}` up to the node's counts.
    public func raftMessagesDropped(_ counts: [String: Int]) {
        catchUp("fulcrum_raft_messages_dropped_total", help: "Peer messages dropped before the Raft core, by reason.", to: counts)
    }

    /// Brings `fulcrum_peer_connections_refused_total{reason}` up to the transport's counts.
    public func peerConnectionsRefused(_ counts: [String: Int]) {
        catchUp("fulcrum_peer_connections_refused_total", help: "Peer connections refused or closed for cause, by reason.", to: counts)
    }

    /// `fulcrum_kv_events_total{outcome}`: engine KV events applied, blocks whose chain was
    /// unknown, resets.
    public func kvEvents(outcome: String, count: Int) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_kv_events_total", help: Self.kvEventsHelp),
            labels: [("outcome", outcome)]).increment(by: Int64(count))
    }

    /// `fulcrum_tokenizer_requests_total{outcome}`: ok, cached, prefix (a follow-up turn routed
    /// on its cached earlier messages), error (routed on the history index).
    public func tokenizer(outcome: String) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_tokenizer_requests_total", help: Self.tokenizerHelp),
            labels: [("outcome", outcome)]).increment()
    }

    /// Brings `fulcrum_kv_event_frames_total{reason}` up to the subscriber's counts.
    public func kvEventFrames(_ counts: [String: Int]) {
        catchUp("fulcrum_kv_event_frames_total", help: "KV-event batches received (batches), dropped as malformed, replayed, and gaps and resets seen.", to: counts)
    }

    /// Brings a counter whose counts are kept elsewhere (by reason) up to them.
    private func catchUp(_ name: String, help: String, to counts: [String: Int]) {
        let deltas = externalSeen.withLock { all in
            counts.map { reason, count -> (String, Int) in
                let delta = count - all[name, default: [:]][reason, default: 0]
                all[name, default: [:]][reason] = count
                return (reason, max(0, delta))
            }
        }
        // Every reason's series exists, at 0 until it happens.
        for (reason, delta) in deltas {
            registry.makeCounter(descriptor: .fulcrum(name, help: help), labels: [("reason", reason)]).increment(by: Int64(delta))
        }
    }

    /// One worker's row of the per-worker gauges.
    public struct WorkerRow: Sendable {
        public var id: String
        public var model: String
        public var role: String
        public var healthy: Bool
        public var circuitOpen: Bool
        public var running: Int
        public var waiting: Int
        /// KV blocks used over the total, 0 when the engine reports no total.
        public var kvUsage: Double

        public init(id: String, model: String, role: String, healthy: Bool, circuitOpen: Bool, running: Int, waiting: Int = 0, kvUsage: Double = 0) {
            self.id = id
            self.model = model
            self.role = role
            self.healthy = healthy
            self.circuitOpen = circuitOpen
            self.running = running
            self.waiting = waiting
            self.kvUsage = kvUsage
        }
    }

    static let workerGauges = [
        "fulcrum_worker_healthy", "fulcrum_worker_circuit_open", "fulcrum_worker_running_requests", "fulcrum_worker_waiting_requests",
        "fulcrum_worker_kv_cache_usage_ratio",
    ]

    /// Sets the per-worker gauges to the registry's current workers, dropping series of workers
    /// that are gone.
    public func workers(_ rows: [WorkerRow]) {
        var current = Set<[String]>()
        for row in rows {
            let labels = [("worker", row.id), ("model", row.model), ("role", row.role)]
            current.insert([row.id, row.model, row.role])
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_healthy"), labels: labels).set(to: row.healthy ? 1 : 0)
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_circuit_open"), labels: labels).set(to: row.circuitOpen ? 1 : 0)
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_running_requests"), labels: labels).set(to: Double(row.running))
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_waiting_requests"), labels: labels).set(to: Double(row.waiting))
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_kv_cache_usage_ratio"), labels: labels).set(to: row.kvUsage)
        }
        let gone = workerSeries.withLock { series in
            let gone = series.subtracting(current)
            series = current
            return gone
        }
        for key in gone {
            let labels = [("worker", key[0]), ("model", key[1]), ("role", key[2])]
            for name in Self.workerGauges {
                registry.unregisterGauge(registry.makeGauge(descriptor: .fulcrum(name), labels: labels))
            }
        }
    }
}

extension Duration {
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    public var seconds: Double { Double(nanoseconds) / 1e9 }
}

extension MetricNameDescriptor {
    /// A `fulcrum_…` metric from its full name; the unit is the name's last part when it is one
    /// of Prometheus' conventional suffixes.
    public static func fulcrum(_ fullName: String, help: String = "") -> MetricNameDescriptor {
        precondition(fullName.hasPrefix("fulcrum_"))
        var base = String(fullName.dropFirst("fulcrum_".count))
        var unit = ""
        for suffix in ["total", "seconds", "bytes"] where base.hasSuffix("_" + suffix) {
            unit = suffix
            base = String(base.dropLast(suffix.count + 1))
        }
        return MetricNameDescriptor(namespace: "fulcrum", metricName: base, unitName: unit, helpText: help)
    }
}
