/// Admission control on the master: classes of service and a bounded per-model queue.
///
/// Without it the master dispatches every request at once, and past the fleet's capacity the
/// engines' queues grow for as long as the overload lasts (TTFT p99 of minutes at 5× the
/// Mooncake trace). With it, a request is dispatched only while the best candidate's predicted
/// time to first token is under its class's ceiling; otherwise it waits here, where a later
/// request of a higher class can go ahead of it, and is placed when capacity frees, on the state
/// of that moment (late binding: it can still find the cache). A request that can no longer
/// make its class's deadline, or finds the queue full, is shed at once with a retry hint —
/// never parked at an engine.
///
/// Everything here is pure: the caller supplies the clock, the router's prediction and the
/// dispatch. The serving layer and the simulator drive the same code.

/// A class of service.
public struct AdmissionClass: Sendable, Hashable {
    public var name: String
    /// Requests whose priority is at least this belong to the class (the first class, in the
    /// policy's order, whose floor they reach).
    public var minimumPriority: Int
    /// The time to first token the class promises, counted from arrival at the master: a request
    /// that cannot be dispatched in time to make it is shed.
    public var deadlineMilliseconds: Milliseconds
    /// The class is dispatched while the best candidate's predicted queueing delay (its TTFT
    /// less the request's own prefill) is at most this: the depth of the engines' queues it may
    /// fill. A higher class gets a higher ceiling, so the
    /// queue depth between the two ceilings is reserved for it.
    public var dispatchBelowMilliseconds: Double
    /// A queued request that has waited this long goes ahead of higher classes, with the highest
    /// ceiling: no class starves.
    public var agingMilliseconds: Milliseconds

    public init(name: String, minimumPriority: Int, deadlineMilliseconds: Milliseconds, dispatchBelowMilliseconds: Double, agingMilliseconds: Milliseconds) {
        self.name = name
        self.minimumPriority = minimumPriority
        self.deadlineMilliseconds = deadlineMilliseconds
        self.dispatchBelowMilliseconds = dispatchBelowMilliseconds
        self.agingMilliseconds = agingMilliseconds
    }
}

/// The classes, highest first, and the queue's bound.
public struct AdmissionPolicy: Sendable, Hashable {
    public var classes: [AdmissionClass]
    /// Requests queued per model, all classes together.
    public var queueCapacity: Int
    /// A worker with this many requests waiting (reported, plus sent since its report) is
    /// saturated, whatever its predicted TTFT: its engine is holding requests back (for KV
    /// memory, or a full batch), which the prefill-time estimate does not see.
    public var saturatedWaitingRequests: Int = 4
    /// A worker whose KV cache is at least this full is saturated.
    public var saturatedKVFraction: Double = 0.95

    /// Two classes: `interactive` (priority ≥ 60) promised a first token within 10 s,
    /// `standard` within 60 s.
    public init(
        classes: [AdmissionClass] = [
            AdmissionClass(name: "interactive", minimumPriority: 60, deadlineMilliseconds: 10_000, dispatchBelowMilliseconds: 4_000, agingMilliseconds: 10_000),
            AdmissionClass(name: "standard", minimumPriority: Int.min, deadlineMilliseconds: 60_000, dispatchBelowMilliseconds: 2_000, agingMilliseconds: 15_000),
        ],
        queueCapacity: Int = 4_096
    ) {
        self.classes = classes
        self.queueCapacity = queueCapacity
    }

    public static let maxClasses = 16
    public static let maxQueueCapacity = 1 << 20
    /// A day: the longest deadline or aging bound a class may have.
    public static let maxMilliseconds: Milliseconds = 86_400_000

    /// The index of the class `priority` belongs to: the first whose floor it reaches, else the
    /// last.
    public func classIndex(priority: Int) -> Int {
        classes.firstIndex { priority >= $0.minimumPriority } ?? classes.count - 1
    }

    /// The checks an operator's configuration must pass; errors name the field.
    public func validate() throws(BalancerError) {
        if classes.isEmpty || classes.count > Self.maxClasses {
            throw .invalidRequest(field: "admission.classes", "1 to \(Self.maxClasses) classes")
        }
        if !(1...Bounds.requests).contains(saturatedWaitingRequests) {
            throw .invalidRequest(field: "admission.saturated_waiting_requests", "must be in 1...\(Bounds.requests)")
        }
        if !(saturatedKVFraction > 0 && saturatedKVFraction <= 1) {
            throw .invalidRequest(field: "admission.saturated_kv_fraction", "must be in (0, 1]")
        }
        if !(1...Self.maxQueueCapacity).contains(queueCapacity) {
            throw .invalidRequest(field: "admission.queue_capacity", "must be in 1...\(Self.maxQueueCapacity)")
        }
        var names = Set<String>()
        for (index, admissionClass) in classes.enumerated() {
            let field = "admission.classes[\(index)]"
            if admissionClass.name.isEmpty || admissionClass.name.utf8.count > 64 || !names.insert(admissionClass.name).inserted {
                throw .invalidRequest(field: "\(field).name", "1 to 64 bytes, unique")
            }
            if index > 0 && admissionClass.minimumPriority >= classes[index - 1].minimumPriority {
                throw .invalidRequest(field: "\(field).min_priority", "classes go from the highest priority floor down")
            }
            if !(1...Self.maxMilliseconds).contains(admissionClass.deadlineMilliseconds) {
                throw .invalidRequest(field: "\(field).deadline_ms", "must be in 1...\(Self.maxMilliseconds)")
            }
            if !(1...Self.maxMilliseconds).contains(admissionClass.agingMilliseconds) {
                throw .invalidRequest(field: "\(field).aging_ms", "must be in 1...\(Self.maxMilliseconds)")
            }
            if !(admissionClass.dispatchBelowMilliseconds > 0 && admissionClass.dispatchBelowMilliseconds <= Double(admissionClass.deadlineMilliseconds)) {
                throw .invalidRequest(field: "\(field).dispatch_below_ms", "must be in (0, deadline_ms]")
            }
        }
    }
}

/// What the router expects for a request on its best candidate now.
public struct TTFTPrediction: Sendable, Hashable {
    /// Time to first token, milliseconds.
    public var ttft: Double
    /// The request's own prefill in it (its uncached prompt at the worker's speed).
    public var own: Double
    /// The worker is saturated: requests wait at its engine beyond what the estimate sees.
    public var saturated: Bool

    /// The part of the TTFT spent behind other work: the depth of the queue the request would
    /// join, what a class's ceiling is compared with; infinite when saturated.
    public var queueing: Double { saturated ? .infinity : max(0, ttft - own) }

    public init(ttft: Double, own: Double, saturated: Bool = false) {
        self.ttft = ttft
        self.own = min(max(own, 0), ttft)
        self.saturated = saturated
    }

    public init(ttft: Double, queueing: Double) {
        self.init(ttft: ttft, own: ttft - queueing)
    }
}

/// Why a request was not admitted.
public enum ShedReason: String, Sendable, CaseIterable {
    /// The model's queue was full (or the request was displaced by a higher class).
    case queueFull = "queue_full"
    /// It could not be dispatched in time to meet its class's deadline.
    case deadline
}

/// The master's queue of requests waiting for capacity, per model and class. `Item` is whatever
/// the caller needs to answer the request (a continuation, a trace index).
public struct AdmissionQueue<Item: Sendable>: Sendable {
    public struct Entry: Sendable {
        public var id: UInt64
        public var model: String
        public var classIndex: Int
        public var arrivedAt: Milliseconds
        public var deadlineAt: Milliseconds
        public var promptTokens: Int
        public var item: Item
    }

    /// What happened to an arriving request.
    public enum Verdict: Sendable {
        /// Place it now, with the ceiling to place it under (nil: no prediction was made).
        case dispatch(AdmissionCeiling?)
        /// It waits; a later ``drain(model:now:predict:dispatch:shed:)`` places or sheds it.
        case queued(id: UInt64)
        /// Answer it now: refused, with the seconds after which a retry may succeed.
        case shed(ShedReason, retryAfterSeconds: Int)
    }

    public private(set) var policy: AdmissionPolicy
    /// Per model, one FIFO lane per class.
    private var lanes: [String: [[Entry]]] = [:]
    public private(set) var count = 0
    private var nextID: UInt64 = 1

    public init(policy: AdmissionPolicy) {
        self.policy = policy
    }

    /// Models with queued requests.
    public var models: [String] { lanes.compactMap { $0.value.contains { !$0.isEmpty } ? $0.key : nil } }

    /// Queued requests of `model` per class, in the policy's order.
    public func depth(model: String) -> [Int] {
        lanes[model]?.map(\.count) ?? Array(repeating: 0, count: policy.classes.count)
    }

    /// Replaces the classes; requests already queued keep their deadlines and are re-laned by
    /// index (clamped to the new classes).
    public mutating func update(policy newPolicy: AdmissionPolicy) {
        guard newPolicy != policy else { return }
        let old = lanes
        policy = newPolicy
        lanes = [:]
        for (model, modelLanes) in old {
            var fresh = [[Entry]](repeating: [], count: newPolicy.classes.count)
            for entry in modelLanes.joined() {
                var entry = entry
                entry.classIndex = min(entry.classIndex, newPolicy.classes.count - 1)
                fresh[entry.classIndex].append(entry)
            }
            for index in fresh.indices { fresh[index].sort { $0.arrivedAt < $1.arrivedAt } }
            lanes[model] = fresh
        }
    }

    /// A request arrives. `prediction`: the router's estimate for the best candidate now (nil:
    /// none, such as no eligible worker — the router will answer). `drainTokensPerMillisecond`:
    /// how fast the model's pool prefills, to estimate the wait behind the queue (0: unknown).
    /// Returns the verdict and the requests displaced to make room (shed, `queue_full`).
    public mutating func arrive(
        model: String, priority: Int, promptTokens: Int, now: Milliseconds, predicted prediction: TTFTPrediction?,
        drainTokensPerMillisecond: Double, item: Item
    ) -> (verdict: Verdict, displaced: [Entry]) {
        let classIndex = policy.classIndex(priority: priority)
        let admissionClass = policy.classes[classIndex]
        let deadlineAt = now.addingReportingOverflow(admissionClass.deadlineMilliseconds).partialValue
        var modelLanes = lanes[model] ?? Array(repeating: [], count: policy.classes.count)
        defer { lanes[model] = modelLanes.contains { !$0.isEmpty } ? modelLanes : nil }
        let ahead = modelLanes[...classIndex].reduce(0) { $0 + $1.count }
        guard let prediction else { return (.dispatch(nil), []) }
        if ahead == 0 && prediction.queueing <= admissionClass.dispatchBelowMilliseconds {
            return (.dispatch(AdmissionCeiling(milliseconds: admissionClass.dispatchBelowMilliseconds, policy: policy)), [])
        }
        // The wait behind the queue: the prompt tokens ahead of it at the pool's prefill speed,
        // then a dispatch under the ceiling.
        let tokensAhead = modelLanes[...classIndex].reduce(0) { $0 + $1.reduce(0) { $0 + $1.promptTokens } }
        let wait = drainTokensPerMillisecond > 0 ? Double(tokensAhead) / drainTokensPerMillisecond : 0
        let expected = wait + min(prediction.queueing, admissionClass.dispatchBelowMilliseconds) + prediction.own
        if expected > Double(admissionClass.deadlineMilliseconds) {
            return (.shed(.deadline, retryAfterSeconds: Self.seconds(expected - Double(admissionClass.deadlineMilliseconds))), [])
        }
        var displaced: [Entry] = []
        if count >= policy.queueCapacity {
            // Full: a request of a higher class displaces the newest of the lowest class below
            // it, from any model's queue.
            guard let victim = lowestBelow(classIndex, preferring: model, lanes: &modelLanes) else {
                return (.shed(.queueFull, retryAfterSeconds: Self.seconds(expected)), [])
            }
            displaced.append(victim)
        }
        let id = nextID
        nextID += 1
        modelLanes[classIndex].append(Entry(
            id: id, model: model, classIndex: classIndex, arrivedAt: now, deadlineAt: deadlineAt,
            promptTokens: max(promptTokens, 0), item: item
        ))
        count += 1
        return (.queued(id: id), displaced)
    }

    /// Places what fits now for `model`: requests past their deadline are shed, then class heads
    /// are tried in service order (heads that waited their class's aging bound first, oldest
    /// first, with the highest class's ceiling; then by class), each dispatched when `predict`
    /// says the best candidate's queueing delay is under its ceiling and its TTFT within the
    /// deadline. `dispatch` must place it (among the workers under the ceiling it is given)
    /// before returning (so the next prediction sees its reservation). Stops when no head can
    /// go.
    public mutating func drain(
        model: String, now: Milliseconds, predict: (Entry) -> TTFTPrediction?,
        dispatch: (Entry, AdmissionCeiling) -> Void, shed: (Entry, ShedReason) -> Void
    ) {
        guard var modelLanes = lanes[model] else { return }
        defer { lanes[model] = modelLanes.contains { !$0.isEmpty } ? modelLanes : nil }
        for entry in removeExpired(from: &modelLanes, now: now) { shed(entry, .deadline) }
        var progressed = true
        while progressed {
            progressed = false
            for (lane, ceiling) in serviceOrder(modelLanes, now: now) {
                let entry = modelLanes[lane][0]
                if let prediction = predict(entry) {
                    guard prediction.queueing <= ceiling else { continue }
                    let remaining = Double(entry.deadlineAt) - Double(now)
                    let own = prediction.own
                    // Too late for the deadline now: a request whose own prefill never fitted
                    // in its class's deadline goes anyway (waiting cannot help it); one whose own
                    // prefill no longer fits in what is left is shed now; the rest wait for the
                    // queue ahead to shrink.
                    if prediction.ttft > remaining && own <= Double(entry.deadlineAt - entry.arrivedAt) {
                        guard own >= remaining else { continue }
                        modelLanes[lane].removeFirst()
                        count -= 1
                        shed(entry, .deadline)
                        progressed = true
                        break
                    }
                }
                modelLanes[lane].removeFirst()
                count -= 1
                dispatch(entry, AdmissionCeiling(milliseconds: ceiling, policy: policy))
                progressed = true
                break
            }
        }
    }

    /// Removes the queued request `id` (its client went away); nil when it is not queued.
    @discardableResult
    public mutating func cancel(id: UInt64, model: String) -> Entry? {
        guard var modelLanes = lanes[model] else { return nil }
        for lane in modelLanes.indices {
            if let position = modelLanes[lane].firstIndex(where: { $0.id == id }) {
                let entry = modelLanes[lane].remove(at: position)
                count -= 1
                lanes[model] = modelLanes.contains { !$0.isEmpty } ? modelLanes : nil
                return entry
            }
        }
        return nil
    }

    /// The earliest deadline of any queued request (when a drain must run at the latest).
    public var earliestDeadline: Milliseconds? {
        lanes.values.lazy.flatMap { $0 }.compactMap { $0.first?.deadlineAt }.min()
    }

    // MARK: Internals

    /// Lane heads in the order they are tried, with the ceiling each is dispatched under.
    private func serviceOrder(_ modelLanes: [[Entry]], now: Milliseconds) -> [(lane: Int, ceiling: Double)] {
        let top = policy.classes[0].dispatchBelowMilliseconds
        var aged: [(lane: Int, arrivedAt: Milliseconds)] = []
        var rest: [(lane: Int, ceiling: Double)] = []
        for lane in modelLanes.indices {
            guard let head = modelLanes[lane].first else { continue }
            let admissionClass = policy.classes[min(lane, policy.classes.count - 1)]
            if lane > 0 && now >= head.arrivedAt && now - head.arrivedAt >= admissionClass.agingMilliseconds {
                aged.append((lane, head.arrivedAt))
            } else {
                rest.append((lane, admissionClass.dispatchBelowMilliseconds))
            }
        }
        aged.sort { $0.arrivedAt < $1.arrivedAt }
        return aged.map { ($0.lane, top) } + rest
    }

    private mutating func removeExpired(from modelLanes: inout [[Entry]], now: Milliseconds) -> [Entry] {
        var expired: [Entry] = []
        for lane in modelLanes.indices where modelLanes[lane].contains(where: { $0.deadlineAt <= now }) {
            expired += modelLanes[lane].filter { $0.deadlineAt <= now }
            modelLanes[lane].removeAll { $0.deadlineAt <= now }
        }
        count -= expired.count
        return expired
    }

    /// Removes and returns the newest request of the lowest class below `classIndex`, looking in
    /// `model`'s lanes (passed in, being edited) and every other model's.
    private mutating func lowestBelow(_ classIndex: Int, preferring model: String, lanes modelLanes: inout [[Entry]]) -> Entry? {
        for lane in stride(from: policy.classes.count - 1, to: classIndex, by: -1) {
            if let victim = modelLanes[lane].popLast() {
                count -= 1
                return victim
            }
            for other in lanes.keys where other != model {
                if let victim = lanes[other]![lane].popLast() {
                    count -= 1
                    if !lanes[other]!.contains(where: { !$0.isEmpty }) { lanes[other] = nil }
                    return victim
                }
            }
        }
        return nil
    }

    private static func seconds(_ milliseconds: Double) -> Int {
        guard milliseconds.isFinite, milliseconds > 0 else { return 1 }
        return Int(min(max((milliseconds / 1_000).rounded(.up), 1), 3_600))
    }
}
