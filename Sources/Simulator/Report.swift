import Foundation
import Balancer

/// What happened to one replayed request.
public struct RequestRecord: Sendable, Codable, Hashable {
    public var index: Int
    /// When it was sent, seconds after the replay started.
    public var sentAt: Double
    public var ttft: Double?
    public var endToEnd: Double?
    public var inputTokens: Int
    public var cachedTokens: Int
    public var worker: String?
    public var error: String?
    /// The prompt tokens the router expected the chosen worker to hold (its matched blocks, from
    /// `X-Fulcrum-Matched-Blocks`); nil where the router does not say.
    public var predictedCachedTokens: Int?
    /// The request's priority, when the trace gave one.
    public var priority: Int?
    /// Admission control refused it (`queue_full`, `deadline`), and how long after it was sent
    /// the refusal was answered.
    public var shedReason: String?
    public var shedAfter: Double?

    public init(index: Int, sentAt: Double, ttft: Double? = nil, endToEnd: Double? = nil, inputTokens: Int, cachedTokens: Int = 0, worker: String? = nil, error: String? = nil) {
        self.index = index
        self.sentAt = sentAt
        self.ttft = ttft
        self.endToEnd = endToEnd
        self.inputTokens = inputTokens
        self.cachedTokens = cachedTokens
        self.worker = worker
        self.error = error
    }
}

/// The figures of one replay (the report's JSON).
public struct ReplaySummary: Sendable, Codable, Equatable {
    public var name: String
    public var requests: Int
    public var completed: Int
    public var errors: Int
    /// Cached prompt tokens / prompt tokens, over completed requests.
    public var hitRatio: Double
    /// The router's expected hits / prompt tokens, over completed requests it answered for (nil
    /// when it never said): set against `hitRatio`, how well the router knows the engines' caches.
    public var predictedHitRatio: Double?
    public var ttftMean: Double
    public var ttftP50: Double
    public var ttftP90: Double
    public var ttftP99: Double
    public var endToEndMean: Double
    /// Completed requests per second of replay.
    public var throughput: Double
    public var requestsPerWorker: [String: Int]
    public var maxOverMeanRequestsPerWorker: Double

    public init(name: String, records: [RequestRecord], workers: [String] = []) {
        self.name = name
        let done = records.filter { $0.error == nil && $0.ttft != nil }
        requests = records.count
        completed = done.count
        errors = records.count - done.count
        let input = done.reduce(0) { $0 + $1.inputTokens }
        hitRatio = input == 0 ? 0 : Double(done.reduce(0) { $0 + $1.cachedTokens }) / Double(input)
        let predicted = done.filter { $0.predictedCachedTokens != nil }
        let predictedInput = predicted.reduce(0) { $0 + $1.inputTokens }
        predictedHitRatio = predictedInput == 0 ? nil : Double(predicted.reduce(0) { $0 + ($1.predictedCachedTokens ?? 0) }) / Double(predictedInput)
        let ttfts = done.compactMap(\.ttft).sorted()
        ttftMean = ttfts.isEmpty ? 0 : ttfts.reduce(0, +) / Double(ttfts.count)
        ttftP50 = Self.percentile(ttfts, 0.5)
        ttftP90 = Self.percentile(ttfts, 0.9)
        ttftP99 = Self.percentile(ttfts, 0.99)
        let ends = done.compactMap(\.endToEnd)
        endToEndMean = ends.isEmpty ? 0 : ends.reduce(0, +) / Double(ends.count)
        let span = (records.map { $0.sentAt + ($0.endToEnd ?? 0) }.max() ?? 0) - (records.map(\.sentAt).min() ?? 0)
        throughput = span > 0 ? Double(done.count) / span : 0
        var perWorker = Dictionary(uniqueKeysWithValues: workers.map { ($0, 0) })
        for record in done { perWorker[record.worker ?? "?", default: 0] += 1 }
        requestsPerWorker = perWorker
        let mean = perWorker.isEmpty ? 0 : Double(done.count) / Double(perWorker.count)
        maxOverMeanRequestsPerWorker = mean > 0 ? Double(perWorker.values.max() ?? 0) / mean : 0
    }

    public static func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }

    public var tableRow: String {
        String(
            format: "| %@ | %d | %d | %.1f %% | %.3f | %.3f | %.3f | %.3f | %.2f | %.2f |",
            name, completed, errors, hitRatio * 100, ttftMean, ttftP50, ttftP90, ttftP99, throughput, maxOverMeanRequestsPerWorker
        )
    }

    public static let tableHeader = """
        | run | completed | errors | hit ratio | TTFT mean s | p50 s | p90 s | p99 s | req/s | max/mean per worker |
        |---|---|---|---|---|---|---|---|---|---|
        """
}

/// Writes a replay's report: `summary.json`, `report.md` and three SVG plots.
public enum ReportWriter {
    public static func write(_ summary: ReplaySummary, records: [RequestRecord], profile: String, to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        try encoder.encode(summary).write(to: URL(fileURLWithPath: directory + "/summary.json"))
        let lines = JSONEncoder()
        lines.keyEncodingStrategy = .convertToSnakeCase
        lines.outputFormatting = [.sortedKeys]
        var text = ""
        for record in records { text += String(decoding: try lines.encode(record), as: UTF8.self) + "\n" }
        try text.write(toFile: directory + "/requests.jsonl", atomically: true, encoding: .utf8)
        try ttftCDF(records).write(toFile: directory + "/ttft-cdf.svg", atomically: true, encoding: .utf8)
        try hitRatioOverTime(records).write(toFile: directory + "/hit-ratio.svg", atomically: true, encoding: .utf8)
        try perWorker(summary).write(toFile: directory + "/requests-per-worker.svg", atomically: true, encoding: .utf8)
        let markdown = """
            # Replay: \(summary.name)

            Engine profile: \(profile)

            \(ReplaySummary.tableHeader)
            \(summary.tableRow)

            - requests sent \(summary.requests), completed \(summary.completed), errors \(summary.errors)
            - hit ratio (cached / prompt tokens): \(String(format: "%.2f %%", summary.hitRatio * 100))\(summary.predictedHitRatio.map { String(format: "; the router expected %.2f %%", $0 * 100) } ?? "")
            - TTFT mean \(String(format: "%.3f", summary.ttftMean)) s, p50 \(String(format: "%.3f", summary.ttftP50)) s, p90 \(String(format: "%.3f", summary.ttftP90)) s, p99 \(String(format: "%.3f", summary.ttftP99)) s; end to end mean \(String(format: "%.3f", summary.endToEndMean)) s
            - requests per worker: \(summary.requestsPerWorker.keys.sorted().map { "\($0) \(summary.requestsPerWorker[$0]!)" }.joined(separator: ", ")) (max/mean \(String(format: "%.2f", summary.maxOverMeanRequestsPerWorker)))

            ![TTFT CDF](ttft-cdf.svg) ![hit ratio over time](hit-ratio.svg) ![requests per worker](requests-per-worker.svg)

            """
        try markdown.write(toFile: directory + "/report.md", atomically: true, encoding: .utf8)
    }

    static let width = 480.0
    static let height = 300.0
    static let margin = 44.0

    static func frame(_ title: String, x: String, y: String, body: String) -> String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="16" text-anchor="middle" font-size="13">\(title)</text>
        <line x1="\(margin)" y1="\(height - margin)" x2="\(width - 12)" y2="\(height - margin)" stroke="black"/>
        <line x1="\(margin)" y1="24" x2="\(margin)" y2="\(height - margin)" stroke="black"/>
        <text x="\(width / 2)" y="\(height - 8)" text-anchor="middle">\(x)</text>
        <text x="12" y="\(height / 2)" transform="rotate(-90 12 \(height / 2))" text-anchor="middle">\(y)</text>
        \(body)
        </svg>
        """
    }

    static func polyline(_ points: [(Double, Double)], maxX: Double, maxY: Double) -> String {
        let plotWidth = width - margin - 12, plotHeight = height - margin - 24
        let coordinates = points.map { x, y in
            String(format: "%.1f,%.1f", margin + (maxX > 0 ? x / maxX : 0) * plotWidth, height - margin - (maxY > 0 ? y / maxY : 0) * plotHeight)
        }
        return ##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="\##(coordinates.joined(separator: " "))"/>"##
            + #"<text x="\#(width - 12)" y="\#(height - margin + 14)" text-anchor="end">\#(String(format: "%.3g", maxX))</text>"#
            + #"<text x="\#(margin - 4)" y="28" text-anchor="end">\#(String(format: "%.3g", maxY))</text>"#
    }

    static func ttftCDF(_ records: [RequestRecord]) -> String {
        let ttfts = records.compactMap(\.ttft).sorted()
        let points = ttfts.enumerated().map { ($0.element, Double($0.offset + 1) / Double(ttfts.count)) }
        return frame("TTFT CDF", x: "TTFT (s)", y: "fraction of requests", body: polyline(points, maxX: ttfts.last ?? 1, maxY: 1))
    }

    static func hitRatioOverTime(_ records: [RequestRecord], window: Double = 10) -> String {
        var buckets: [Int: (cached: Int, input: Int)] = [:]
        for record in records where record.error == nil {
            let bucket = Int(record.sentAt / window)
            buckets[bucket, default: (0, 0)].cached += record.cachedTokens
            buckets[bucket, default: (0, 0)].input += record.inputTokens
        }
        let points = buckets.keys.sorted().map { key in
            (Double(key) * window, buckets[key]!.input > 0 ? Double(buckets[key]!.cached) / Double(buckets[key]!.input) : 0)
        }
        return frame("hit ratio per \(Int(window)) s", x: "time (s)", y: "cached / prompt tokens", body: polyline(points, maxX: points.last?.0 ?? 1, maxY: 1))
    }

    static func perWorker(_ summary: ReplaySummary) -> String {
        let workers = summary.requestsPerWorker.keys.sorted()
        let most = Double(summary.requestsPerWorker.values.max() ?? 1)
        let plotWidth = width - margin - 12, plotHeight = height - margin - 24
        let barWidth = workers.isEmpty ? 0 : plotWidth / Double(workers.count)
        var bars = ""
        for (index, worker) in workers.enumerated() {
            let value = Double(summary.requestsPerWorker[worker]!)
            let barHeight = most > 0 ? value / most * plotHeight : 0
            let x = margin + Double(index) * barWidth
            bars += String(format: ##"<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#ff7f0e"/>"##, x + 2, height - margin - barHeight, max(1, barWidth - 4), barHeight)
            bars += String(format: #"<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%@</text>"#, x + barWidth / 2, height - margin + 12, worker)
        }
        bars += #"<text x="\#(margin - 4)" y="28" text-anchor="end">\#(Int(most))</text>"#
        return frame("requests per worker", x: "worker", y: "requests", body: bars)
    }
}

/// Figures per priority, for runs with admission control: what each class was promised and got.
public struct PriorityReport: Sendable {
    public struct Row: Sendable {
        public var priority: Int
        public var sent: Int
        public var completed: Int
        public var shedQueueFull: Int
        public var shedDeadline: Int
        public var ttftP50: Double
        public var ttftP99: Double
        /// Completed requests whose TTFT was within the class's deadline, over completed.
        public var metDeadline: Double?
        /// The slowest refusal (p99 and max of the time from sending to the answer), seconds.
        public var shedAnswerP99: Double
        public var shedAnswerMax: Double
    }

    public var rows: [Row]

    /// `deadline`: the class deadline in seconds for a priority (nil: none).
    public init(records: [RequestRecord], deadline: (Int) -> Double?) {
        let byPriority = Dictionary(grouping: records) { $0.priority ?? 0 }
        rows = byPriority.keys.sorted(by: >).map { priority in
            let group = byPriority[priority]!
            let done = group.filter { $0.error == nil && $0.ttft != nil }
            let ttfts = done.compactMap(\.ttft).sorted()
            let shed = group.compactMap(\.shedAfter).sorted()
            let limit = deadline(priority)
            return Row(
                priority: priority, sent: group.count, completed: done.count,
                shedQueueFull: group.filter { $0.shedReason == ShedReason.queueFull.rawValue }.count,
                shedDeadline: group.filter { $0.shedReason == ShedReason.deadline.rawValue }.count,
                ttftP50: ReplaySummary.percentile(ttfts, 0.5), ttftP99: ReplaySummary.percentile(ttfts, 0.99),
                metDeadline: limit.flatMap { limit in done.isEmpty ? nil : Double(ttfts.filter { $0 <= limit }.count) / Double(done.count) },
                shedAnswerP99: ReplaySummary.percentile(shed, 0.99), shedAnswerMax: shed.last ?? 0
            )
        }
    }

    public var table: String {
        var lines = [
            "| priority | sent | completed | shed (queue full / deadline) | TTFT p50 s | p99 s | within deadline | shed answered p99 / max s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows {
            lines.append(String(
                format: "| %d | %d | %d | %d / %d | %.3f | %.3f | %@ | %.3f / %.3f |",
                row.priority, row.sent, row.completed, row.shedQueueFull, row.shedDeadline, row.ttftP50, row.ttftP99,
                row.metDeadline.map { String(format: "%.1f %%", $0 * 100) } ?? "—", row.shedAnswerP99, row.shedAnswerMax
            ))
        }
        return lines.joined(separator: "\n")
    }
}
