import Balancer
import Testing

/// Issue 20: admission on the master. A pool is modelled as a backlog of prefill work that
/// drains a millisecond per millisecond; the predicted TTFT of a request is that backlog plus
/// its own prompt. Random overloads (up to 6× the pool's speed, three classes) are driven
/// through ``AdmissionQueue`` a millisecond at a time, and the properties the issue names are
/// checked at every step.
@Suite struct AdmissionTests {
    static let policy = AdmissionPolicy(
        classes: [
            AdmissionClass(name: "high", minimumPriority: 80, deadlineMilliseconds: 400, dispatchBelowMilliseconds: 200, agingMilliseconds: 300),
            AdmissionClass(name: "mid", minimumPriority: 40, deadlineMilliseconds: 1_500, dispatchBelowMilliseconds: 100, agingMilliseconds: 300),
            AdmissionClass(name: "low", minimumPriority: Int.min, deadlineMilliseconds: 3_000, dispatchBelowMilliseconds: 50, agingMilliseconds: 600),
        ],
        queueCapacity: 64
    )

    struct Outcome {
        var dispatched: [(classIndex: Int, deadlineAt: Milliseconds, at: Milliseconds, predicted: Double)] = []
        var shed: [(index: Int, classIndex: Int, at: Milliseconds, arrivedAt: Milliseconds, reason: ShedReason)] = []
        var arrivals: [(classIndex: Int, at: Milliseconds)] = []
        var queuedAtEnd = 0
    }

    /// Runs `milliseconds` of arrivals; `load` is the offered work over the pool's speed;
    /// `classOf` picks an arrival's priority.
    static func run(
        seed: UInt64, milliseconds: Milliseconds = 20_000, load: Double, policy: AdmissionPolicy = policy,
        priority: (inout SeededGenerator) -> Int
    ) -> Outcome {
        var random = SeededGenerator(seed: seed)
        var queue = AdmissionQueue<Int>(policy: policy)
        var backlog = 0.0
        var outcome = Outcome()
        let meanWork = 20.0
        let arrivalProbability = load / meanWork
        for now in Milliseconds(1)...milliseconds {
            backlog = max(0, backlog - 1)
            var arrivals = 0
            var chance = arrivalProbability
            while chance > 0 {
                if random.unit() < min(chance, 1) { arrivals += 1 }
                chance -= 1
            }
            for _ in 0..<arrivals {
                let work = Int(1 + random.below(Int(2 * meanWork) - 1))
                let index = outcome.arrivals.count
                let requestPriority = priority(&random)
                let classIndex = policy.classIndex(priority: requestPriority)
                outcome.arrivals.append((classIndex, now))
                let predicted = backlog + Double(work)
                let (verdict, displaced) = queue.arrive(
                    model: "m", priority: requestPriority, promptTokens: work, now: now,
                    predicted: TTFTPrediction(ttft: predicted, queueing: backlog),
                    drainTokensPerMillisecond: 1, item: index
                )
                for entry in displaced {
                    outcome.shed.append((entry.item, entry.classIndex, now, entry.arrivedAt, .queueFull))
                }
                switch verdict {
                case .dispatch:
                    outcome.dispatched.append((classIndex, now + policy.classes[classIndex].deadlineMilliseconds, now, predicted))
                    backlog += Double(work)
                case .queued:
                    break
                case .shed(let reason, let retryAfter):
                    #expect(retryAfter >= 1)
                    outcome.shed.append((index, classIndex, now, now, reason))
                }
            }
            queue.drain(
                model: "m", now: now,
                predict: { TTFTPrediction(ttft: backlog + Double($0.promptTokens), queueing: backlog) },
                dispatch: { entry, _ in
                    outcome.dispatched.append((entry.classIndex, entry.deadlineAt, now, backlog + Double(entry.promptTokens)))
                    backlog += Double(entry.promptTokens)
                },
                shed: { entry, reason in outcome.shed.append((entry.item, entry.classIndex, now, entry.arrivedAt, reason)) }
            )
            #expect(queue.count <= policy.queueCapacity)
            #expect(queue.count == queue.depth(model: "m").reduce(0, +))
        }
        outcome.queuedAtEnd = queue.count
        return outcome
    }

    static func mixed(_ random: inout SeededGenerator) -> Int { [95, 50, 10][random.below(3)] }

    @Test(arguments: [0.5, 1, 2, 4, 6] as [Double])
    func noRequestIsDispatchedTooLateToMeetItsDeadlineAndNoneIsLost(load: Double) {
        for seed in UInt64(1)...6 {
            let outcome = Self.run(seed: seed, load: load, priority: Self.mixed)
            var met = 0
            for (_, deadlineAt, at, predicted) in outcome.dispatched {
                #expect(at < deadlineAt, "dispatched after its deadline")
                if Double(at) + predicted <= Double(deadlineAt) { met += 1 }
            }
            // Every request's own work fits in its class's deadline here, so every dispatched one
            // meets it (the prediction is exact in this model).
            #expect(met == outcome.dispatched.count, "\(met) of \(outcome.dispatched.count) met their deadline")
            #expect(outcome.dispatched.count + outcome.shed.count + outcome.queuedAtEnd == outcome.arrivals.count)
            for shed in outcome.shed where shed.reason == .deadline {
                // Shed at arrival (a quick answer) or by its deadline at the latest.
                let deadline = shed.arrivedAt + Self.policy.classes[shed.classIndex].deadlineMilliseconds
                #expect(shed.at <= deadline)
            }
            if load <= 0.5 { #expect(outcome.shed.isEmpty, "shed under half the capacity (seed \(seed))") }
        }
    }

    /// A flood of the highest class at twice the pool's speed: the lower classes still get
    /// through (aging), and none of their requests is left past its deadline.
    @Test func noClassStarvesUnderAFloodOfTheHighestClass() {
        for seed in UInt64(1)...4 {
            let outcome = Self.run(seed: seed, load: 2.4) { random in random.below(10) < 8 ? 95 : [50, 10][random.below(2)] }
            for lower in 1...2 {
                let served = outcome.dispatched.filter { $0.classIndex == lower }.count
                let arrived = outcome.arrivals.filter { $0.classIndex == lower }.count
                #expect(arrived > 100)
                #expect(served * 5 >= arrived, "class \(lower) starved: \(served) of \(arrived) served (seed \(seed))")
            }
        }
    }

    /// Below their aging bounds, a queued request of a higher class is always dispatched before
    /// every queued request of a lower class that is not aged.
    @Test func aHigherClassNeverWaitsBehindALowerOne() {
        var queue = AdmissionQueue<String>(policy: Self.policy)
        var backlog = 500.0
        for (name, priority) in [("low-1", 10), ("mid-1", 50), ("low-2", 10), ("high-1", 95), ("mid-2", 50), ("high-2", 95)] {
            let (verdict, _) = queue.arrive(
                model: "m", priority: priority, promptTokens: 10, now: 1, predicted: TTFTPrediction(ttft: backlog, queueing: backlog), drainTokensPerMillisecond: 0, item: name
            )
            guard case .queued = verdict else { Issue.record("\(name) not queued: \(verdict)"); return }
        }
        var order: [String] = []
        for now in Milliseconds(2)...200 {
            backlog = max(0, backlog - 5)
            queue.drain(
                model: "m", now: now, predict: { _ in TTFTPrediction(ttft: backlog, queueing: backlog) },
                dispatch: { entry, _ in order.append(entry.item); backlog += 20 }, shed: { entry, _ in order.append("shed " + entry.item) }
            )
        }
        #expect(order == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"])
    }

    /// When the queue is full, a higher class displaces the newest request of the lowest class;
    /// a request of the lowest class is refused instead.
    @Test func aFullQueueDisplacesTheLowestClassFirst() {
        var policy = Self.policy
        policy.queueCapacity = 3
        var queue = AdmissionQueue<String>(policy: policy)
        for name in ["low-1", "low-2", "mid-1"] {
            _ = queue.arrive(model: "m", priority: name.hasPrefix("low") ? 10 : 50, promptTokens: 1, now: 1, predicted: TTFTPrediction(ttft: 1_000, queueing: 1_000), drainTokensPerMillisecond: 0, item: name)
        }
        let (refused, none) = queue.arrive(model: "m", priority: 10, promptTokens: 1, now: 2, predicted: TTFTPrediction(ttft: 1_000, queueing: 1_000), drainTokensPerMillisecond: 0, item: "low-3")
        guard case .shed(.queueFull, _) = refused else { Issue.record("low-3: \(refused)"); return }
        #expect(none.isEmpty)
        let (admitted, displaced) = queue.arrive(model: "other", priority: 95, promptTokens: 1, now: 2, predicted: TTFTPrediction(ttft: 1_000, queueing: 1_000), drainTokensPerMillisecond: 0, item: "high-1")
        guard case .queued = admitted else { Issue.record("high-1: \(admitted)"); return }
        #expect(displaced.map(\.item) == ["low-2"])
        #expect(queue.count == 3)
    }

    /// A request that cannot make its deadline behind the queue ahead is answered at once.
    @Test func aHopelessRequestIsShedOnArrival() {
        var queue = AdmissionQueue<Int>(policy: Self.policy)
        for index in 0..<10 {
            _ = queue.arrive(model: "m", priority: 95, promptTokens: 50, now: 1, predicted: TTFTPrediction(ttft: 300, queueing: 250), drainTokensPerMillisecond: 1, item: index)
        }
        // 500 tokens ahead at 1 token/ms, then up to 200 ms: 700 ms > the 400 ms deadline.
        let (verdict, _) = queue.arrive(model: "m", priority: 95, promptTokens: 50, now: 1, predicted: TTFTPrediction(ttft: 300, queueing: 250), drainTokensPerMillisecond: 1, item: 10)
        guard case .shed(.deadline, let retryAfter) = verdict else { Issue.record("\(verdict)"); return }
        #expect(retryAfter == 1)
    }

    @Test func policiesAreValidatedNamingTheField() {
        #expect(throws: Never.self) { try AdmissionPolicy().validate() }
        var policy = AdmissionPolicy()
        policy.classes[1].minimumPriority = 99
        #expect { try policy.validate() } throws: { "\($0)".contains("admission.classes[1].min_priority") }
        policy = AdmissionPolicy()
        policy.classes[0].dispatchBelowMilliseconds = .nan
        #expect { try policy.validate() } throws: { "\($0)".contains("dispatch_below_ms") }
        policy = AdmissionPolicy(classes: [], queueCapacity: 1)
        #expect { try policy.validate() } throws: { "\($0)".contains("admission.classes") }
        #expect(AdmissionPolicy().classIndex(priority: Int.min) == 1)
        #expect(AdmissionPolicy().classIndex(priority: Int.max) == 0)
    }
}
