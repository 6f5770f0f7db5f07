import Balancer
import Cluster
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Serving
import FulcrumAPI

/// Worker lifecycle for engines and `fulcrum agent`: register (or update), heartbeat with host
/// resources, deregister. Any node accepts them; followers forward to the leader.
struct WorkerAPI: Sendable {
    let link: LeaderLink
    let duties: LeaderDuties
    let proposer: CommandProposer
    /// Networks worker addresses must lie in (`worker_cidrs`); empty allows any host.
    let workerNetworks: [CIDR]

    func addRoutes(to router: RouterGroup<FulcrumRequestContext>) {
        router.post("v1/workers") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: context.maxUploadSize)
            let worker = try decodeJSONBody(WorkerRegistration.self, Data(body.readableBytesView), decoder: context.requestDecoder).worker(allowedNetworks: workerNetworks)
            return try await link.leaderOrForward(request, body: body) {
                try context.responseEncoder.encode(CommandResult(result: try await propose(.registerWorker(worker))), from: request, context: context)
            }
        }
        router.delete("v1/workers/:id") { request, context -> Response in
            let id = try workerID(context)
            return try await link.leaderOrForward(request, body: nil) {
                try await requireWorker(id)
                return try context.responseEncoder.encode(CommandResult(result: try await propose(.deregisterWorker(id: id))), from: request, context: context)
            }
        }
        router.post("v1/workers/:id/heartbeat") { request, context -> Response in
            var request = request
            let id = try workerID(context)
            let body = try await request.collectBody(upTo: context.maxUploadSize)
            let beat = try decodeJSONBody(Heartbeat.self, Data(body.readableBytesView), decoder: context.requestDecoder)
            let resources = try Self.resources(beat.resources)
            let load = try beat.load.map { body in
                do { return try body.engineLoad(now: duties.clock.now()) } catch let error as StatusParseError {
                    throw APIError.badRequest(field: "load" + (error.field.map { "." + $0 } ?? ""), error.description)
                }
            }
            return try await link.leaderOrForward(request, body: body) {
                try await requireWorker(id)
                let location = beat.location.map { GeoLocation(latitude: $0.latitude, longitude: $0.longitude) }
                let term = await link.node.leadership().term
                guard await duties.heartbeat(workerID: id, resources: resources, location: location, load: load, term: term) else {
                    throw APIError.noLeader("leadership changed; send the heartbeat again")
                }
                return try context.responseEncoder.encode(Accepted(), from: request, context: context)
            }
        }
    }

    static func resources(_ body: Heartbeat.Resources?) throws -> WorkerResources {
        guard let body else { return WorkerResources() }
        let cores = body.coreLoads ?? []
        guard cores.count <= 4_096 else { throw APIError.badRequest(field: "resources.core_loads", "at most 4096 cores") }
        if let index = cores.firstIndex(where: { !($0 >= 0 && $0 <= 1) }) {
            throw APIError.badRequest(field: "resources.core_loads[\(index)]", "must be in [0, 1]")
        }
        let gpus = body.gpus ?? []
        guard gpus.count <= 64 else { throw APIError.badRequest(field: "resources.gpus", "at most 64 GPUs") }
        if let index = gpus.firstIndex(where: { !($0.utilization >= 0 && $0.utilization <= 1) }) {
            throw APIError.badRequest(field: "resources.gpus[\(index)].utilization", "must be in [0, 1]")
        }
        func bytes(_ value: Int64?, _ field: String) throws -> UInt64 {
            guard let value else { return 0 }
            guard value >= 0 else { throw APIError.badRequest(field: "resources.\(field)", "must not be negative, got \(value)") }
            return UInt64(value)
        }
        return WorkerResources(
            coreLoads: cores, memoryTotalBytes: try bytes(body.memoryTotalBytes, "memory_total_bytes"),
            memoryUsedBytes: try bytes(body.memoryUsedBytes, "memory_used_bytes"),
            diskTotalBytes: try bytes(body.diskTotalBytes, "disk_total_bytes"), diskUsedBytes: try bytes(body.diskUsedBytes, "disk_used_bytes"),
            gpus: try gpus.enumerated().map { index, gpu in
                GPUStatus(
                    utilization: gpu.utilization, memoryTotalBytes: try bytes(gpu.memoryTotalBytes, "gpus[\(index)].memory_total_bytes"),
                    memoryUsedBytes: try bytes(gpu.memoryUsedBytes, "gpus[\(index)].memory_used_bytes")
                )
            }
        )
    }

    private func requireWorker(_ id: String) async throws {
        let known = await link.node.withMachine { machine, _ in machine.state.worker(id: id) != nil }
        guard known else { throw APIError(.notFound, code: "unknown_worker", "no worker '\(id)' is registered", field: "id") }
    }

    private func workerID(_ context: FulcrumRequestContext) throws -> String {
        guard let id = context.parameters.get("id"), !id.isEmpty else { throw APIError.badRequest(field: "id", "a worker id is required") }
        return id
    }

    private func propose(_ command: BalancerCommand) async throws -> String {
        do {
            return try await proposer.propose(command).description
        } catch let error as ClusterError {
            throw APIError(error)
        }
    }
}

/// `host:port` with a non-empty host and a port in 1...65535.
enum PeerAddressText {
    static func isValid(_ text: String) -> Bool {
        let (host, port) = splitHostPort(text)
        return !host.isEmpty && host != text && (1...65_535).contains(port) && !host.contains("/") && !host.contains(" ")
    }
}

extension WorkerRegistration {
    /// The host of a ZeroMQ `tcp://HOST:PORT` endpoint (no wildcards: Fulcrum connects to it).
    static func zmqTCPHost(_ endpoint: String) -> String? {
        guard endpoint.hasPrefix("tcp://"), endpoint.utf8.count <= 300 else { return nil }
        let address = String(endpoint.dropFirst(6))
        guard PeerAddressText.isValid(address), !address.contains("*") else { return nil }
        return splitHostPort(address).0
    }

    func worker(allowedNetworks: [CIDR] = []) throws -> Worker {
        guard !id.isEmpty, id.utf8.count <= 256 else { throw APIError.badRequest(field: "id", "must be 1 to 256 bytes") }
        guard !model.isEmpty, model.utf8.count <= 256 else { throw APIError.badRequest(field: "model", "must be 1 to 256 bytes") }
        guard let role = WorkerRole(name: role) else { throw APIError.badRequest(field: "role", "one of VIT, PREFILL, DECODE, PDFUSION") }
        guard address.utf8.count <= 261, PeerAddressText.isValid(address) else { throw APIError.badRequest(field: "address", "expected host:port of the worker") }
        if !allowedNetworks.isEmpty {
            let host = splitHostPort(address).0
            guard allowedNetworks.contains(where: { $0.contains(host) }) else {
                throw APIError.badRequest(field: "address", "\(host) is not an IP address in worker_cidrs")
            }
        }
        if let labels, labels.count > 64 { throw APIError.badRequest(field: "labels", "at most 64 labels") }
        // Everything here is replicated to every node and kept in every snapshot.
        if let group, group.utf8.count > 256 { throw APIError.badRequest(field: "group", "at most 256 bytes") }
        if let (key, value) = labels?.first(where: { $0.key.isEmpty || $0.key.utf8.count > 256 || $0.value.utf8.count > 1_024 }) {
            throw APIError.badRequest(field: "labels.\(key.prefix(64))", "keys must be 1 to 256 bytes and values at most 1024, got \(key.utf8.count) and \(value.utf8.count)")
        }
        if let format = labels?["status"], StatusFormat(rawValue: format) == nil {
            throw APIError.badRequest(field: "labels.status", "one of \(StatusFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var labels = labels ?? [:]
        if let engine {
            guard EngineKind(rawValue: engine) != nil else {
                throw APIError.badRequest(field: "engine", "one of \(EngineKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            // Kept as a label: replicated and shown with the worker like any other.
            labels["engine"] = engine
        } else if let engine = labels["engine"], EngineKind(rawValue: engine) == nil {
            throw APIError.badRequest(field: "labels.engine", "one of \(EngineKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if apiKey != nil || labels["api_key"] != nil {
            throw APIError.badRequest(
                field: apiKey != nil ? "api_key" : "labels.api_key",
                "an engine key is never registered in clear (it would be replicated to every node): put it in engine_keys_file and name it with labels.api_key_ref"
            )
        }
        if let name = labels["api_key_ref"], !EngineKeys.isValidName(name) {
            throw APIError.badRequest(field: "labels.api_key_ref", "expected 1 to 128 letters, digits, '.', '_' or '-'")
        }
        for key in ["bootstrap_port", "grpc_port"] {
            if let text = labels[key], Int(text).map({ (1...65_535).contains($0) }) != true {
                throw APIError.badRequest(field: "labels.\(key)", "expected a port in 1...65535")
            }
        }
        if let kvEvents {
            for (field, endpoint) in [("kv_events.endpoint", kvEvents.endpoint), ("kv_events.replay_endpoint", kvEvents.replayEndpoint)] {
                guard let endpoint else { continue }
                guard let host = Self.zmqTCPHost(endpoint) else {
                    throw APIError.badRequest(field: field, "expected tcp://HOST:PORT")
                }
                if !allowedNetworks.isEmpty && !allowedNetworks.contains(where: { $0.contains(host) }) {
                    throw APIError.badRequest(field: field, "\(host) is not an IP address in worker_cidrs")
                }
            }
            // Kept as labels: replicated, shown with the worker, followed by every node.
            labels["kv_events"] = kvEvents.endpoint
            if let replay = kvEvents.replayEndpoint { labels["kv_events_replay"] = replay } else { labels["kv_events_replay"] = nil }
        } else {
            for key in ["kv_events", "kv_events_replay"] {
                if let endpoint = labels[key], Self.zmqTCPHost(endpoint) == nil {
                    throw APIError.badRequest(field: "labels.\(key)", "expected tcp://HOST:PORT")
                }
            }
        }
        var capacityValue = WorkerCapacity()
        if let capacity {
            for (field, value) in [("kv_blocks", capacity.kvBlocks), ("block_size", capacity.blockSize), ("max_batch", capacity.maxBatch), ("max_requests", capacity.maxRequests)] {
                if let value, value < 0 { throw APIError.badRequest(field: "capacity.\(field)", "must not be negative, got \(value)") }
            }
            if let size = capacity.blockSize, size == 0 { throw APIError.badRequest(field: "capacity.block_size", "must be positive") }
            if let speed = capacity.prefillTokensPerSecond, !(speed > 0) {
                throw APIError.badRequest(field: "capacity.prefill_tokens_per_second", "must be positive")
            }
            capacityValue = WorkerCapacity(
                kvBlocks: capacity.kvBlocks ?? 0, blockSize: capacity.blockSize ?? 16, maxBatch: capacity.maxBatch ?? 256,
                maxRequests: capacity.maxRequests ?? 0, prefillTokensPerSecond: capacity.prefillTokensPerSecond ?? 10_000
            )
        }
        return Worker(
            id: id, model: model, role: role, address: address, group: group ?? "", labels: labels,
            capacity: capacityValue, location: location.map { GeoLocation(latitude: $0.latitude, longitude: $0.longitude) }
        )
    }
}
