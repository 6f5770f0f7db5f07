import AsyncHTTPClient
import Balancer
import Cluster
import Foundation
import FulcrumAPI
import NIOCore
import NIOHTTP1
import NetworkTestSupport
import Raft
import RaftStorage
import RaftTestKit
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real `fulcrum` processes under a seeded nemesis (kill -9 with the leader the likeliest victim,
/// SIGSTOP past the election timeout, partitions — isolated leader, majority/minority, one-way —
/// through proxies on the peer ports, leadership transfers, and through the nodes' fault hooks:
/// slow fsync, a full disk or I/O errors, a power loss that undoes unsynced writes, wall-clock
/// jumps; and membership changes that remove a member, the leader included, and add a new node)
/// while clients register, update and deregister workers, read them linearizably and route.
/// After healing: one leader per term, every acknowledged write in every member's log, none
/// twice, logs that agree, equal state fingerprints, and a linearizable history.
///
/// `FULCRUM_NEMESIS_FAULTS`, `_SECONDS`, `_SEED` and `_NODES` scale it (`Scripts/nemesis.sh`).
@Suite(.serialized) struct NemesisTests {
    struct Options {
        var faults = 60
        var seconds = 240.0
        var seed: UInt64 = 20_261_202
        var nodes = 3
        /// Partitions through the TCP proxy even where network namespaces are available.
        var proxyOnly = false

        static var fromEnvironment: Options {
            let environment = ProcessInfo.processInfo.environment
            var options = Options()
            if let value = environment["FULCRUM_NEMESIS_FAULTS"].flatMap(Int.init) { options.faults = value }
            if let value = environment["FULCRUM_NEMESIS_SECONDS"].flatMap(Double.init) { options.seconds = value }
            if let value = environment["FULCRUM_NEMESIS_SEED"].flatMap(UInt64.init) { options.seed = value }
            if let value = environment["FULCRUM_NEMESIS_NODES"].flatMap(Int.init) { options.nodes = value }
            options.proxyOnly = environment["FULCRUM_NEMESIS_PROXY"] == "1"
            return options
        }
    }

    @Test(.timeLimit(.minutes(Int(Options.fromEnvironment.seconds / 60) + 4)))
    func faultsLoseNothingAndTheHistoryIsLinearizable() async throws {
        let options = Options.fromEnvironment
        let run = try await NemesisRun(options: options)
        let summary = try await run.execute()
        print(summary.description)
        #expect(summary.faults >= min(options.faults, 60), "\(summary.faults) faults injected")
        #expect(summary.violations.isEmpty, "seed \(options.seed): \(summary.violations.joined(separator: "; "))")
        #expect(summary.acknowledgedWrites > 50, "clients got writes through: \(summary.acknowledgedWrites)")
    }

    /// The log checks catch a lost acknowledged write, a write committed twice and logs that
    /// disagree at a committed index.
    @Test func theLogChecksCatchPlantedFaults() {
        func entry(_ index: UInt64, term: UInt64 = 1, value: UInt64) -> Entry {
            let worker = Worker(id: "k1", model: "m", role: .pdfusion, address: "127.0.0.1:9", group: "v\(value)")
            return Entry(term: term, index: index, data: [0] + CommandEnvelope(issuedAt: 1, command: .registerWorker(worker)).encoded())
        }
        func log(_ entries: [Entry], commit: UInt64) -> PersistentState {
            PersistentState(
                hardState: HardState(term: 2, vote: 1, commit: commit),
                snapshot: Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, confState: ConfState(voters: [1, 2])), data: []),
                entries: entries
            )
        }
        let good = [entry(1, value: 1), entry(2, value: 2)]
        #expect(NemesisRun.checkLogs([1: log(good, commit: 2), 2: log(good, commit: 2)], acknowledged: [1: 1, 2: 1]).isEmpty)
        let lost = NemesisRun.checkLogs([1: log(good, commit: 2), 2: log([entry(1, value: 1)], commit: 1)], acknowledged: [1: 1, 2: 1])
        #expect(lost.contains { $0.contains("node 2 lacks 1") })
        let twice = NemesisRun.checkLogs([1: log(good + [entry(3, value: 2)], commit: 3)], acknowledged: [2: 1])
        #expect(twice.contains { $0.contains("twice") || $0.contains("2 times") })
        let forked = NemesisRun.checkLogs([1: log(good, commit: 2), 2: log([entry(1, value: 1), entry(2, term: 2, value: 3)], commit: 2)], acknowledged: [:])
        #expect(forked.contains { $0.contains("disagree on committed index 2") })
    }
}

/// What one run did and found.
struct NemesisSummary: CustomStringConvertible {
    var seed: UInt64
    var faults = 0
    var faultsByKind: [String: Int] = [:]
    var operations = 0
    var acknowledgedWrites = 0
    var unknownOutcomes = 0
    var reads = 0
    var routes = 0
    var routeFailures = 0
    var routesPlaced = 0
    /// Longest time from a fault's start to the next acknowledged write, per fault kind.
    var longestUnavailability: [String: Double] = [:]
    var violations: [String] = []
    var elapsed = 0.0
    var partitionsThrough = ""

    var description: String {
        let kinds = faultsByKind.keys.sorted().map { "\($0) \(faultsByKind[$0]!)" }.joined(separator: ", ")
        let windows = longestUnavailability.keys.sorted().map { String(format: "%@ %.2f s", $0, longestUnavailability[$0]!) }.joined(separator: ", ")
        return """
            nemesis seed \(seed): \(faults) faults in \(String(format: "%.0f", elapsed)) s (\(kinds)); partitions through \(partitionsThrough)
              operations \(operations): \(acknowledgedWrites) acknowledged writes, \(reads) linearizable reads, \(unknownOutcomes) unknown outcomes, \
            \(routes) routes (\(routesPlaced) placed on an engine, \(routeFailures) failed)
              longest unavailability (fault start to next acknowledged write): \(windows)
              violations: \(violations.isEmpty ? "none" : violations.joined(separator: "; "))
            """
    }
}

/// The shared history: register operations on logical time, plus wall-clock marks.
final class NemesisHistory: Sendable {
    struct State {
        var clock: UInt64 = 0
        var operations: [RegisterOperation] = []
        var acknowledged: [UInt64: UInt8] = [:]
        var acknowledgedAt: [Double] = []
        var unknown = 0
        var reads = 0
        var routes = 0
        var routeFailures = 0
    var routesPlaced = 0
        var leaders: [UInt64: Set<UInt64>] = [:]
    }

    let state = Mutex(State())
    let started = Date()

    func tick() -> UInt64 { state.withLock { $0.clock += 1; return $0.clock } }
    var now: Double { Date().timeIntervalSince(started) }

    func record(_ operation: RegisterOperation) { state.withLock { $0.operations.append(operation) } }
}

/// One seeded nemesis run against a fresh cluster.
final class NemesisRun: @unchecked Sendable {
    /// Registers k0…k5 are workers; register 6 is the `sticky_ttl_ms` setting.
    static let keys: UInt8 = 6
    static let configKey: UInt8 = 6
    /// A config write of value v sets `sticky_ttl_ms` to this plus v (the default reads as 0).
    static let ttlBase: UInt64 = 60_000
    /// Values stay below this (a run writes far fewer), so the default TTL (an hour) reads as 0.
    static let ttlSpan: UInt64 = 1_000_000
    /// Sessions the routes carry, so they create and follow sticky bindings.
    static let sessions = 16
    /// Ids kept for nodes that membership faults add (ports and proxies are set up front).
    static let spareCount = 24
    /// How long a client waits for an answer before it gives up (an unknown outcome) and tries
    /// another node, as a real client would: long enough for an election and a slow fsync, short
    /// enough that the unavailability windows measure the cluster rather than the clients.
    static let clientTimeout = Duration.seconds(2)
    let options: NemesisTests.Options
    let cluster: ProcessCluster
    let partitions: Partitions
    var proxies: [UInt64: FaultProxy] = [:]
    let history = NemesisHistory()
    let nextValue = Atomic<UInt64>(1)
    let stopping = Atomic<Bool>(false)
    var random: SeededGenerator
    var paused: Set<UInt64> = []
    /// The voting members; clients and checks address these. Membership faults change it.
    let members: Mutex<[UInt64]>
    /// Simulated engines that the routes go to (model `sim`, sticky policy).
    let fleet: EngineFleet
    /// Ids not used yet, for nodes that membership faults add.
    var spares: [UInt64]

    init(options: NemesisTests.Options) async throws {
        self.options = options
        random = SeededGenerator(seed: options.seed)
        let spares = (1...UInt64(Self.spareCount)).map { UInt64(options.nodes) + $0 }
        self.spares = spares
        let founders = (1...UInt64(options.nodes)).map { $0 }
        let lab = options.proxyOnly ? nil : NetworkLab.make(nodes: founders + spares)
        partitions = Partitions(lab: lab)
        fleet = try await EngineFleet(count: 2, host: lab?.hostAddress ?? "127.0.0.1")
        let workerNetworks = "127.0.0.0/8" + (lab.map { ",\($0.subnet).0/24" } ?? "")
        cluster = try ProcessCluster(
            founders: options.nodes, snapshotEntries: 10_000_000,
            environment: ["FULCRUM_WORKER_CIDRS": workerNetworks, "FULCRUM_LOG_LEVEL": "warning", "FULCRUM_FAULT_INJECTION": "true"],
            startsLater: true, lab: lab
        )
        members = Mutex(founders)
        for id in spares { try cluster.reservePorts(id) }
        if lab == nil {
            // Without namespaces, peers dial a proxy in front of each node's peer port.
            let proxyPorts = freePorts(founders.count + spares.count)
            for (index, id) in (founders + spares).enumerated() {
                cluster.advertisedPeerPorts[id] = proxyPorts[index]
                let proxy = FaultProxy(node: id, target: cluster.peerPorts[id]!, partitions: partitions)
                try await proxy.start(port: proxyPorts[index])
                proxies[id] = proxy
            }
        }
        for id in founders { try cluster.start(id) }
    }

    var nodes: [UInt64] { members.withLock { $0 } }

    func execute() async throws -> NemesisSummary {
        var summary = NemesisSummary(seed: options.seed)
        do {
            try await cluster.waitUntilReady(timeout: 30)
            try await prepareRouting()
            summary = try await inject()
            summary.partitionsThrough = cluster.lab == nil ? "a TCP proxy on the peer ports" : "network namespaces and nftables"
            try await heal()
            await check(&summary)
        } catch {
            await shutdown()
            throw error
        }
        await shutdown()
        return summary
    }

    func shutdown() async {
        for id in paused { if let process = cluster.processes[id] { kill(process.processIdentifier, SIGCONT) } }
        cluster.stopAll()
        for proxy in proxies.values { await proxy.stop() }
        await fleet.stop()
        cluster.lab?.tearDown()
    }

    // MARK: Clients

    /// Registers the engines (model `sim`) and gives that model the sticky policy, before any fault.
    func prepareRouting() async throws {
        let leader = try await cluster.leader()
        for (index, address) in fleet.addresses.enumerated() {
            let json = #"{"id":"e\#(index)","model":"sim","role":"PDFUSION","address":"\#(address)"}"#
            let answer = try await cluster.request(.POST, cluster.endpoint(leader) + "/admin/workers", json: json)
            guard answer.status == 200 else { throw IntegrationError("registering engine e\(index): \(answer)") }
        }
        let policy = #"{"strategies":{"PDFUSION":"sticky"},"sticky_fallback":"least_load"}"#
        let answer = try await cluster.request(.PUT, cluster.endpoint(leader) + "/admin/config/policies/sim", json: policy)
        guard answer.status == 200 else { throw IntegrationError("setting the sticky policy: \(answer)") }
    }

    func client(_ index: Int) async {
        var random = SeededGenerator(seed: options.seed &+ UInt64(index) &* 7_919)
        while !stopping.load(ordering: .relaxed) {
            let members = nodes
            let node = members[random.below(members.count)]
            let key = UInt8(random.below(Int(Self.keys)))
            let choice = random.below(100)
            if choice < 40 {
                let value = nextValue.wrappingAdd(1, ordering: .relaxed).oldValue
                let json = #"{"id":"k\#(key)","model":"m","role":"PDFUSION","address":"127.0.0.1:9","group":"v\#(value)","labels":{"status":"none"}}"#
                await write(key: key, value: value, node: node) { try await self.cluster.request(.POST, self.cluster.endpoint(node) + "/v1/workers", json: json, timeout: Self.clientTimeout) }
            } else if choice < 55 {
                await write(key: key, value: 0, node: node) { try await self.cluster.request(.DELETE, self.cluster.endpoint(node) + "/v1/workers/k\(key)", timeout: Self.clientTimeout) }
            } else if choice < 60 {
                let value = nextValue.wrappingAdd(1, ordering: .relaxed).oldValue
                let json = #"{"sticky_ttl_ms":\#(Self.ttlBase + value)}"#
                await write(key: Self.configKey, value: value, node: node) { try await self.cluster.leaderRequest(.PATCH, "/admin/config/settings", json: json, via: node, timeout: Self.clientTimeout) }
            } else if choice < 85 {
                await read(node: node)
            } else if choice < 90 {
                await readConfig(node: node)
            } else {
                let json = #"{"model":"sim","prompt":"p","session_id":"s\#(random.below(Self.sessions))"}"#
                let status = (try? await cluster.request(.POST, cluster.endpoint(node) + "/v1/route", json: json, timeout: Self.clientTimeout))?.status
                // 503 is also the answer while no leader is reachable (a partition, an election).
                let failed = status == nil || status! >= 500 && status! != 503
                history.state.withLock {
                    $0.routes += 1
                    if failed { $0.routeFailures += 1 }
                    if status == 200 { $0.routesPlaced += 1 }
                }
            }
        }
    }

    func write(key: UInt8, value: UInt64, node: UInt64, _ send: () async throws -> HTTPAnswer) async {
        let invoked = history.tick()
        let answer = try? await send()
        if let answer, answer.status == 404, value == 0 { return }  // nothing to deregister: no command proposed
        if let answer, answer.status == 200, answer.decode(CommandResult.self)?.applied == true {
            let completed = history.tick()
            let at = history.now
            history.state.withLock {
                $0.operations.append(RegisterOperation(key: key, kind: .write(value), invokedAt: invoked, completedAt: completed))
                if value != 0 { $0.acknowledged[value] = key }
                $0.acknowledgedAt.append(at)
            }
        } else if let answer, (400..<500).contains(answer.status), answer.status != 408, answer.status != 421 {
            return  // refused before anything was proposed
        } else {
            history.state.withLock {
                $0.operations.append(RegisterOperation(key: key, kind: .write(value), invokedAt: invoked, completedAt: nil))
                $0.unknown += 1
            }
        }
    }

    func read(node: UInt64) async {
        let invoked = history.tick()
        guard let answer = try? await cluster.request(.GET, cluster.endpoint(node) + "/admin/workers?consistent=true", timeout: Self.clientTimeout), answer.status == 200 else { return }
        let completed = history.tick()
        var values = [UInt8: UInt64]()
        for worker in answer.decode(WorkerList.self)?.workers ?? [] {
            guard worker.id.hasPrefix("k"), let key = UInt8(worker.id.dropFirst()), let value = UInt64(worker.group.dropFirst()) else { continue }
            values[key] = value
        }
        history.state.withLock {
            $0.reads += 1
            for key in 0..<Self.keys {
                $0.operations.append(RegisterOperation(key: key, kind: .read(values[key] ?? 0), invokedAt: invoked, completedAt: completed))
            }
        }
    }

    func readConfig(node: UInt64) async {
        let invoked = history.tick()
        guard let answer = try? await cluster.request(.GET, cluster.endpoint(node) + "/admin/config?consistent=true", timeout: Self.clientTimeout), answer.status == 200,
            let ttl = answer.decode(BalancerConfiguration.self)?.settings.stickyTtlMs.map(UInt64.init)
        else { return }
        let completed = history.tick()
        let value = ttl > Self.ttlBase && ttl < Self.ttlBase + Self.ttlSpan ? ttl - Self.ttlBase : 0
        history.state.withLock {
            $0.reads += 1
            $0.operations.append(RegisterOperation(key: Self.configKey, kind: .read(value), invokedAt: invoked, completedAt: completed))
        }
    }

    /// Samples who claims leadership in which term.
    func monitor() async {
        while !stopping.load(ordering: .relaxed) {
            // Every node, whatever the fault loop is doing to it (dead ones refuse at once,
            // paused ones time out), so this task never reads the loop's own bookkeeping.
            for id in nodes {
                guard let status = try? await ProcessCluster.http.execute(HTTPClientRequest(url: cluster.endpoint(id) + "/admin/cluster"), timeout: .milliseconds(500)),
                    let bytes = try? await status.body.collect(upTo: 1 << 20),
                    let json = try? FulcrumJSON.decode(ClusterStatus.self, from: Data(bytes.readableBytesView)),
                    json.role == "leader"
                else { continue }
                history.state.withLock { _ = $0.leaders[json.term, default: []].insert(id) }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: Faults

    func currentLeader() async -> UInt64? {
        for id in nodes where cluster.processes[id] != nil && !paused.contains(id) {
            if let status = await cluster.status(id), let leader = status.leader, leader != 0 { return leader }
        }
        return nil
    }

    /// Member ids as node `id` knows them, voters and learners; nil when it does not answer.
    func memberIDs(via id: UInt64) async -> [UInt64: Bool]? {
        guard let status = await cluster.status(id) else { return nil }
        var ids: [UInt64: Bool] = [:]
        for member in status.members {
            ids[member.id] = member.voter
        }
        return ids
    }

    /// Removes `removed` (through the leader, `leader` itself possibly), stops it, adds a new node
    /// as a learner and promotes it once caught up. False when the removal did not happen.
    func replace(_ removed: UInt64, via leader: UInt64) async throws -> Bool {
        _ = try? await cluster.request(.DELETE, cluster.endpoint(leader) + "/admin/members/\(removed)")
        // The answer may be lost when the leader removed itself; ask the others.
        let deadline = Date().addingTimeInterval(5)
        var gone = false
        while !gone, Date() < deadline {
            for id in nodes where id != removed && cluster.processes[id] != nil {
                if let ids = await memberIDs(via: id), ids[removed] == nil { gone = true }
            }
            if !gone { try await Task.sleep(for: .milliseconds(100)) }
        }
        guard gone else { return false }
        members.withLock { $0.removeAll { $0 == removed } }
        cluster.kill9(removed)
        let added = spares.removeFirst()
        let address = cluster.peerAddress(added)
        var learner = false
        let addDeadline = Date().addingTimeInterval(15)
        while !learner, Date() < addDeadline {
            if let leader = await currentLeader() {
                _ = try? await cluster.request(.POST, cluster.endpoint(leader) + "/admin/members", json: #"{"id":\#(added),"address":"\#(address)"}"#)
                learner = await memberIDs(via: leader)?[added] != nil
            }
            if !learner { try await Task.sleep(for: .milliseconds(200)) }
        }
        guard learner else { return true }  // a two-node cluster until the next replacement
        try cluster.start(added)
        var voter = false
        while !voter, Date() < addDeadline.addingTimeInterval(15) {
            if let leader = await currentLeader() {
                _ = try? await cluster.request(.POST, cluster.endpoint(leader) + "/admin/members/\(added)/promote")
                voter = await memberIDs(via: leader)?[added] == true
            }
            if !voter { try await Task.sleep(for: .milliseconds(200)) }
        }
        if voter { members.withLock { $0.append(added) } } else { cluster.kill9(added) }
        return true
    }

    /// A leadership transfer or membership change made while a fault holds.
    struct ChangeDuringFault {
        let name: String
        let task: Task<Bool, Never>

        /// Waits for it; its name when it took effect (or may have).
        func finish() async -> String? { await task.value ? name : nil }
    }

    /// One time in three, starts a leadership transfer or a membership change (the leader
    /// removed one time in two) that runs while the fault holds, through whichever node leads
    /// 100–400 ms into it; `spared` (the fault's victims) is never removed nor made leader.
    func changeDuringFault(sparing spared: Set<UInt64>) -> ChangeDuringFault? {
        guard random.below(3) == 0 else { return nil }
        let delay = Duration.milliseconds(100 + random.below(300))
        let transfer = random.below(2) == 0
        let removeLeader = random.below(2) == 0
        let pick = random.below(1_000)
        if transfer {
            return ChangeDuringFault(name: "leadership transfer", task: Task {
                try? await Task.sleep(for: delay)
                guard let leader = await self.currentLeader() else { return false }
                let targets = self.nodes.filter { $0 != leader && !spared.contains($0) }
                guard !targets.isEmpty else { return false }
                let json = #"{"to":\#(targets[pick % targets.count])}"#
                return (try? await self.cluster.request(.POST, self.cluster.endpoint(leader) + "/admin/leader/transfer", json: json)) != nil
            })
        }
        guard nodes.count == options.nodes, !spares.isEmpty else { return nil }
        return ChangeDuringFault(name: removeLeader ? "membership change removing the leader" : "membership change removing a follower", task: Task {
            try? await Task.sleep(for: delay)
            guard let leader = await self.currentLeader(), !spared.contains(leader) else { return false }
            let followers = self.nodes.filter { $0 != leader && !spared.contains($0) }
            let removed = removeLeader || followers.isEmpty ? leader : followers[pick % followers.count]
            return (try? await self.replace(removed, via: leader)) ?? false
        })
    }

    func inject() async throws -> NemesisSummary {
        var summary = NemesisSummary(seed: options.seed)
        let start = Date()
        let tasks = (0..<3).map { index in Task { await self.client(index) } } + [Task { await self.monitor() }]
        var faultStarts: [(kind: String, at: Double)] = []
        while summary.faults < options.faults, Date().timeIntervalSince(start) < options.seconds {
            let leader = await currentLeader()
            let others = nodes.filter { $0 != leader }
            let victim = leader != nil && random.below(3) < 2 ? leader! : nodes[random.below(nodes.count)]
            let holdMilliseconds = 600 + random.below(900)
            let hold = Duration.milliseconds(holdMilliseconds)
            let kind: String
            /// What a change made during the fault did, if one was made.
            var concurrent: String?
            switch random.below(11) {
            case 0, 1:
                kind = victim == leader ? "kill -9 leader" : "kill -9 follower"
                cluster.kill9(victim)
                faultStarts.append((kind, history.now))
                let change = changeDuringFault(sparing: [victim])
                try await Task.sleep(for: hold)
                try cluster.start(victim)
                concurrent = await change?.finish()
            case 2:
                kind = victim == leader ? "SIGSTOP leader" : "SIGSTOP follower"
                guard let process = cluster.processes[victim] else { continue }
                kill(process.processIdentifier, SIGSTOP)
                paused.insert(victim)
                faultStarts.append((kind, history.now))
                let change = changeDuringFault(sparing: [victim])
                try await Task.sleep(for: hold)
                kill(process.processIdentifier, SIGCONT)
                paused.remove(victim)
                concurrent = await change?.finish()
            case 3:
                guard let leader else { continue }
                kind = "partition: leader isolated"
                partitions.split([leader], among: nodes)
                faultStarts.append((kind, history.now))
                let change = changeDuringFault(sparing: [])
                try await Task.sleep(for: hold)
                partitions.heal()
                concurrent = await change?.finish()
            case 4:
                let members = nodes
                var minority = Set<UInt64>()
                while minority.count < (members.count - 1) / 2 { minority.insert(members[random.below(members.count)]) }
                kind = "partition: majority/minority"
                partitions.split(minority, among: members)
                faultStarts.append((kind, history.now))
                let change = changeDuringFault(sparing: [])
                try await Task.sleep(for: hold)
                partitions.heal()
                concurrent = await change?.finish()
            case 5:
                if let leader, random.below(2) == 0 {
                    kind = "partition: leader cannot send"
                    partitions.set(Set(others.map { Partitions.Pair(from: leader, to: $0) }))
                    faultStarts.append((kind, history.now))
                    try await Task.sleep(for: hold)
                    partitions.heal()
                } else {
                    kind = "leadership transfer"
                    let target = others.isEmpty ? nil : others[random.below(others.count)]
                    faultStarts.append((kind, history.now))
                    if let leader, let target {
                        _ = try? await cluster.request(.POST, cluster.endpoint(leader) + "/admin/leader/transfer", json: #"{"to":\#(target)}"#)
                    }
                }
            case 6:
                kind = victim == leader ? "slow fsync on the leader" : "slow fsync on a follower"
                guard (try? await cluster.fault(victim, #"{"fsync_delay_ms":\#(100 + random.below(400))}"#)) != nil else { continue }
                faultStarts.append((kind, history.now))
                let change = changeDuringFault(sparing: [victim])
                try await Task.sleep(for: hold)
                _ = try? await cluster.fault(victim, #"{"fsync_delay_ms":0}"#)
                concurrent = await change?.finish()
            case 7:
                let mode = random.below(2) == 0 ? "full" : "io_error"
                kind = "disk \(mode == "full" ? "full" : "I/O errors") on \(victim == leader ? "the leader" : "a follower")"
                guard (try? await cluster.fault(victim, #"{"disk":"\#(mode)"}"#)) != nil else { continue }
                faultStarts.append((kind, history.now))
                // It stops at its next log write; an idle one is given its disk back.
                if try await cluster.waitForExit(victim, timeout: Double(holdMilliseconds) / 1000) == nil {
                    _ = try? await cluster.fault(victim, #"{"disk":"healthy"}"#)
                }
                _ = try await cluster.waitForExit(victim, timeout: 0.2)
                if cluster.processes[victim] == nil { try cluster.start(victim) }
            case 8:
                kind = victim == leader ? "power loss of the leader" : "power loss of a follower"
                faultStarts.append((kind, history.now))
                try await cluster.powerLoss(victim)
                try await Task.sleep(for: hold)
                try cluster.start(victim)
            case 9:
                let jump = Int64(60_000 + random.below(10_740_000)) * (random.below(2) == 0 ? 1 : -1)
                kind = "wall clock jump"
                guard (try? await cluster.fault(victim, #"{"clock_jump_ms":\#(jump)}"#)) != nil else { continue }
                faultStarts.append((kind, history.now))
            default:
                guard let leader, nodes.count == options.nodes, !spares.isEmpty else { continue }
                let removed = random.below(2) == 0 || others.isEmpty ? leader : others[random.below(others.count)]
                kind = removed == leader ? "membership: leader removed, node added" : "membership: follower removed, node added"
                guard try await replace(removed, via: leader) else { continue }
                faultStarts.append((kind, history.now))
            }
            summary.faults += 1
            summary.faultsByKind[kind, default: 0] += 1
            if let concurrent { summary.faultsByKind["during a fault: \(concurrent)", default: 0] += 1 }
            try await Task.sleep(for: .milliseconds(300 + random.below(700)))
        }
        try await Task.sleep(for: .seconds(2))
        stopping.store(true, ordering: .relaxed)
        for task in tasks { await task.value }
        summary.elapsed = Date().timeIntervalSince(start)
        let acknowledgedAt = history.state.withLock { $0.acknowledgedAt.sorted() }
        for fault in faultStarts {
            let next = acknowledgedAt.first { $0 >= fault.at } ?? history.now
            summary.longestUnavailability[fault.kind] = max(summary.longestUnavailability[fault.kind] ?? 0, next - fault.at)
        }
        return summary
    }

    func heal() async throws {
        partitions.heal()
        for id in paused { if let process = cluster.processes[id] { kill(process.processIdentifier, SIGCONT) } }
        paused = []
        for id in nodes where cluster.processes[id] == nil { try cluster.start(id) }
        try await cluster.waitUntilReady(timeout: 30)
    }

    // MARK: Checks

    func check(_ summary: inout NemesisSummary) async {
        let state = history.state.withLock { $0 }
        summary.operations = state.operations.count
        summary.acknowledgedWrites = state.operations.filter { operation in
            guard case .write = operation.kind else { return false }
            return operation.completedAt != nil
        }.count
        summary.unknownOutcomes = state.unknown
        summary.reads = state.reads
        summary.routes = state.routes
        summary.routeFailures = state.routeFailures
        summary.routesPlaced = state.routesPlaced
        for (term, leaders) in state.leaders where leaders.count > 1 {
            summary.violations.append("term \(term) had leaders \(leaders.sorted())")
        }
        switch LinearizabilityChecker.check(state.operations) {
        case .linearizable: break
        case .violation(let violation): summary.violations.append(violation.description)
        case .inconclusive(let key): summary.violations.append("linearizability search ran out of budget on key \(key)")
        }
        // Replicas converge: the same fingerprint at the same applied index.
        var converged = false
        var convergedIndex: UInt64?
        let deadline = Date().addingTimeInterval(30)
        var last = ""
        while !converged, Date() < deadline {
            var digests: [(UInt64, String)] = []
            for id in nodes {
                guard let answer = try? await cluster.request(.GET, cluster.endpoint(id) + "/admin/state"), answer.status == 200,
                    let digest = answer.decode(StateDigest.self)
                else { continue }
                digests.append((digest.appliedIndex, digest.fingerprint))
            }
            last = digests.map { "\($0.0):\($0.1)" }.joined(separator: " ")
            converged = digests.count == nodes.count && Set(digests.map(\.0)).count == 1 && Set(digests.map(\.1)).count == 1
            if converged { convergedIndex = digests[0].0 }
            if !converged { try? await Task.sleep(for: .milliseconds(200)) }
        }
        if !converged { summary.violations.append("replicas did not converge to one state: \(last)") }
        // The logs, read from disk after a clean stop.
        for id in nodes { cluster.terminate(id) }
        var logs: [UInt64: PersistentState] = [:]
        for id in nodes {
            do {
                logs[id] = try RaftDatabase(path: "\(cluster.root)/node-\(id)/raft.sqlite", clusterID: "it").load()
            } catch {
                summary.violations.append("node \(id)'s log does not load: \(error)")
            }
        }
        summary.violations += Self.checkLogs(logs, acknowledged: state.acknowledged, committed: convergedIndex)
    }

    /// Log Matching across nodes, committed prefixes that agree, every acknowledged registration
    /// committed on every node, and none committed twice. `committed` is the index every replica
    /// has applied (the persisted commit index may lag it); without it, the highest persisted one.
    static func checkLogs(_ logs: [UInt64: PersistentState], acknowledged: [UInt64: UInt8], committed: UInt64? = nil) -> [String] {
        var violations: [String] = []
        let ids = logs.keys.sorted()
        let bound = committed ?? logs.values.map(\.hardState.commit).max() ?? 0
        func entry(_ state: PersistentState, _ index: UInt64) -> Entry? {
            let first = state.snapshot.metadata.index + 1
            guard index >= first, index < first + UInt64(state.entries.count) else { return nil }
            return state.entries[Int(index - first)]
        }
        for (position, a) in ids.enumerated() {
            for b in ids.dropFirst(position + 1) {
                let left = logs[a]!, right = logs[b]!
                for e in left.entries {
                    guard let other = entry(right, e.index) else { continue }
                    if e.term == other.term, e.data != other.data || e.kind != other.kind {
                        violations.append("nodes \(a) and \(b) hold different entries at index \(e.index) of term \(e.term)")
                    } else if e.index <= bound, e.term != other.term {
                        violations.append("nodes \(a) and \(b) disagree on committed index \(e.index)")
                    }
                }
            }
        }
        for id in ids {
            let log = logs[id]!
            let last = log.snapshot.metadata.index + UInt64(log.entries.count)
            if last < bound { violations.append("node \(id)'s log ends at \(last), before the committed index \(bound)") }
            var seen: [UInt64: Int] = [:]
            for e in log.entries where e.index <= bound && e.kind == .normal && !e.data.isEmpty {
                guard let command = ClusterLog.applicationCommand(e.data), let envelope = try? CommandEnvelope(decoding: command) else { continue }
                for value in registeredValues(envelope.command) { seen[value, default: 0] += 1 }
            }
            for (value, count) in seen where count > 1 { violations.append("node \(id) committed write v\(value) \(count) times") }
            let missing = acknowledged.keys.filter { seen[$0] == nil }
            if !missing.isEmpty {
                violations.append("node \(id) lacks \(missing.count) acknowledged writes (e.g. v\(missing.sorted().first!))")
            }
        }
        return violations
    }

    static func registeredValues(_ command: BalancerCommand) -> [UInt64] {
        switch command {
        case .registerWorker(let worker):
            guard worker.id.hasPrefix("k"), worker.group.hasPrefix("v"), let value = UInt64(worker.group.dropFirst()) else { return [] }
            return [value]
        case .setSettings(let settings):
            let ttl = settings.stickyTTLMilliseconds
            return ttl > ttlBase && ttl < ttlBase + ttlSpan ? [ttl - ttlBase] : []
        case .batch(let commands):
            return commands.flatMap(registeredValues)
        default:
            return []
        }
    }
}
