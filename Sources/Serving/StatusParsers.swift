public import Balancer
public import FulcrumAPI
import Foundation

/// How the leader learns a worker's load; chosen by the worker's `status` label.
public enum StatusFormat: String, Sendable, CaseIterable {
    /// `GET /status`, Fulcrum's JSON (see `Docs/api.md`).
    case native
    /// `GET /metrics`, vLLM's Prometheus text.
    case vllm
    /// `GET /v1/loads?include=core`, SGLang's JSON.
    case sglang
    /// `GET /get_load`, the JSON of SGLang releases before `/v1/loads` (deprecated upstream:
    /// current releases log a warning per call).
    case sglangGetLoad = "sglang-get-load"
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
        case .sglang: "/v1/loads?include=core"
        case .sglangGetLoad: "/get_load"
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
        case .sglang, .sglangGetLoad: return try sglang(body, now: now)
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
        for line in text.split(whereSeparator: \.isNewline) {
            guard let (name, value) = PrometheusText.sample(line), value.isFinite, value >= 0 else { continue }
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

    /// SGLang's load, either shape:
    /// - `GET /v1/loads` (sgl-project/sglang `python/sglang/srt/entrypoints/v1_loads.py`):
    ///   `{"loads": [...]}`, one entry per data-parallel rank with `num_running_reqs`,
    ///   `num_waiting_reqs`, KV usage as `num_used_tokens` of `max_total_num_tokens` (or the
    ///   fraction `token_usage`), and prompt tokens waiting as `num_waiting_uncached_tokens`, or
    ///   else `num_total_tokens` less `num_used_tokens`;
    /// - `GET /get_load` (older releases): an object or a list per rank with `num_reqs` —
    ///   running *and* waiting — `num_waiting_reqs` and `num_tokens` (prompt tokens waiting).
    ///
    /// Ranks are summed, and a waiting request is counted once, as waiting. Every value is
    /// summed as a double and clamped once, so no rank's number, however absurd, can overflow.
    public static func sglang(_ body: [UInt8], now: Milliseconds) throws -> EngineLoad {
        let json = try JSONSerialization.jsonObject(with: Data(body))
        func number(_ rank: [String: Any], _ key: String) -> Double? {
            guard let value = rank[key] as? NSNumber, value.doubleValue.isFinite, value.doubleValue >= 0 else { return nil }
            return value.doubleValue
        }
        func sum(_ ranks: [[String: Any]], _ value: ([String: Any]) -> Double) -> Double { ranks.reduce(0) { $0 + value($1) } }
        if let object = json as? [String: Any], let loads = object["loads"] {
            guard let ranks = loads as? [[String: Any]], ranks.contains(where: { $0["num_running_reqs"] != nil }) else {
                throw StatusParseError(field: "loads", "expected a list of ranks with num_running_reqs")
            }
            let used = sum(ranks) { number($0, "num_used_tokens") ?? 0 }
            let capacity = sum(ranks) { number($0, "max_total_num_tokens") ?? 0 }
            let usages = ranks.compactMap { number($0, "token_usage") }
            let fraction: Double? = capacity > 0 ? used / capacity : usages.isEmpty ? nil : usages.reduce(0, +) / Double(usages.count)
            let pending = sum(ranks) { rank in
                number(rank, "num_waiting_uncached_tokens") ?? max(0, (number(rank, "num_total_tokens") ?? 0) - (number(rank, "num_used_tokens") ?? 0))
            }
            return EngineLoad(
                runningRequests: Bounds.count(sum(ranks) { number($0, "num_running_reqs") ?? 0 }, Bounds.requests),
                waitingRequests: Bounds.count(sum(ranks) { number($0, "num_waiting_reqs") ?? 0 }, Bounds.requests),
                queuedPrefillTokens: Bounds.count(pending, Bounds.tokens),
                kvBlocksUsed: fraction.map { Int((Bounds.fraction($0) * 10_000).rounded()) } ?? 0, kvBlocksTotal: fraction == nil ? 0 : 10_000,
                reportedAt: now
            )
        }
        let ranks: [[String: Any]]
        if let list = json as? [[String: Any]] { ranks = list }
        else if let object = json as? [String: Any] { ranks = [object] }
        else { throw StatusParseError(description: "expected an object or a list of objects") }
        guard ranks.contains(where: { $0["num_reqs"] != nil || $0["num_running_reqs"] != nil || $0["load"] != nil }) else {
            throw StatusParseError(description: "no num_reqs in the response")
        }
        func running(_ rank: [String: Any]) -> Double {
            if let running = number(rank, "num_running_reqs") { return running }
            if let all = number(rank, "num_reqs") { return max(0, all - (number(rank, "num_waiting_reqs") ?? 0)) }
            return number(rank, "load") ?? 0
        }
        return EngineLoad(
            runningRequests: Bounds.count(sum(ranks, running), Bounds.requests),
            waitingRequests: Bounds.count(sum(ranks) { number($0, "num_waiting_reqs") ?? 0 }, Bounds.requests),
            queuedPrefillTokens: Bounds.count(sum(ranks) { number($0, "num_tokens") ?? 0 }, Bounds.tokens),
            reportedAt: now
        )
    }
}

/// Samples of the Prometheus text format (version 0.0.4): `name{label="value",...} value
/// [timestamp]`. Label values may hold spaces, braces, quotes and commas (escaped as `\"`
/// and `\\`); values are floats as Go writes them (`1e+06`, `NaN`, `+Inf`).
enum PrometheusText {
    /// The metric name and value of one line; nil for comments, blank and malformed lines.
    static func sample(_ line: Substring) -> (name: Substring, value: Double)? {
        let bytes = line.utf8
        var index = bytes.startIndex
        while index < bytes.endIndex, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") { index = bytes.index(after: index) }
        guard index < bytes.endIndex, bytes[index] != UInt8(ascii: "#") else { return nil }
        let nameStart = index
        while index < bytes.endIndex, bytes[index] != UInt8(ascii: "{"), bytes[index] != UInt8(ascii: " "), bytes[index] != UInt8(ascii: "\t") {
            index = bytes.index(after: index)
        }
        let name = line[nameStart..<index]
        guard !name.isEmpty else { return nil }
        if index < bytes.endIndex, bytes[index] == UInt8(ascii: "{") {
            // Skip the label set: a closing brace counts only outside a quoted value.
            var quoted = false
            var escaped = false
            index = bytes.index(after: index)
            while index < bytes.endIndex {
                let byte = bytes[index]
                if escaped { escaped = false }
                else if quoted && byte == UInt8(ascii: "\\") { escaped = true }
                else if byte == UInt8(ascii: "\"") { quoted.toggle() }
                else if !quoted && byte == UInt8(ascii: "}") { break }
                index = bytes.index(after: index)
            }
            guard index < bytes.endIndex else { return nil }
            index = bytes.index(after: index)
        }
        let rest = line[index...].split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = rest.first, let value = Double(first) else { return nil }
        return (name, value)
    }
}
