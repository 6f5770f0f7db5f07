import Foundation
import Balancer

/// One request of a public trace.
public struct TraceRequest: Sendable, Hashable {
    /// Arrival, milliseconds after the trace's first request.
    public var timestampMilliseconds: Double
    public var inputTokens: Int
    public var outputTokens: Int
    /// Prefix-chained block ids (Mooncake: 512 tokens each). Traces without prefix information
    /// get ids of their own, so no two requests share a block.
    public var blockIDs: [UInt64]
    /// Higher is more important (admission classes); 0 when the trace does not say.
    public var priority: Int

    public init(timestampMilliseconds: Double, inputTokens: Int, outputTokens: Int, blockIDs: [UInt64], priority: Int = 0) {
        self.timestampMilliseconds = timestampMilliseconds
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.blockIDs = blockIDs
        self.priority = priority
    }

    /// `trace` with `fraction` of its requests, drawn with `seed`, at priority `high` and the
    /// rest at `low`: the two-class workload of the admission benchmarks.
    public static func withPriorities(_ trace: [TraceRequest], highFraction fraction: Double, seed: UInt64, high: Int = 90, low: Int = 0) -> [TraceRequest] {
        var random = SeededGenerator(seed: seed)
        return trace.map { request in
            var request = request
            request.priority = random.unit() < fraction ? high : low
            return request
        }
    }
}

public struct TraceError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Reads the Mooncake JSONL format (`timestamp` ms, `input_length`, `output_length`,
/// `hash_ids`) and the Azure LLM inference CSV format (`TIMESTAMP,ContextTokens,GeneratedTokens`).
public enum Trace {
    /// Tokens per block id in Mooncake traces.
    public static let mooncakeTokensPerBlock = 512

    public static func load(path: String) throws -> [TraceRequest] {
        guard let data = FileManager.default.contents(atPath: path) else { throw TraceError("cannot read \(path)") }
        let text = String(decoding: data, as: UTF8.self)
        if path.hasSuffix(".csv") || text.hasPrefix("TIMESTAMP") { return try azure(text, source: path) }
        return try mooncake(text, source: path)
    }

    public static func mooncake(_ text: String, source: String) throws -> [TraceRequest] {
        struct Line: Decodable {
            var timestamp: Double
            var input_length: Int
            var output_length: Int
            var hash_ids: [UInt64]
        }
        var requests: [TraceRequest] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            guard let parsed = try? JSONDecoder().decode(Line.self, from: Data(line.utf8)) else {
                throw TraceError("\(source):\(number + 1): not a Mooncake record (timestamp, input_length, output_length, hash_ids)")
            }
            guard parsed.input_length > 0, parsed.output_length >= 0, !parsed.hash_ids.isEmpty else {
                throw TraceError("\(source):\(number + 1): lengths must be positive and hash_ids not empty")
            }
            requests.append(TraceRequest(
                timestampMilliseconds: parsed.timestamp, inputTokens: parsed.input_length,
                outputTokens: max(1, parsed.output_length), blockIDs: parsed.hash_ids
            ))
        }
        return try ordered(requests, source: source)
    }

    public static func azure(_ text: String, source: String) throws -> [TraceRequest] {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        var requests: [TraceRequest] = []
        var first: Double?
        for (number, rawLine) in text.split(whereSeparator: \.isNewline).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if number == 0 && line.hasPrefix("TIMESTAMP") { continue }
            let fields = line.split(separator: ",")
            guard fields.count == 3, let input = Int(fields[1]), let output = Int(fields[2]), input > 0, output >= 0 else {
                throw TraceError("\(source):\(number + 1): expected TIMESTAMP,ContextTokens,GeneratedTokens")
            }
            let stamp = fields[0]
            let whole = stamp.split(separator: ".", maxSplits: 1)
            guard let date = formatter.date(from: String(whole[0])) else {
                throw TraceError("\(source):\(number + 1): unreadable timestamp '\(stamp)'")
            }
            let fraction = whole.count == 2 ? Double("0." + whole[1]) ?? 0 : 0
            let seconds = date.timeIntervalSince1970 + fraction
            first = first ?? seconds
            let blocks = (input + mooncakeTokensPerBlock - 1) / mooncakeTokensPerBlock
            // No prefix information: ids of this request's own.
            let base = UInt64(requests.count + 1) << 24
            requests.append(TraceRequest(
                timestampMilliseconds: (seconds - first!) * 1000, inputTokens: input, outputTokens: max(1, output),
                blockIDs: (0..<blocks).map { base + UInt64($0) }
            ))
        }
        return try ordered(requests, source: source)
    }

    private static func ordered(_ requests: [TraceRequest], source: String) throws -> [TraceRequest] {
        guard !requests.isEmpty else { throw TraceError("\(source): no requests") }
        guard let start = requests.map(\.timestampMilliseconds).min() else { return requests }
        return requests.map { var request = $0; request.timestampMilliseconds -= start; return request }
            .enumerated().sorted { ($0.element.timestampMilliseconds, $0.offset) < ($1.element.timestampMilliseconds, $1.offset) }.map(\.element)
    }
}

extension Trace {
    /// Requests in the Mooncake JSONL format (what ``mooncake(_:source:)`` reads).
    public static func mooncakeJSONL(_ requests: [TraceRequest]) -> String {
        requests.map { request in
            let ids = request.blockIDs.map(String.init).joined(separator: ", ")
            return #"{"timestamp": \#(Int(request.timestampMilliseconds.rounded())), "input_length": \#(request.inputTokens), "output_length": \#(request.outputTokens), "hash_ids": [\#(ids)]}"#
        }.joined(separator: "\n") + "\n"
    }
}
