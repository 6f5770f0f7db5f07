import Balancer
import Testing

/// A worker of model "m" with the given role and load, healthy and in group "g".
func makeWorker(
    _ id: String, role: WorkerRole = .pdfusion, model: String = "m", group: String = "g",
    running: Int = 0, waiting: Int = 0, queuedPrefill: Int = 0, kvUsed: Int = 0, kvTotal: Int = 1000,
    maxRequests: Int = 0, health: HealthVerdict = .healthy, draining: Bool = false,
    resources: WorkerResources = WorkerResources(), location: GeoLocation? = nil
) -> Worker {
    Worker(
        id: id, model: model, role: role, address: "127.0.0.1:\(9000 + abs(id.hashValue % 1000))", group: group,
        capacity: WorkerCapacity(kvBlocks: kvTotal, blockSize: 16, maxBatch: 64, maxRequests: maxRequests),
        resources: resources, location: location, draining: draining, health: health,
        load: EngineLoad(
            runningRequests: running, waitingRequests: waiting, queuedPrefillTokens: queuedPrefill,
            kvBlocksUsed: kvUsed, kvBlocksTotal: kvTotal, reportedAt: 0
        )
    )
}

/// A state holding `workers` (registered with their health, drain flag and load) and `commands`.
func makeState(_ workers: [Worker], commands: [BalancerCommand] = [], at time: Milliseconds = 1) -> BalancerState {
    var state = BalancerState()
    for worker in workers {
        state.apply(CommandEnvelope(issuedAt: time, command: .registerWorker(worker)))
        state.apply(CommandEnvelope(issuedAt: time, command: .batch([
            .setHealth(id: worker.id, verdict: worker.health),
            .setDraining(id: worker.id, draining: worker.draining),
            .reportLoads([worker.id: worker.load]),
        ])))
    }
    for command in commands { state.apply(CommandEnvelope(issuedAt: time, command: command)) }
    return state
}

/// Sets one strategy for every role of model "m".
func policy(_ strategy: StrategyKind, fallback: StrategyKind = .leastLoad) -> BalancerCommand {
    let strategies = Dictionary(uniqueKeysWithValues: WorkerRole.allCases.map { ($0, strategy) })
    return .setPolicy(model: "m", policy: ModelPolicy(strategies: strategies, stickyFallback: fallback))
}

func makeRequest(
    _ id: String = "r", blocks: [BlockHash] = [], session: String? = nil, roles: [WorkerRole] = [],
    promptTokens: Int = 0, tier: String? = nil, location: GeoLocation? = nil
) -> RoutingRequest {
    RoutingRequest(
        model: "m", requestID: id, sessionKey: session, prompt: blocks.isEmpty ? .none : .blocks(blocks),
        promptTokens: promptTokens, tokensPerBlock: 16, expectedOutputTokens: 64, roles: roles, tier: tier,
        location: location
    )
}

/// Routes and returns the worker of the first target.
func pick(_ router: inout Router, _ request: RoutingRequest, _ state: BalancerState, now: Milliseconds = 10) throws -> String {
    try router.route(request, state: state, now: now).targets[0].workerID
}

/// Applies the router's pending side effects to `state`, as the log would.
func flush(_ router: inout Router, into state: inout BalancerState, at time: Milliseconds = 10) {
    guard let (generation, command) = router.takePendingCommand() else { return }
    state.apply(CommandEnvelope(issuedAt: time, command: command))
    router.commandApplied(generation: generation)
}

func expectError(_ code: BalancerError.Code, field: String? = nil, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected \(code), got success")
    } catch let error as BalancerError {
        #expect(error.code == code, "\(error)")
        if let field { #expect(error.field == field, "\(error)") }
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

/// Chained blocks: a shared prefix of `shared` blocks named by `prefix`, then `unique` blocks.
func blocks(prefix: UInt64, shared: Int, unique: UInt64, count: Int) -> [BlockHash] {
    var ids: [UInt64] = (0..<UInt64(shared)).map { prefix &* 1_000 &+ $0 }
    ids += (0..<UInt64(count - shared)).map { 1_000_000 &+ unique &* 1_000 &+ $0 }
    return BlockHasher().chain(blockIDs: ids, model: "m")
}
