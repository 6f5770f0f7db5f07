public import AsyncHTTPClient
import Foundation
import FulcrumAPI
import NIOCore
public import NIOHTTP1

/// Fuzzes a running node's JSON API over HTTP: seed bodies for every endpoint that takes one,
/// mutated structurally (values of the wrong type, out of range, huge, missing or unknown keys,
/// deep nesting) and as bytes (broken JSON, invalid UTF-8). Every answer must be a success or a
/// 4xx with a JSON error body; a 500, a hang or a dead node is a finding.
///
/// Only point it at a node whose `worker_cidrs` is loopback: fuzzed registrations then cannot
/// make the node poll or proxy to any other host.
public struct HTTPFuzzer: Sendable {
    public struct Endpoint: Sendable {
        public var method: HTTPMethod
        public var path: String
        public var seed: String
        /// The proxy may also answer 502/504 when the (loopback) upstream does not speak HTTP.
        public var proxied = false
    }

    public static let endpoints: [Endpoint] = [
        Endpoint(method: .POST, path: "/v1/route", seed: #"{"model":"m","request_id":"r1","session_id":"s","prompt":"hello world","prompt_tokens":3,"tokens_per_block":16,"max_tokens":8,"roles":["PDFUSION"],"priority":1,"location":{"latitude":1.5,"longitude":2.5},"exclude_workers":["x"]}"#),
        Endpoint(method: .POST, path: "/v1/route", seed: #"{"model":"m","block_hashes":[1,2,"0x3"],"prompt_tokens":40,"tokens_per_block":16}"#),
        Endpoint(method: .POST, path: "/v1/route", seed: #"{"model":"m","token_ids":[1,2,3,4],"tier":"big"}"#),
        Endpoint(method: .POST, path: "/v1/release", seed: #"{"release_token":"1-2","outcome":"ok","worker_id":"w1"}"#),
        Endpoint(method: .POST, path: "/rtp_llm/schedule", seed: #"{"request_id":7,"model":"m","block_cache_keys":[11,12],"seq_len":100,"generate_timeout":1000,"request_time_ms":1}"#),
        Endpoint(method: .POST, path: "/v1/workers", seed: #"{"id":"w1","model":"m","role":"PDFUSION","address":"127.0.0.1:9","group":"g","labels":{"status":"none"},"capacity":{"kv_blocks":800,"block_size":16,"max_batch":8,"max_requests":4,"prefill_tokens_per_second":1000},"location":{"latitude":1,"longitude":2}}"#),
        Endpoint(method: .POST, path: "/v1/workers/w1/heartbeat", seed: #"{"resources":{"core_loads":[0.5,0.1],"memory_total_bytes":1000,"memory_used_bytes":10,"disk_total_bytes":5,"disk_used_bytes":1,"gpus":[{"utilization":0.5,"memory_total_bytes":100,"memory_used_bytes":50}]}}"#),
        Endpoint(method: .POST, path: "/v1/chat/completions", seed: #"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"stream":true}"#, proxied: true),
        Endpoint(method: .POST, path: "/v1/completions", seed: #"{"model":"m","prompt":"hi","max_tokens":1,"fulcrum_block_hashes":[1,2],"fulcrum_tokens_per_block":16}"#, proxied: true),
        Endpoint(method: .PUT, path: "/admin/config/default_policy", seed: #"{"strategies":{"PDFUSION":"cache_aware","PREFILL":"round_robin"},"split":[{"name":"a","strategy":"random","weight":1}],"sticky_fallback":"least_load","same_group":false}"#),
        Endpoint(method: .PUT, path: "/admin/config/policies/m", seed: #"{"strategies":{"PDFUSION":"power_of_two"}}"#),
        Endpoint(method: .PUT, path: "/admin/config/tiers/big", seed: #"{"vcpus":4,"memory_bytes":1000,"disk_bytes":0,"gpus":1,"gpu_memory_bytes":10}"#),
        Endpoint(method: .PATCH, path: "/admin/config/settings", seed: #"{"balance_abs_threshold":32,"balance_rel_threshold":1.5,"cache_hit_threshold":0.5,"kv_high_watermark":0.9,"kv_low_watermark":0.8,"virtual_nodes_per_worker":64}"#),
    ]

    public struct Report: Sendable, CustomStringConvertible {
        public var requests = 0
        public var byStatus: [Int: Int] = [:]
        public var findings: [String] = []
        public var elapsed: Duration = .zero

        public var description: String {
            let statuses = byStatus.keys.sorted().map { "\($0): \(byStatus[$0]!)" }.joined(separator: ", ")
            return "http: \(requests) requests in \(String(format: "%.1f", elapsed.seconds)) s (\(statuses)), findings \(findings.count)"
        }
    }

    public let baseURL: String
    public let client: HTTPClient
    public let headers: [(String, String)]

    public init(baseURL: String, client: HTTPClient, headers: [(String, String)] = []) {
        self.baseURL = baseURL
        self.client = client
        self.headers = headers
    }

    /// Sends every seed as is, then `iterations` mutated bodies (or until `budget` is spent),
    /// and finally checks the node still answers `/healthz`.
    public func run(seed: UInt64, iterations: Int, budget: Duration) async -> Report {
        var report = Report()
        var mutator = Mutator(seed: seed, maxLength: 1 << 14)
        let clock = ContinuousClock()
        let start = clock.now
        for endpoint in Self.endpoints { await send(endpoint, Array(endpoint.seed.utf8), into: &report) }
        var count = 0
        while count < iterations, clock.now - start < budget {
            let endpoint = Self.endpoints[mutator.below(Self.endpoints.count)]
            let seedBytes = Array(endpoint.seed.utf8)
            let body: [UInt8]
            if mutator.below(3) == 0 {
                body = mutator.mutate(seedBytes)
            } else {
                body = JSONMutation.mutate(seedBytes, using: &mutator)
            }
            await send(endpoint, body, into: &report)
            count += 1
        }
        do {
            let response = try await client.execute(HTTPClientRequest(url: baseURL + "/healthz"), timeout: .seconds(10))
            if response.status != .ok { report.findings.append("/healthz answered \(response.status.code) after fuzzing") }
        } catch {
            report.findings.append("/healthz failed after fuzzing: \(error)")
        }
        report.elapsed = clock.now - start
        return report
    }

    private func send(_ endpoint: Endpoint, _ body: [UInt8], into report: inout Report) async {
        var request = HTTPClientRequest(url: baseURL + endpoint.path)
        request.method = endpoint.method
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let shown = String(decoding: body.prefix(300), as: UTF8.self)
        report.requests += 1
        do {
            let response = try await client.execute(request, timeout: .seconds(10))
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            let status = Int(response.status.code)
            report.byStatus[status, default: 0] += 1
            switch status {
            case 200..<300:
                break
            case 400..<500:
                if (try? FulcrumJSON.decode(ErrorBody.self, from: Data(text.utf8))) == nil {
                    report.findings.append("\(endpoint.method) \(endpoint.path) \(shown) → \(status) without a JSON error: \(text.prefix(200))")
                }
            case 503:
                break
            case 502 where endpoint.proxied, 504 where endpoint.proxied:
                break
            case 500 where endpoint.path == "/rtp_llm/schedule" && Self.isFlexLBRefusal(text):
                // FlexLB's HTTP-era protocol answers a scheduling failure with HTTP 500 and its
                // `Response` body (`success: false`, a FlexLB code): a refusal, not a crash.
                break
            default:
                report.findings.append("\(endpoint.method) \(endpoint.path) \(shown) → \(status): \(text.prefix(300))")
            }
        } catch {
            report.findings.append("\(endpoint.method) \(endpoint.path) \(shown) → no answer: \(error)")
        }
    }
}

extension HTTPFuzzer {
    /// A FlexLB scheduling refusal: `success` false and one of FlexLB's codes (8xxx).
    static func isFlexLBRefusal(_ text: String) -> Bool {
        guard let answer = try? FulcrumJSON.decode(ScheduleResponse.self, from: Data(text.utf8)) else { return false }
        return !answer.success && (8_000..<9_000).contains(answer.code)
    }
}

/// Structure-aware mutations of a JSON document: one value somewhere in it is replaced, a key
/// removed or added, or the document wrapped in deep nesting.
enum JSONMutation {
    static func mutate(_ document: [UInt8], using mutator: inout Mutator) -> [UInt8] {
        guard var root = try? JSONSerialization.jsonObject(with: Data(document), options: [.fragmentsAllowed]) else {
            return mutator.mutate(document)
        }
        switch mutator.below(8) {
        case 0:
            var nested: Any = root
            for _ in 0..<(1 + mutator.below(2000)) { nested = [nested] }
            root = nested
        default:
            root = mutateSomewhere(root, using: &mutator, depth: 0)
        }
        guard let data = try? JSONSerialization.data(withJSONObject: root, options: [.fragmentsAllowed]) else { return document }
        return [UInt8](data)
    }

    private static func mutateSomewhere(_ value: Any, using mutator: inout Mutator, depth: Int) -> Any {
        // Descend into a container most of the time; otherwise replace this value.
        if var object = value as? [String: Any], !object.isEmpty, mutator.below(4) != 0 {
            let keys = object.keys.sorted()
            let key = keys[mutator.below(keys.count)]
            switch mutator.below(6) {
            case 0: object.removeValue(forKey: key)
            case 1: object["unexpected_\(mutator.below(100))"] = randomValue(using: &mutator)
            default: object[key] = mutateSomewhere(object[key]!, using: &mutator, depth: depth + 1)
            }
            return object
        }
        if var array = value as? [Any], !array.isEmpty, mutator.below(4) != 0 {
            let index = mutator.below(array.count)
            switch mutator.below(5) {
            case 0: array.remove(at: index)
            case 1: array += Array(repeating: array[index], count: mutator.below(5000))
            default: array[index] = mutateSomewhere(array[index], using: &mutator, depth: depth + 1)
            }
            return array
        }
        return randomValue(using: &mutator)
    }

    private static func randomValue(using mutator: inout Mutator) -> Any {
        switch mutator.below(16) {
        case 0: return NSNull()
        case 1: return mutator.below(2) == 0
        case 2: return -1
        case 3: return 0
        case 4: return Int64.max
        case 5: return Int64.min
        case 6: return 1e308
        case 7: return -0.5
        case 8: return ""
        case 9: return String(repeating: "x", count: mutator.below(20_000))
        case 10: return "\u{0}\u{FFFF}🙂\\\"'<script>"
        case 11: return [Any]()
        case 12: return [String: Any]()
        case 13: return (0..<mutator.below(3000)).map { _ in Int(mutator.below(1 << 30)) }
        case 14: return ["PDFUSION", "PREFILL", "DECODE", "VIT", "cache_aware", "round_robin", "m", "w1"][mutator.below(8)]
        default: return Int(truncatingIfNeeded: mutator.next())
        }
    }
}
