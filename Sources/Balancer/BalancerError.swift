/// Why the balancer refused a request or a change. Each error names its cause: the model, the
/// role, or the field of the request or configuration that is wrong.
public struct BalancerError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        case unknownModel = "unknown_model"
        case noWorkerForRole = "no_worker_for_role"
        case allUnhealthy = "all_workers_unhealthy"
        case allDraining = "all_workers_draining"
        case allOverCapacity = "all_workers_over_capacity"
        case noResourceFit = "no_worker_fits_tier"
        case invalidRequest = "invalid_request"
        case invalidConfig = "invalid_config"
        case unknownWorker = "unknown_worker"
        case unknownReservation = "unknown_reservation"
    }

    public let code: Code
    public let message: String
    /// The request or configuration field at fault, when one is.
    public let field: String?
    /// The role that could not be served, for the no-worker codes.
    public let role: WorkerRole?

    init(_ code: Code, _ message: String, field: String? = nil, role: WorkerRole? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.role = role
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public static func unknownModel(_ model: String) -> Self {
        Self(.unknownModel, "no worker is registered for model '\(model)'", field: "model")
    }

    public static func noWorker(_ role: WorkerRole, model: String, detail: String) -> Self {
        Self(.noWorkerForRole, "no \(role) worker for model '\(model)': \(detail)", role: role)
    }

    public static func allUnhealthy(_ role: WorkerRole, model: String, count: Int) -> Self {
        Self(.allUnhealthy, "all \(count) \(role) workers of model '\(model)' are unhealthy or tripped", role: role)
    }

    public static func allDraining(_ role: WorkerRole, model: String, count: Int) -> Self {
        Self(.allDraining, "all \(count) \(role) workers of model '\(model)' are draining", role: role)
    }

    public static func allOverCapacity(_ role: WorkerRole, model: String, count: Int) -> Self {
        Self(.allOverCapacity, "all \(count) \(role) workers of model '\(model)' are at capacity", role: role)
    }

    public static func noResourceFit(_ role: WorkerRole, model: String, tier: String) -> Self {
        Self(.noResourceFit, "no \(role) worker of model '\(model)' has the free resources of tier '\(tier)'", role: role)
    }

    public static func invalidRequest(field: String, _ message: String) -> Self {
        Self(.invalidRequest, "\(field): \(message)", field: field)
    }

    public static func invalidConfig(field: String, _ message: String) -> Self {
        Self(.invalidConfig, "\(field): \(message)", field: field)
    }

    public static func unknownWorker(_ id: String) -> Self {
        Self(.unknownWorker, "no worker with id '\(id)'", field: "worker_id")
    }

    public static func unknownReservation(_ token: UInt64) -> Self {
        Self(.unknownReservation, "no reservation with token \(token) (released or expired)", field: "release_token")
    }
}
