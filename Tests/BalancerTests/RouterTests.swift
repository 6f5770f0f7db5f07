import Balancer
import Testing

@Suite struct MultiRoleTests {
    static let disaggregated: [Worker] = [
        makeWorker("vit-1", role: .vit), makeWorker("p-1", role: .prefill), makeWorker("p-2", role: .prefill),
        makeWorker("d-1", role: .decode), makeWorker("d-2", role: .decode), makeWorker("f-1", role: .pdfusion),
    ]

    @Test func prefillThenDecodeReturnsOneTargetPerRoleInOrder() throws {
        let state = makeState(Self.disaggregated)
        var router = Router()
        let decision = try router.route(makeRequest(roles: [.decode, .prefill]), state: state, now: 10)
        #expect(decision.targets.map(\.role) == [.prefill, .decode])
        #expect(decision.targets[0].workerID.hasPrefix("p-"))
        #expect(decision.targets[1].workerID.hasPrefix("d-"))
        #expect(router.ledger.reservations(token: decision.releaseToken).count == 2)
    }

    @Test func visionRunsBeforeTheLanguageModel() throws {
        let state = makeState(Self.disaggregated)
        var router = Router()
        let decision = try router.route(makeRequest(roles: [.pdfusion, .vit]), state: state, now: 10)
        #expect(decision.targets.map(\.role) == [.vit, .pdfusion])
        let three = try router.route(makeRequest("3", roles: [.decode, .vit, .prefill]), state: state, now: 10)
        #expect(three.targets.map(\.role) == [.vit, .prefill, .decode])
    }

    @Test func aRetryNeverPicksAnExcludedWorker() throws {
        let state = makeState(Self.disaggregated)
        var router = Router()
        for index in 0..<20 {
            var request = makeRequest("r\(index)", roles: [.prefill, .decode])
            request.excludedWorkers = ["p-1", "d-2"]
            let decision = try router.route(request, state: state, now: 10)
            #expect(decision.targets.map(\.workerID) == ["p-2", "d-1"])
        }
        var none = makeRequest("x", roles: [.prefill])
        none.excludedWorkers = ["p-1", "p-2"]
        expectError(.allUnhealthy) { _ = try router.route(none, state: state, now: 10) }
    }

    @Test func withoutRolesThePoolsDecide() throws {
        var router = Router()
        let fused = try router.route(makeRequest(), state: makeState(Self.disaggregated), now: 10)
        #expect(fused.targets.map(\.role) == [.pdfusion])
        let split = try router.route(makeRequest(), state: makeState(Array(Self.disaggregated.prefix(5))), now: 10)
        #expect(split.targets.map(\.role) == [.prefill, .decode])
    }

    @Test func pdfusionCannotBeCombinedWithPrefillOrDecode() {
        var router = Router()
        expectError(.invalidRequest, field: "roles") {
            _ = try router.route(makeRequest(roles: [.prefill, .pdfusion]), state: makeState(Self.disaggregated), now: 10)
        }
        expectError(.invalidRequest, field: "roles") {
            _ = try router.route(makeRequest(roles: [.decode, .decode]), state: makeState(Self.disaggregated), now: 10)
        }
    }

    /// A later role that finds no worker releases every earlier pick, for every role order.
    @Test(arguments: [
        [WorkerRole.prefill, .decode], [.vit, .prefill, .decode], [.vit, .pdfusion], [.vit, .decode],
    ])
    func aFailingLaterRoleRollsBackEarlierPicks(roles: [WorkerRole]) throws {
        let failing = roles.last!
        var workers = Self.disaggregated.filter { $0.role != failing }
        workers.append(makeWorker("sick", role: failing, health: .unhealthy))
        let state = makeState(workers)
        var router = Router()
        // Something already in flight, which must survive the rollback untouched.
        let other = try router.route(makeRequest("other", roles: [roles[0]]), state: state, now: 10)
        let before = router.ledger
        let prompt = blocks(prefix: 1, shared: 4, unique: 1, count: 4)
        expectError(.allUnhealthy) { _ = try router.route(makeRequest("doomed", blocks: prompt, roles: roles), state: state, now: 11) }
        #expect(router.ledger == before)
        #expect(router.takePendingCommand() == nil, "a rolled-back prefill records no cached prefix")
        try router.release(token: other.releaseToken)
        #expect(router.ledger.requestCount == 0)
    }

    @Test func laterPicksStayInTheFirstPicksGroupWhenAsked() throws {
        let workers = [
            makeWorker("p-east", role: .prefill, group: "east"), makeWorker("d-west", role: .decode, group: "west"),
            makeWorker("d-east", role: .decode, group: "east", running: 20),
        ]
        let state = makeState(workers, commands: [.setPolicy(model: "m", policy: ModelPolicy(sameGroup: true))])
        var router = Router()
        let decision = try router.route(makeRequest(roles: [.prefill, .decode]), state: state, now: 10)
        #expect(decision.targets.map(\.workerID) == ["p-east", "d-east"])
        let strict = makeState(Array(workers.prefix(2)), commands: [.setPolicy(model: "m", policy: ModelPolicy(sameGroup: true))])
        var strictRouter = Router()
        expectError(.noWorkerForRole) { _ = try strictRouter.route(makeRequest("2", roles: [.prefill, .decode]), state: strict, now: 10) }
        #expect(strictRouter.ledger.requestCount == 0)
    }
}

@Suite struct ReservationTests {
    @Test func releaseReturnsEveryPickAndAnUnknownTokenIsAnError() throws {
        let state = makeState(MultiRoleTests.disaggregated)
        var router = Router()
        let decision = try router.route(makeRequest(roles: [.prefill, .decode]), state: state, now: 10)
        #expect(try router.release(token: decision.releaseToken).count == 2)
        expectError(.unknownReservation, field: "release_token") { try router.release(token: decision.releaseToken) }
        expectError(.unknownReservation) { try router.release(token: 999_999) }
    }

    @Test func unreleasedReservationsExpire() throws {
        var state = makeState([makeWorker("a"), makeWorker("b")])
        var settings = RoutingSettings()
        settings.reservationTTLMilliseconds = 1_000
        state.apply(CommandEnvelope(issuedAt: 1, command: .setSettings(settings)))
        var router = Router()
        let old = try router.route(makeRequest("old"), state: state, now: 100)
        _ = try router.route(makeRequest("young"), state: state, now: 900)
        #expect(router.ledger.requestCount == 2)
        // The next decision sweeps what is older than the lifetime.
        _ = try router.route(makeRequest("late"), state: state, now: 1_100)
        #expect(router.ledger.requestCount == 2)
        expectError(.unknownReservation) { try router.release(token: old.releaseToken) }
        #expect(router.expireReservations(now: 5_000, ttl: 1_000) == 2)
        #expect(router.ledger.requestCount == 0)
    }

    /// A request that asks for its own hold (FlexLB schedules, never released) ends after it,
    /// however long the configured TTL; the others keep the TTL.
    @Test func aRequestsOwnHoldEndsItsReservation() throws {
        let state = makeState([makeWorker("a"), makeWorker("b")])
        var router = Router()
        var held = makeRequest("held")
        held.holdMilliseconds = 500
        let heldDecision = try router.route(held, state: state, now: 100)
        _ = try router.route(makeRequest("default"), state: state, now: 100)
        #expect(router.ledger.requestCount == 2)
        #expect(router.expireReservations(now: 599, ttl: 600_000) == 0)
        #expect(router.expireReservations(now: 600, ttl: 600_000) == 1)
        #expect(router.ledger.requestCount == 1)
        expectError(.unknownReservation) { try router.release(token: heldDecision.releaseToken) }
        var invalid = makeRequest("x")
        invalid.holdMilliseconds = 0
        expectError(.invalidRequest, field: "hold_ms") { _ = try router.route(invalid, state: state, now: 700) }
    }

    /// An engine's finished-request report ends a held request's pick on that engine only: the
    /// decode pick of a disaggregated request outlives its prefill.
    @Test func anEnginesFinishedReportEndsItsPickOfAHeldRequest() throws {
        let state = makeState([makeWorker("p", role: .prefill), makeWorker("d", role: .decode)])
        var router = Router()
        var held = makeRequest("77", roles: [.prefill, .decode])
        held.holdMilliseconds = 60_000
        let decision = try router.route(held, state: state, now: 100)
        _ = try router.route(makeRequest("78", roles: [.prefill, .decode]), state: state, now: 100)
        #expect(router.ledger.identifiedRequestCount == 1)
        // Unknown ids, ids of requests that were not held, and the wrong worker change nothing.
        #expect(router.finished(requestIDs: ["1", "78"], workerID: "p", state: state) == 0)
        #expect(router.finished(requestIDs: ["77"], workerID: "nobody", state: state) == 0)
        #expect(router.finished(requestIDs: ["77"], workerID: "p", state: state) == 1)
        #expect(router.ledger.reservations(token: decision.releaseToken).map(\.workerID) == ["d"])
        #expect(router.finished(requestIDs: ["77"], workerID: "p", state: state) == 0)
        #expect(router.finished(requestIDs: ["77"], workerID: "d", state: state) == 1)
        #expect(router.ledger.requestCount == 1)
        #expect(router.ledger.identifiedRequestCount == 0)
        // A held request released or expired is forgotten by id too.
        var again = makeRequest("79")
        again.holdMilliseconds = 10
        _ = try router.route(again, state: state, now: 200)
        #expect(router.ledger.identifiedRequestCount == 1)
        // (Holds end in arrival order: 79's ends with 77's queue entry, at 60,100.)
        router.expireReservations(now: 60_100, ttl: 600_000)
        #expect(router.ledger.identifiedRequestCount == 0)
    }

    @Test func aWorkerThatLeavesTakesItsReservationsWithIt() throws {
        var state = makeState([makeWorker("a"), makeWorker("b")], commands: [policy(.roundRobin)])
        var router = Router()
        _ = try router.route(makeRequest("1"), state: state, now: 10)
        _ = try router.route(makeRequest("2"), state: state, now: 10)
        state.apply(CommandEnvelope(issuedAt: 11, command: .deregisterWorker(id: "a")))
        state.apply(CommandEnvelope(issuedAt: 11, command: .registerWorker(makeWorker("c"))))
        _ = try router.route(makeRequest("3"), state: state, now: 12)
        // a's reservation is gone with it; c reused a's slot and starts clean.
        #expect(router.ledger.requestCount == 2)
    }
}

@Suite struct SplitTests {
    func state(weights: (Int, Int)) -> BalancerState {
        makeState((0..<4).map { makeWorker("w\($0)") }, commands: [
            .setPolicy(model: "m", policy: ModelPolicy(split: [
                StrategyArm(name: "control", strategy: .roundRobin, weight: weights.0),
                StrategyArm(name: "treatment", strategy: .cacheAware, weight: weights.1),
            ])),
        ])
    }

    @Test func armsGetTheirShareWithinTwoPercentOver10000Requests() throws {
        let state = state(weights: (70, 30))
        var router = Router()
        var strategies: [StrategyKind: Int] = [:]
        for index in 0..<10_000 {
            let decision = try router.route(makeRequest("req-\(index)"), state: state, now: 10)
            strategies[decision.targets[0].strategy, default: 0] += 1
            try router.release(token: decision.releaseToken)
        }
        let control = Double(router.armCounts["m"]!["control"]!) / 10_000
        #expect(abs(control - 0.7) < 0.02, "control share \(control)")
        #expect(router.armCounts["m"]!["treatment"]! == strategies[.cacheAware])
        #expect(router.armCounts["m"]!["control"]! == strategies[.roundRobin])
    }

    @Test func theArmIsAFunctionOfTheRequestID() throws {
        let state = state(weights: (1, 1))
        var first = Router(seed: 1)
        var second = Router(seed: 2)
        for index in 0..<200 {
            let request = makeRequest("id-\(index)")
            #expect(try first.route(request, state: state, now: 10).arm == second.route(request, state: state, now: 10).arm)
        }
    }

    @Test func decodeKeepsItsOwnStrategyUnderASplit() throws {
        let state = makeState(MultiRoleTests.disaggregated, commands: [
            .setPolicy(model: "m", policy: ModelPolicy(split: [StrategyArm(name: "rr", strategy: .roundRobin, weight: 1)])),
        ])
        var router = Router()
        let decision = try router.route(makeRequest(roles: [.prefill, .decode]), state: state, now: 10)
        #expect(decision.targets.map(\.strategy) == [.roundRobin, .kvPressure])
        #expect(decision.arm == "rr")
    }
}

@Suite struct RequestValidationTests {
    let state = makeState([makeWorker("a")], commands: [.setTier(name: "gpu", tier: ResourceTier(gpus: 1))])

    func refuse(_ request: RoutingRequest, code: BalancerError.Code = .invalidRequest, field: String) {
        var router = Router()
        expectError(code, field: field) { _ = try router.route(request, state: state, now: 10) }
        #expect(router.ledger.requestCount == 0)
    }

    @Test func everyMalformedRequestNamesItsField() {
        refuse(RoutingRequest(model: "", requestID: "r"), field: "model")
        refuse(RoutingRequest(model: "m", requestID: ""), field: "request_id")
        refuse(RoutingRequest(model: "m", requestID: "r", promptTokens: -1), field: "prompt_tokens")
        refuse(RoutingRequest(model: "m", requestID: "r", expectedOutputTokens: -5), field: "max_tokens")
        refuse(RoutingRequest(model: "m", requestID: "r", tokensPerBlock: 0), field: "tokens_per_block")
        refuse(RoutingRequest(model: "m", requestID: "r", tier: "platinum"), field: "tier")
        refuse(RoutingRequest(model: "m", requestID: "r", prompt: .blocks(Array(repeating: 1, count: 70_000))), field: "block_hashes")
        refuse(RoutingRequest(model: "nope", requestID: "r"), code: .unknownModel, field: "model")
    }

    @Test func errorsNameTheRoleAndWhyNoWorkerQualifies() {
        var router = Router()
        let drained = makeState([makeWorker("a", draining: true), makeWorker("b", draining: true)])
        expectError(.allDraining) { _ = try router.route(makeRequest(), state: drained, now: 10) }
        let full = makeState([makeWorker("a", running: 4, maxRequests: 4)])
        expectError(.allOverCapacity) { _ = try router.route(makeRequest(), state: full, now: 10) }
        let tripped = makeState([makeWorker("a")], commands: [.setCircuit(id: "a", state: .open)])
        expectError(.allUnhealthy) { _ = try router.route(makeRequest(), state: tripped, now: 10) }
        let mixed = makeState([makeWorker("a", draining: true), makeWorker("b", health: .unhealthy)])
        do {
            _ = try router.route(makeRequest(), state: mixed, now: 10)
            Issue.record("expected an error")
        } catch {
            #expect(error.code == .noWorkerForRole)
            #expect(error.role == .pdfusion)
            #expect(error.message.contains("1 unhealthy or tripped, 1 draining"))
        }
        expectError(.noWorkerForRole) { _ = try router.route(makeRequest(roles: [.decode]), state: mixed, now: 10) }
    }

    @Test func textAndTokenPromptsAreHashedIntoChainedBlocks() throws {
        let hasher = BlockHasher(tokensPerBlock: 4, bytesPerTextBlock: 8)
        let tokens = hasher.blocks(tokens: Array(0..<10), model: "m")
        #expect(tokens.count == 2, "only full blocks")
        #expect(hasher.blocks(tokens: Array(0..<8) + [99, 98, 97, 96], model: "m").prefix(2) == tokens.prefix(2))
        #expect(hasher.blocks(tokens: [9] + Array(1..<8), model: "m")[1] != tokens[1], "a block's hash names its whole prefix")
        #expect(hasher.blocks(tokens: Array(0..<8), model: "other") != tokens, "models do not share blocks")
        let text = hasher.blocks(text: "The quick brown fox jumps over", model: "m")
        #expect(text.count == 3)
        #expect(hasher.blocks(text: "The quick brown fox jumps over the lazy dog", model: "m").prefix(3) == text[...])
        let chained = BlockHasher().chain(blockIDs: [1, 2, 3], model: "m")
        #expect(chained.count == 3 && Set(chained).count == 3)
        #expect(BlockHasher().chain(blockIDs: [1, 2, 3], model: "m") == chained, "deterministic")
    }
}
