import Balancer
import Cluster
import Foundation
import NIOCore
public import Hummingbird
public import Serving
import FulcrumAPI

extension ClusterStatus {
    init(_ status: NodeStatus) {
        self.init(
            id: status.id, clusterId: status.clusterID, role: status.role, term: status.term, leader: status.leader,
            leaderAddress: status.leaderAddress, commitIndex: status.commitIndex, appliedIndex: status.appliedIndex,
            lastIndex: status.lastIndex, firstIndex: status.firstIndex,
            members: status.members.map { Member(id: $0.id, address: $0.address, voter: $0.voter, match: $0.match) }
        )
    }
}

/// Cluster administration over HTTP: status, membership, leadership, snapshots, and the worker
/// registry's replicated commands. Operations that need the leader answer 421 on a follower,
/// naming the leader; `fulcrumctl` follows that to the leader's endpoint.
public struct AdminAPI: Sendable {
    let proposer: CommandProposer
    let workerNetworks: [CIDR]
    /// With `fail_open`, a node without a leader still serves (degraded), so it stays ready.
    let failOpen: Bool

    var node: ClusterNode<BalancerMachine> { proposer.node }

    public init(proposer: CommandProposer, workerNetworks: [CIDR] = [], failOpen: Bool = false) {
        self.proposer = proposer
        self.workerNetworks = workerNetworks
        self.failOpen = failOpen
    }

    /// A node is ready when it knows a leader and has applied all but this many committed entries.
    static let maxReadyLag: UInt64 = 1_000

    /// Liveness and readiness: no key, no scope.
    public func addProbes(to router: Hummingbird.Router<FulcrumRequestContext>) {
        let node = node
        router.get("healthz") { _, _ in HealthAnswer() }
        router.get("version") { _, _ in VersionAnswer(version: ServerMetrics.version, swiftVersion: ServerMetrics.swiftVersion) }
        let failOpen = failOpen
        router.get("readyz") { _, _ -> HealthAnswer in
            let (leadership, leaderEndpoint, workers) = await node.withMachine { machine, leadership in
                (leadership, leadership.leader.flatMap { machine.state.nodeEndpoints[$0] }, machine.state.slotByID.count)
            }
            guard let reason = Self.unreadiness(leadership, leaderEndpoint: leaderEndpoint) else { return HealthAnswer() }
            // Without a leader a fail-open node still routes on its replicated state: it stays
            // in the Service (degraded) as long as that state holds workers to route to.
            if failOpen, reason.code == "no_leader", workers > 0 { return HealthAnswer(status: "degraded") }
            throw reason
        }
    }

    /// Why this node cannot serve yet (no leader, the leader's endpoint unknown, too far
    /// behind), or nil when it is ready. `/readyz` and FlexLB's master info share it.
    static func unreadiness(_ leadership: Leadership, leaderEndpoint: String?) -> APIError? {
        guard let leader = leadership.leader else { return APIError.noLeader() }
        guard leadership.isLeader || leaderEndpoint != nil else {
            return APIError.noLeader("node \(leader) leads but has not announced its HTTP endpoint yet")
        }
        let lag = leadership.commitIndex - min(leadership.commitIndex, leadership.appliedIndex)
        guard lag <= maxReadyLag else {
            return APIError(.serviceUnavailable, code: "catching_up", "\(lag) committed entries not applied yet", retryAfter: 1)
        }
        return nil
    }

    /// `/admin/*`, on the admin-scoped group.
    public func addRoutes(to router: RouterGroup<FulcrumRequestContext>) {
        let admin = router.group("admin")
        admin.get("cluster") { _, _ -> ClusterStatus in await clusterStatus() }
        admin.get("state") { _, _ -> StateDigest in
            await node.withMachine { machine, leadership in
                StateDigest(
                    appliedIndex: leadership.appliedIndex, appliedCommands: machine.state.appliedCommands,
                    fingerprint: String(machine.state.fingerprint, radix: 16), workers: machine.state.workers.count
                )
            }
        }
        admin.get("members") { _, _ -> ClusterStatus in await clusterStatus() }
        admin.put("members/:id") { request, context -> ClusterStatus in
            let id = try memberID(context)
            let body = try await request.decode(as: UpdateMember.self, context: context)
            guard let text = body.address, isPeerAddress(text) else {
                throw APIError.badRequest(field: "address", "host:port of the member's peer listener is required")
            }
            try await cluster { try await node.updateAddress(id, peerAddress: text) }
            return await clusterStatus()
        }
        admin.post("members") { request, context -> ClusterStatus in
            let body = try await request.decode(as: AddMember.self, context: context)
            guard let id = body.id, id > 0 else { throw APIError.badRequest(field: "id", "a positive node id is required") }
            guard let text = body.address, isPeerAddress(text) else {
                throw APIError.badRequest(field: "address", "host:port of the new node's peer listener is required")
            }
            try await cluster { try await node.addLearner(id, peerAddress: text) }
            return await clusterStatus()
        }
        admin.post("members/:id/promote") { _, context -> ClusterStatus in
            let id = try memberID(context)
            try await cluster { try await node.promote(id) }
            return await clusterStatus()
        }
        admin.delete("members/:id") { _, context -> ClusterStatus in
            let id = try memberID(context)
            try await cluster { try await node.remove(id) }
            return await clusterStatus()
        }
        admin.post("leader/transfer") { request, context -> LeaderAnswer in
            let body = try await decodeOptional(LeaderTransfer.self, request, context) ?? LeaderTransfer()
            let leader = try await cluster { try await node.transferLeadership(to: body.to) }
            return LeaderAnswer(leader: leader)
        }
        admin.post("snapshot") { _, _ -> SnapshotAnswer in
            SnapshotAnswer(index: try await cluster { try await node.snapshotNow() })
        }
        // The node's state as a snapshot file (`fulcrumctl snapshot save`).
        admin.get("snapshot/archive") { _, _ -> Response in
            let archive: SnapshotArchive
            do {
                archive = try await node.archive()
            } catch let error as ClusterError {
                throw APIError(error)
            }
            return Response(
                status: .ok,
                headers: [.contentType: "application/octet-stream", .contentDisposition: "attachment; filename=\"fulcrum-\(archive.index).snapshot\""],
                body: .init(byteBuffer: ByteBuffer(bytes: archive.encoded()))
            )
        }
        admin.get("workers") { request, _ -> WorkerList in
            if request.uri.queryParameters.get("consistent") == "true" {
                try await cluster { try await node.readBarrier() }
            }
            let views = await node.withMachine { machine, _ in
                machine.state.workers.map {
                    var view = WorkerView(
                        id: $0.id, model: $0.model, role: $0.role.name, address: $0.address, group: $0.group,
                        health: $0.health.description, draining: $0.draining, circuit: $0.circuit.description, labels: $0.labels,
                        runningRequests: $0.load.runningRequests, waitingRequests: $0.load.waitingRequests, kvUsage: $0.load.kvUsage,
                        cores: $0.resources.coreLoads.count, memoryFreeBytes: $0.resources.memoryFreeBytes, gpus: $0.resources.gpus.count
                    )
                    view.cachedBlocks = machine.state.cachedBlockCount(workerID: $0.id)
                    view.reservedRequests = machine.state.slotByID[$0.id].map { machine.router.ledger.inFlight(slot: $0) } ?? 0
                    return view
                }
            }
            return WorkerList(workers: views)
        }
        admin.post("workers") { request, context -> CommandResult in
            var request = request
            let worker = try await request.decodeJSON(WorkerRegistration.self, context: context).worker(allowedNetworks: workerNetworks)
            return CommandResult(result: try await propose(.registerWorker(worker)))
        }
        admin.delete("workers/:id") { _, context -> CommandResult in
            guard let id = context.parameters.get("id"), !id.isEmpty else { throw APIError.badRequest(field: "id", "missing") }
            return CommandResult(result: try await propose(.deregisterWorker(id: id)))
        }
    }

    /// The node's view of the cluster, with each member's HTTP endpoint from the replicated state.
    private func clusterStatus() async -> ClusterStatus {
        let status = await node.status()
        let endpoints = await node.withMachine { machine, _ in machine.state.nodeEndpoints }
        var answer = ClusterStatus(status)
        for index in answer.members.indices { answer.members[index].endpoint = endpoints[answer.members[index].id] }
        return answer
    }

    private func propose(_ command: BalancerCommand) async throws -> String {
        try await cluster { try await proposer.propose(command).description }
    }

    private func memberID(_ context: FulcrumRequestContext) throws -> UInt64 {
        guard let id = context.parameters.get("id", as: UInt64.self), id > 0 else {
            throw APIError.badRequest(field: "id", "member id must be a positive integer")
        }
        return id
    }

    private func decodeOptional<Value: Decodable>(
        _ type: Value.Type, _ request: Request, _ context: FulcrumRequestContext
    ) async throws -> Value? {
        var request = request
        let body = try await request.collectBody(upTo: context.maxUploadSize)
        guard body.readableBytes > 0 else { return nil }
        do {
            return try context.requestDecoder.decode(type, from: Data(body.readableBytesView))
        } catch {
            throw APIError.badRequest(field: "body", "not valid JSON for this request: \(error)")
        }
    }

    /// Runs a cluster operation, turning its errors into API errors.
    private func cluster<Value: Sendable>(_ body: () async throws -> Value) async throws -> Value {
        do {
            return try await body()
        } catch let error as ClusterError {
            throw APIError(error)
        }
    }
}
