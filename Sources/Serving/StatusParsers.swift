public import Balancer
public import FulcrumAPI
import Foundation

/// How the leader learns a worker's load; chosen by the worker's `status` label.
public enum StatusFormat: String, Sendable, CaseIterable {
    /// `GET /status`, Fulcrum's JSON (see `Docs/api.md`).
    case native
    /// `GET /metrics`, vLLM's Prometheus text.
    case vllm
    /// `GET /get_load`, SGLang's JSON.
    case sglang
    /// rtp-llm's engine gRPC on the HTTP port + 1, as FlexLB polls it: `RpcService.GetWorkerStatus`
    /// every round, `GetCacheStatus` every `engine_cache_interval_ms` on PREFILL and PDFUSION.
    case rtpLLM = "rtp-llm"
    /// A TCP connect only: health, no load.
    case tcp
    /// No probes: the worker is trusted as registered (and pushes heartbeats).
    case none

    public var path: String? {
        switch self {
        case .native: "/status"
        case .vllm: "/metrics"
        case .sglang: "/get_load"
        case .rtpLLM, .tcp, .none: nil
        }
    }

    /// The worker's `status` label, else its engine's own status source (the `engine` label set
    /// at registration), else Fulcrum's native format.
    public init(worker: Worker) {
        if let format = worker.labels["status"].flatMap(StatusFormat.init(rawValue:)) {
            self = format
        } else {
            self = worker.labels["engine"].flatMap(EngineKind.init(rawValue:))?.statusFormat ?? .native
        }
    }
}

/// The engine behind a worker, set at registration (`"engine"`); it chooses how the leader
/// reads the worker's state.
public enum EngineKind: String, Sendable, CaseIterable {
    /// Fulcrum's simulator dialect (`GET /status`).
    case fulcrum
    case vllm
    case sglang
    case rtpLLM = "rtp-llm"

    public var statusFormat: StatusFormat {
        switch self {
        case .fulcrum: .native
        case .vllm: .vllm
        case .sglang: .sglang
        case .rtpLLM: .rtpLLM
        }
    }
}

public struct StatusParseError: Error, CustomStringConvertible {
    public var description: String
    /// The field at fault, when one is.
    public var field: String?
    public init(description: String) { self.description = description }
    public init(field: String, _ message: String) {
        self.field = field
        description = "\(field): \(message)"
    }
}

public enum StatusParser {
    public static func parse(_ format: StatusFormat, _ body: [UInt8], now: Milliseconds) throws -> EngineLoad? {
        switch format {
        case .native: return try native(body, now: now)
        case .vllm: return try vllm(String(decoding: body, as: UTF8.self), now: now)
        case .sglang: return try sglang(body, now: now)
        case .rtpLLM, .tcp, .none: return nil
        }
    }

    public static func native(_ body: [UInt8], now: Milliseconds) throws -> EngineLoad {
        return try FulcrumJSON.decoder.decode(EngineStatus.self, from: Data(body)).engineLoad(now: now)
    }
}

extension EngineStatus {
    public func engineLoad(now: Milliseconds) throws(StatusParseError) -> EngineLoad {
        let status = self
        let counts: [(String, Int?, Int)] = [
            ("running_requests", status.runningRequests, Bounds.requests), ("waiting_requests", status.waitingRequests, Bounds.requests),
            ("queued_prefill_tokens", status.queuedPrefillTokens, Bounds.tokens), ("kv_blocks_used", status.kvBlocksUsed, Bounds.blocks),
            ("kv_blocks_total", status.kvBlocksTotal, Bounds.blocks),
        ]
        for (field, value, limit) in counts where !(0...limit).contains(value ?? 0) {
            throw StatusParseError(field: field, "must be in 0...\(limit), got \(value ?? 0)")
        }
        if let step = status.stepLatencyMs, !(0...Bounds.stepMilliseconds).contains(step) {
            throw StatusParseError(field: "step_latency_ms", "must be in 0...\(Int(Bounds.stepMilliseconds)), got \(step)")
        }
        return EngineLoad(
            runningRequests: status.runningRequests ?? 0, waitingRequests: status.waitingRequests ?? 0,
            queuedPrefillTokens: status.queuedPrefillTokens ?? 0, kvBlocksUsed: status.kvBlocksUsed ?? 0,
            kvBlocksTotal: status.kvBlocksTotal ?? 0, stepLatencyMilliseconds: status.stepLatencyMs ?? 0, reportedAt: now
        )
    }
}

extension StatusParser {

    /// vLLM's `/metrics`: `vllm:num_requests_running`, `vllm:num_requests_waiting` and the KV
    /// usage fraction (`vllm:kv_cache_usage_perc`, formerly `vllm:gpu_cache_usage_perc`), summed
    /// over label sets. KV usage is reported as used/total out of 10,000.
    public static func vllm(_ text: String, now: Milliseconds) throws -> EngineLoad {
        var running = 0.0, waiting = 0.0, usage: Double?
        var seen = false
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2 else { continue }
            let name = parts[0].split(separator: "{", maxSplits: 1)[0]
            guard let value = Double(parts[1]), value.isFinite, value >= 0 else { continue }
            switch name {
            case "vllm:num_requests_running": running += value; seen = true
            case "vllm:num_requests_waiting": waiting += value; seen = true
            case "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc": usage = max(usage ?? 0, value); seen = true
            default: continue
            }
        }
        guard seen else { throw StatusParseError(description: "no vllm:num_requests_* metrics in the response") }
        let fraction = min(1, usage ?? 0)
        return EngineLoad(
            runningRequests: Bounds.count(running, Bounds.requests), waitingRequests: Bounds.count(waiting, Bounds.requests),
            kvBlocksUsed: usage == nil ? 0 : Int((fraction * 10_000).rounded()), kvBlocksTotal: usage == nil ? 0 : 10_000,
            reportedAt: now
        )
    }

    /// SGLang's `/get_load`: one object or a list per data-parallel rank, with `num_reqs`
    /// (running), `num_waiting_reqs` and `num_tokens`; ranks are summed.
    public static func sglang(_ body: [UInt8], now: Milliseconds) throws -> EngineLoad {
        let json = try JSONSerialization.jsonObject(with: Data(body))
        let ranks: [[String: Any]]
        if let list = json as? [[String: Any]] { ranks = list }
        else if let object = json as? [String: Any] { ranks = [object] }
        else { throw StatusParseError(description: "expected an object or a list of objects") }
        // Summed as doubles and clamped once: no rank's value, however absurd, can overflow.
        func number(_ rank: [String: Any], _ keys: [String]) -> Double {
            for key in keys { if let value = rank[key] as? NSNumber, value.doubleValue >= 0 { return value.doubleValue } }
            return 0
        }
        guard ranks.contains(where: { $0["num_reqs"] != nil || $0["num_running_reqs"] != nil || $0["load"] != nil }) else {
            throw StatusParseError(description: "no num_reqs in the response")
        }
        return EngineLoad(
            runningRequests: Bounds.count(ranks.reduce(0) { $0 + number($1, ["num_reqs", "num_running_reqs", "load"]) }, Bounds.requests),
            waitingRequests: Bounds.count(ranks.reduce(0) { $0 + number($1, ["num_waiting_reqs"]) }, Bounds.requests),
            queuedPrefillTokens: Bounds.count(ranks.reduce(0) { $0 + number($1, ["num_tokens"]) }, Bounds.tokens),
            reportedAt: now
        )
    }
}
