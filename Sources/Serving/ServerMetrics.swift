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

    public let proposals: Counter
    public let elections: Counter
    public let forwarded: Counter
    public let forwardFailures: Counter
    public let degradedRoutes: Counter
    public let rateLimited: Counter
    public let authFailures: Counter
    public let connectionsRefused: Counter
    public let term: Gauge
    public let isLeader: Gauge
    public let leaderID: Gauge
    public let commitIndex: Gauge
    public let appliedIndex: Gauge
    private let workerSeries = Mutex<Set<[String]>>([])
    /// The last counts seen of counters kept elsewhere (by name, then reason).
    private let externalSeen = Mutex<[String: [String: Int]]>([:])

    public init() {
        proposals = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_proposals_total", help: "Entries this node proposed to the log."))
        elections = registry.makeCounter(descriptor: .fulcrum("fulcrum_raft_elections_total", help: "Terms this node has seen begin."))
        forwarded = registry.makeCounter(descriptor: .fulcrum("fulcrum_forwarded_requests_total", help: "Requests a follower forwarded to the leader."))
        forwardFailures = registry.makeCounter(descriptor: .fulcrum("fulcrum_forward_failures_total", help: "Forwards that found no reachable leader."))
        degradedRoutes = registry.makeCounter(descriptor: .fulcrum("fulcrum_degraded_routes_total", help: "Requests a follower routed itself, with no leader (fail_open)."))
        rateLimited = registry.makeCounter(descriptor: .fulcrum("fulcrum_rate_limited_total", help: "Requests refused by the rate limit."))
        authFailures = registry.makeCounter(descriptor: .fulcrum("fulcrum_auth_failures_total", help: "Requests refused for a missing or wrong API key, scope or source."))
        connectionsRefused = registry.makeCounter(descriptor: .fulcrum("fulcrum_http_connections_refused_total", help: "HTTP connections closed as they opened because max_connections were open."))
        term = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_term", help: "Current Raft term."))
        isLeader = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_is_leader", help: "1 when this node leads."))
        leaderID = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_leader_id", help: "Id of the known leader, 0 when none."))
        commitIndex = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_commit_index", help: "Highest log index known committed."))
        appliedIndex = registry.makeGauge(descriptor: .fulcrum("fulcrum_raft_applied_index", help: "Highest log index applied here."))
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
        registry.makeDurationHistogram(descriptor: .fulcrum("fulcrum_upstream_ttft_seconds"), labels: [("model", model)], buckets: Self.latencyBuckets
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
        registry.makeCounter(descriptor: .fulcrum("fulcrum_kv_events_total", help: "Engine KV-cache events applied to the index, unmapped blocks and resets."),
            labels: [("outcome", outcome)]).increment(by: Int64(count))
    }

    /// `fulcrum_tokenizer_requests_total{outcome}`: ok, cached, prefix (a follow-up turn routed
    /// on its cached earlier messages), error (routed on the history index).
    public func tokenizer(outcome: String) {
        registry.makeCounter(descriptor: .fulcrum("fulcrum_tokenizer_requests_total", help: "Prompts tokenised for routing, by outcome."),
            labels: [("outcome", outcome)]).increment()
    }

    /// Brings `fulcrum_kv_event_frames_total{reason}` up to the subscriber's counts.
    public func kvEventFrames(_ counts: [String: Int]) {
        catchUp("fulcrum_kv_event_frames_total", help: "KV-event batches received (batches), dropped as malformed, replayed, and gaps and resets seen.", to: counts)
    }

    /// Brings a counter whose counts are kept elsewhere (by reason) up to them.
    private func catchUp(_ name: String, help: String, to counts: [String: Int]) {
        let deltas = externalSeen.withLock { all in
            counts.compactMap { reason, count -> (String, Int)? in
                let delta = count - all[name, default: [:]][reason, default: 0]
                all[name, default: [:]][reason] = count
                return delta > 0 ? (reason, delta) : nil
            }
        }
        for (reason, delta) in deltas {
            registry.makeCounter(descriptor: .fulcrum(name, help: help), labels: [("reason", reason)]).increment(by: Int64(delta))
        }
    }

    /// Sets the per-worker gauges to the registry's current workers, dropping series of workers
    /// that are gone.
    public func workers(_ rows: [(id: String, model: String, role: String, healthy: Bool, circuitOpen: Bool, running: Int)]) {
        var current = Set<[String]>()
        for row in rows {
            let labels = [("worker", row.id), ("model", row.model), ("role", row.role)]
            current.insert([row.id, row.model, row.role])
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_healthy"), labels: labels).set(to: row.healthy ? 1 : 0)
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_circuit_open"), labels: labels).set(to: row.circuitOpen ? 1 : 0)
            registry.makeGauge(descriptor: .fulcrum("fulcrum_worker_running_requests"), labels: labels).set(to: Double(row.running))
        }
        let gone = workerSeries.withLock { series in
            let gone = series.subtracting(current)
            series = current
            return gone
        }
        for key in gone {
            let labels = [("worker", key[0]), ("model", key[1]), ("role", key[2])]
            for name in ["fulcrum_worker_healthy", "fulcrum_worker_circuit_open", "fulcrum_worker_running_requests"] {
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
