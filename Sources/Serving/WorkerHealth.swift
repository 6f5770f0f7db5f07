public import Balancer

/// The health checker's view of one worker: consecutive probe results with thresholds, and an
/// exponentially weighted moving average of probe latency. Only verdict changes leave it.
public struct HealthTracker: Sendable {
    public private(set) var verdict: HealthVerdict
    public private(set) var consecutiveSuccesses = 0
    public private(set) var consecutiveFailures = 0
    /// Probe latency EWMA in milliseconds (nil before the first success).
    public private(set) var latencyMilliseconds: Double?

    static let smoothing = 0.2

    public init(verdict: HealthVerdict) { self.verdict = verdict }

    /// Records a probe; returns the new verdict when it changed.
    public mutating func record(success: Bool, latencyMilliseconds latency: Double?, healthyAfter: Int, unhealthyAfter: Int) -> HealthVerdict? {
        if success {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
            if let latency {
                latencyMilliseconds = latencyMilliseconds.map { $0 + Self.smoothing * (latency - $0) } ?? latency
            }
            if verdict != .healthy && consecutiveSuccesses >= healthyAfter {
                verdict = .healthy
                return .healthy
            }
        } else {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
            if verdict != .unhealthy && consecutiveFailures >= unhealthyAfter {
                verdict = .unhealthy
                return .unhealthy
            }
        }
        return nil
    }
}

/// One worker's circuit breaker. Counts consecutive failures (5xx, connect errors, timeouts;
/// never 4xx); opens after `failureThreshold`; after `openMilliseconds` lets trial traffic
/// through (half-open); the first trial's outcome closes or re-opens it.
public struct CircuitBreaker: Sendable {
    public private(set) var state: CircuitState
    public private(set) var consecutiveFailures = 0
    private(set) var openedAt: Milliseconds = 0

    public init(state: CircuitState, now: Milliseconds) {
        self.state = state
        if state == .open { openedAt = now }
    }

    /// Records a request's outcome; returns the new state when it changed.
    public mutating func record(_ outcome: UpstreamOutcome, now: Milliseconds, failureThreshold: Int) -> CircuitState? {
        guard outcome != .clientError else { return nil }
        if outcome.isFailure {
            consecutiveFailures += 1
            switch state {
            case .halfOpen:
                return open(now)
            case .closed where consecutiveFailures >= failureThreshold:
                return open(now)
            case .closed, .open:
                return nil
            }
        }
        consecutiveFailures = 0
        if state == .halfOpen || state == .open {
            state = .closed
            return .closed
        }
        return nil
    }

    /// Moves an open circuit to half-open once its time is up.
    public mutating func tick(now: Milliseconds, openMilliseconds: Int) -> CircuitState? {
        guard state == .open, now >= openedAt + Milliseconds(openMilliseconds) else { return nil }
        state = .halfOpen
        return .halfOpen
    }

    private mutating func open(_ now: Milliseconds) -> CircuitState {
        state = .open
        openedAt = now
        return .open
    }
}

/// How a request to a worker ended, as the circuit breaker counts it: 4xx never trips it.
public enum UpstreamOutcome: String, Sendable, Hashable, CaseIterable {
    case ok
    case clientError = "client_error"
    case serverError = "server_error"
    case connectError = "connect_error"
    case timeout

    public var isFailure: Bool { self == .serverError || self == .connectError || self == .timeout }

    public init(status: Int) {
        self = switch status {
        case 500...: .serverError
        case 400..<500: .clientError
        default: .ok
        }
    }
}
