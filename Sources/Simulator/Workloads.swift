import Balancer
import Foundation

/// Seeded generators of request traces in families that stress routing differently, so that a
/// routing default is judged on more than the one trace it was tuned on (`fulcrum-sim
/// evaluate`, Docs/simulator.md). Each family is a model of a published workload; the seed
/// picks its parameters' draws (and, for shared-prefix groups, the configuration).
///
/// Load is in units of the Mooncake synthetic trace at speed 1: **1×** offers
/// ``referencePromptTokensPerEngineSecond`` prompt tokens per second per engine (the trace's
/// 3.91 requests/s × 15,325 tokens over 8 engines: about 16 % of an H100-8B engine's prefill
/// rate before any cache hit), so 3× is about as loaded as the trace at speed 3 and 5× is past
/// what the fleet prefills without cache hits.
public enum WorkloadFamily: String, CaseIterable, Sendable, CustomStringConvertible {
    /// The Mooncake FAST'25 synthetic trace (a file; `load` is its replay speed).
    case mooncake
    /// vLLM's multi-turn benchmark (`benchmarks/multi_turn/generate_multi_turn.json`): a shared
    /// 500-token prefix, a per-conversation prefix (log-normal), turns of 120–160 tokens
    /// answered in 80–120; the seed picks prefix length, turns and pauses.
    case multiTurn = "multi_turn"
    /// SGLang's generated-shared-prefix benchmark: groups with a system prompt, unique
    /// 128-token questions, answers of 256; the seed picks group count, prompt length, turns and
    /// popularity (uniform or Zipf).
    case sharedPrefix = "shared_prefix"
    /// Agents with long tool/system prefixes (log-normal), Zipf popularity, trajectories of 3–12
    /// steps each appending a short call and a tool result; the seed picks agents and lengths.
    case toolAgent = "tool_agent"
    /// The Azure LLM 2023 conversation trace's arrivals and lengths, with synthetic prefixes:
    /// Zipf-popular applications with system prompts, and conversations that continue.
    case azure = "azure_conv"
    /// Multi-turn, shared-prefix and tool-agent traffic at a third of the load each.
    case mix
    /// The Azure LLM 2023 code trace's arrivals and lengths, with code-completion prefixes:
    /// Zipf-popular repositories whose context is shared, and editing sessions whose next
    /// request keeps only part of the previous prompt (the code before the cursor changed).
    case azureCode = "azure_code"

    public var description: String { rawValue }
}

public struct WorkloadError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One generated workload: a family, a seed, a load, a length.
public struct Workload: Sendable, CustomStringConvertible {
    public static let referencePromptTokensPerEngineSecond = 7_500.0
    /// Tokens per block id of generated workloads (the Mooncake file's are 512).
    public static let generatedTokensPerBlock = 64

    public var family: WorkloadFamily
    public var seed: UInt64
    /// Multiple of the reference load (see ``WorkloadFamily``).
    public var load: Double
    public var durationSeconds: Double
    public var engines: Int
    /// Where the public traces are (`mooncake/…`, `azure-llm-2023/…`).
    public var tracesDirectory: String

    public init(family: WorkloadFamily, seed: UInt64 = 1, load: Double = 1, durationSeconds: Double = 300, engines: Int = 8, tracesDirectory: String = "../shared/traces") {
        self.family = family
        self.seed = seed
        self.load = load
        self.durationSeconds = durationSeconds
        self.engines = engines
        self.tracesDirectory = tracesDirectory
    }

    public var description: String {
        family == .mooncake ? "mooncake \(Self.format(load))×" : "\(family) seed \(seed) \(Self.format(load))×"
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }

    public var tokensPerBlock: Int { family == .mooncake ? Trace.mooncakeTokensPerBlock : Self.generatedTokensPerBlock }

    /// Prompt tokens per second this workload offers.
    public var promptTokensPerSecond: Double { load * Self.referencePromptTokensPerEngineSecond * Double(engines) }

    /// The requests, ordered by arrival, all within `durationSeconds`.
    public func generate() throws -> [TraceRequest] {
        guard load > 0, durationSeconds > 0, engines > 0 else { throw WorkloadError("load, duration and engines must be positive") }
        var random = SeededGenerator(seed: seed &* 0x9E37_79B9 &+ UInt64(WorkloadFamily.allCases.firstIndex(of: family)!))
        let requests: [TraceRequest]
        switch family {
        case .mooncake:
            let trace = try Trace.load(path: tracesDirectory + "/mooncake/synthetic_trace.jsonl")
            requests = trace.compactMap { request in
                var scaled = request
                scaled.timestampMilliseconds /= load
                return scaled.timestampMilliseconds < durationSeconds * 1_000 ? scaled : nil
            }
        case .multiTurn: requests = sessions(MultiTurn(seed: seed), rate: promptTokensPerSecond, salt: 1, random: &random)
        case .sharedPrefix: requests = sessions(SharedPrefix(seed: seed), rate: promptTokensPerSecond, salt: 2, random: &random)
        case .toolAgent: requests = sessions(ToolAgent(seed: seed), rate: promptTokensPerSecond, salt: 3, random: &random)
        case .azure: requests = try azure(random: &random)
        case .azureCode: requests = try azureCode(random: &random)
        case .mix:
            let share = promptTokensPerSecond / 3
            requests = (sessions(MultiTurn(seed: seed), rate: share, salt: 1, random: &random)
                + sessions(SharedPrefix(seed: seed), rate: share, salt: 2, random: &random)
                + sessions(ToolAgent(seed: seed), rate: share, salt: 3, random: &random))
        }
        return requests.enumerated()
            .sorted { ($0.element.timestampMilliseconds, $0.offset) < ($1.element.timestampMilliseconds, $1.offset) }
            .map(\.element)
    }

    // MARK: Sessions

    /// A family made of sessions: a session is a sequence of prompts, each extending the
    /// conversation so far, sent `gap` seconds apart.
    protocol SessionModel {
        /// Turns of a session, with each turn's new segments and its answer's length.
        func session(_ number: UInt64, salt: UInt64, random: inout SeededGenerator) -> Session
        /// Seconds between a session's turns.
        func gap(random: inout SeededGenerator) -> Double
    }

    struct Session {
        /// Segments every turn starts with (system prompt, shared and per-session prefixes).
        var prefix: [Segment]
        /// Per turn: the segments it adds after the previous turn's prompt and answer, and the
        /// length of its own answer.
        var turns: [(added: [Segment], output: Int)]
    }

    /// Session starts arrive as a Poisson process at the rate that offers `rate` prompt tokens
    /// per second; sessions are started from one session length before 0, so the replay begins
    /// in the steady state rather than with an empty fleet.
    func sessions(_ model: some SessionModel, rate: Double, salt: UInt64, random: inout SeededGenerator) -> [TraceRequest] {
        // Mean prompt tokens per session and mean session length, by sampling the model.
        var probe = SeededGenerator(seed: seed ^ 0xABCD ^ salt)
        var promptTokens = 0.0
        var length = 0.0
        let samples = 400
        for number in 0..<samples {
            let session = model.session(UInt64(number), salt: salt, random: &probe)
            var prompt = session.prefix.reduce(0) { $0 + $1.tokens }
            for (index, turn) in session.turns.enumerated() {
                if index > 0 { length += model.gap(random: &probe) }
                prompt += turn.added.reduce(0) { $0 + $1.tokens }
                promptTokens += Double(prompt)
                prompt += turn.output
            }
        }
        length /= Double(samples)
        let sessionsPerSecond = rate / (promptTokens / Double(samples))
        var requests: [TraceRequest] = []
        var start = -length
        var number: UInt64 = 0
        while true {
            start += exponential(mean: 1 / sessionsPerSecond, random: &random)
            guard start < durationSeconds else { break }
            number += 1
            let session = model.session(number, salt: salt, random: &random)
            var prompt = session.prefix
            var time = start
            for (index, turn) in session.turns.enumerated() {
                if index > 0 { time += model.gap(random: &random) }
                prompt += turn.added
                if time >= durationSeconds { break }
                if time >= 0 {
                    requests.append(request(at: time, prompt: prompt, output: turn.output))
                }
                // The answer becomes part of the next turn's prompt.
                prompt.append(Segment(id: mix(salt, number, UInt64(index), 0xA5), tokens: turn.output))
            }
        }
        return requests
    }

    func request(at seconds: Double, prompt: [Segment], output: Int) -> TraceRequest {
        let blocks = Segment.blocks(prompt, tokensPerBlock: tokensPerBlock)
        return TraceRequest(
            timestampMilliseconds: seconds * 1_000, inputTokens: prompt.reduce(0) { $0 + $1.tokens },
            outputTokens: max(1, output), blockIDs: blocks
        )
    }

    /// vLLM's multi-turn benchmark's shapes, over a grid the seed picks from: the benchmark's
    /// own (per-conversation prefix of mean 1,000 tokens, 12–18 turns) and longer prefixes,
    /// fewer turns and longer pauses between turns, which hold more conversations open at once
    /// than the engines' caches can keep.
    struct MultiTurn: SessionModel {
        let prefixMean: Double
        let turns: ClosedRange<Int>
        let thinkSeconds: Double

        init(seed: UInt64) {
            var pick = SeededGenerator(seed: seed ^ 0x7A17)
            prefixMean = [1_000, 3_000, 8_000][pick.below(3)]
            turns = [12...18, 4...8][pick.below(2)]
            thinkSeconds = [10, 30, 60][pick.below(3)]
        }

        func session(_ number: UInt64, salt: UInt64, random: inout SeededGenerator) -> Session {
            let own = min(Int(prefixMean * 5), max(1, Int(logNormal(mean: prefixMean, sigma: 0.8, random: &random))))
            let count = turns.lowerBound + random.below(turns.count)
            return Session(
                prefix: [Segment(id: mix(salt, 0, 0, 1), tokens: 500), Segment(id: mix(salt, number, 0, 2), tokens: own)],
                turns: (0..<count).map { turn in
                    ([Segment(id: mix(salt, number, UInt64(turn), 3), tokens: 120 + random.below(41))], 80 + random.below(41))
                }
            )
        }
        func gap(random: inout SeededGenerator) -> Double { exponential(mean: thinkSeconds, random: &random) }
    }

    /// SGLang's generated-shared-prefix, over a grid of configurations the seed picks from.
    struct SharedPrefix: SessionModel {
        let groups: Int
        let systemPromptTokens: Int
        let turns: Int
        let zipf: Zipf?

        init(seed: UInt64) {
            var pick = SeededGenerator(seed: seed ^ 0x5EED)
            groups = [16, 64, 256][pick.below(3)]
            systemPromptTokens = [1_024, 2_048, 4_096][pick.below(3)]
            turns = [1, 3][pick.below(2)]
            zipf = pick.below(2) == 0 ? nil : Zipf(count: groups, exponent: 1.1)
        }

        func session(_ number: UInt64, salt: UInt64, random: inout SeededGenerator) -> Session {
            let group = zipf.map { $0.sample(random: &random) } ?? random.below(groups)
            return Session(
                prefix: [Segment(id: mix(salt, 0, UInt64(group), 1), tokens: systemPromptTokens)],
                turns: (0..<turns).map { turn in ([Segment(id: mix(salt, number, UInt64(turn), 2), tokens: 128)], 256) }
            )
        }
        func gap(random: inout SeededGenerator) -> Double { exponential(mean: 5, random: &random) }
    }

    /// Agents with long tool prefixes; the seed picks how many agents (24 or 200) and how long
    /// their prefixes are (mean 6,000 or 12,000 tokens).
    struct ToolAgent: SessionModel {
        let zipf: Zipf
        let prefixMean: Double

        init(seed: UInt64) {
            var pick = SeededGenerator(seed: seed ^ 0x7001)
            zipf = Zipf(count: [24, 200][pick.below(2)], exponent: 1.0)
            prefixMean = [6_000, 12_000][pick.below(2)]
        }

        func session(_ number: UInt64, salt: UInt64, random: inout SeededGenerator) -> Session {
            let agent = UInt64(zipf.sample(random: &random))
            // The agent's prefix length is a property of the agent, not of the session.
            var lengths = SeededGenerator(seed: mix(salt, agent, UInt64(prefixMean), 7))
            let prefix = min(Int(prefixMean * 3), max(500, Int(logNormal(mean: prefixMean, sigma: 0.6, random: &lengths))))
            let steps = 3 + random.below(10)
            return Session(
                prefix: [Segment(id: mix(salt, UInt64(prefixMean), agent, 1), tokens: prefix), Segment(id: mix(salt, number, 0, 2), tokens: 200 + random.below(601))],
                turns: (0..<steps).map { step in
                    let result = step == 0 ? [] : [Segment(id: mix(salt, number, UInt64(step), 3), tokens: 100 + random.below(1_401))]
                    return (result, 50 + random.below(101))
                }
            )
        }
        func gap(random: inout SeededGenerator) -> Double { exponential(mean: 2, random: &random) }
    }

    // MARK: Azure arrivals

    /// The Azure 2023 conversation trace's arrivals and lengths, played from a seed-chosen
    /// offset, looped and time-scaled to the load; prefixes are synthetic: each request belongs
    /// to one of 100 applications (Zipf 1.2) with a system prompt (log-normal, mean 800), and
    /// continues a live conversation of its application with probability 0.4 when that
    /// conversation still fits within the request's context length.
    func azure(random: inout SeededGenerator) throws -> [TraceRequest] {
        let applications = Zipf(count: 100, exponent: 1.2)
        var conversations: [Int: [Segment]] = [:]
        return try azureRows("AzureLLMInferenceTrace_conv.csv", random: &random) { row, number, random in
            let application = applications.sample(random: &random)
            var lengths = SeededGenerator(seed: mix(4, UInt64(application), 0, 7))
            let system = min(row.inputTokens / 2, max(16, Int(logNormal(mean: 800, sigma: 0.7, random: &lengths))))
            var prompt = [Segment(id: mix(4, UInt64(application), UInt64(system), 1), tokens: system)]
            if let live = conversations[application], random.unit() < 0.4, live.reduce(0, { $0 + $1.tokens }) < row.inputTokens {
                prompt = live
            }
            let used = prompt.reduce(0) { $0 + $1.tokens }
            prompt.append(Segment(id: mix(4, number, 0, 2), tokens: max(1, row.inputTokens - used)))
            conversations[application] = prompt + [Segment(id: mix(4, number, 0, 3), tokens: row.outputTokens)]
            return prompt
        }
    }

    /// Code completion on the Azure code trace: 300 repositories (Zipf 1.1) with a shared
    /// context (log-normal, mean 1,200 tokens, at most 60 % of the prompt); 60 % of requests
    /// continue an editing session of their repository, keeping 50–95 % of its last prompt.
    func azureCode(random: inout SeededGenerator) throws -> [TraceRequest] {
        let repositories = Zipf(count: 300, exponent: 1.1)
        var sessions: [Int: [Segment]] = [:]
        return try azureRows("AzureLLMInferenceTrace_code.csv", random: &random) { row, number, random in
            let repository = repositories.sample(random: &random)
            var lengths = SeededGenerator(seed: mix(6, UInt64(repository), 0, 7))
            let context = min(row.inputTokens * 3 / 5, max(16, Int(logNormal(mean: 1_200, sigma: 0.7, random: &lengths))))
            var prompt = [Segment(id: mix(6, UInt64(repository), UInt64(context), 1), tokens: context)]
            if let last = sessions[repository], random.unit() < 0.6 {
                let total = last.reduce(0) { $0 + $1.tokens }
                prompt = Segment.prefix(last, tokens: min(row.inputTokens - 1, Int(Double(total) * (0.5 + 0.45 * random.unit()))))
            }
            let used = prompt.reduce(0) { $0 + $1.tokens }
            prompt.append(Segment(id: mix(6, number, 0, 2), tokens: max(1, row.inputTokens - used)))
            sessions[repository] = prompt
            return prompt
        }
    }

    /// The rows of an Azure 2023 trace from a seed-chosen offset, looped and time-scaled to the
    /// load, each given the prompt `prompt` builds for it.
    func azureRows(
        _ file: String, random: inout SeededGenerator,
        prompt: (TraceRequest, UInt64, inout SeededGenerator) -> [Segment]
    ) throws -> [TraceRequest] {
        let trace = try Trace.load(path: tracesDirectory + "/azure-llm-2023/" + file)
        let span = (trace.last!.timestampMilliseconds + 1) / 1_000
        let tokens = Double(trace.reduce(0) { $0 + $1.inputTokens })
        let scale = promptTokensPerSecond / (tokens / span)
        let offset = random.below(trace.count)
        let origin = trace[offset].timestampMilliseconds / 1_000
        var requests: [TraceRequest] = []
        var index = offset
        var loops = 0.0
        var number: UInt64 = 0
        while true {
            let row = trace[index]
            let time = (row.timestampMilliseconds / 1_000 - origin + loops * span) / scale
            guard time < durationSeconds else { break }
            number += 1
            requests.append(request(at: time, prompt: prompt(row, number, &random), output: row.outputTokens))
            index += 1
            if index == trace.count {
                index = 0
                loops += 1
            }
        }
        return requests
    }
}

/// A run of tokens with one content: a prompt is a list of segments, and two prompts share a
/// prefix exactly as long as their segments agree from the start.
struct Segment: Hashable {
    var id: UInt64
    var tokens: Int

    /// The first `tokens` tokens of `segments`.
    static func prefix(_ segments: [Segment], tokens: Int) -> [Segment] {
        var result: [Segment] = []
        var left = tokens
        for segment in segments where left > 0 {
            result.append(Segment(id: segment.id, tokens: min(segment.tokens, left)))
            left -= segment.tokens
        }
        return result
    }

    /// Prefix-chained block ids, `tokensPerBlock` tokens each (the last may be partial: a
    /// partial block's id differs from the full block's that a longer prompt has there).
    static func blocks(_ segments: [Segment], tokensPerBlock: Int) -> [UInt64] {
        var blocks: [UInt64] = []
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        var filled = 0
        for segment in segments {
            var offset = 0
            while offset < segment.tokens {
                let count = min(segment.tokens - offset, tokensPerBlock - filled)
                hash = mix(hash, segment.id, UInt64(offset), UInt64(count))
                offset += count
                filled += count
                if filled == tokensPerBlock {
                    blocks.append(hash)
                    filled = 0
                }
            }
        }
        if filled > 0 { blocks.append(mix(hash, UInt64(filled), 0, 0xF)) }
        return blocks
    }
}

/// Zipf over `0..<count` with exponent `s` (rank 0 most popular), by its cumulative table.
struct Zipf: Sendable {
    private let cumulative: [Double]

    init(count: Int, exponent: Double) {
        var total = 0.0
        var table: [Double] = []
        for rank in 1...max(1, count) {
            total += 1 / pow(Double(rank), exponent)
            table.append(total)
        }
        cumulative = table.map { $0 / total }
    }

    func sample(random: inout SeededGenerator) -> Int {
        let u = random.unit()
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] < u { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// SplitMix64's finaliser over four words: ids for segments and blocks.
func mix(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) -> UInt64 {
    var z = a
    for word in [b, c, d] {
        z = (z ^ word) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
    }
    return z
}

func exponential(mean: Double, random: inout SeededGenerator) -> Double {
    -mean * log(1 - random.unit())
}

/// Log-normal with the given mean and log-space deviation.
func logNormal(mean: Double, sigma: Double, random: inout SeededGenerator) -> Double {
    let u1 = max(random.unit(), .leastNonzeroMagnitude)
    let u2 = random.unit()
    let normal = (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    return exp(log(mean) - sigma * sigma / 2 + sigma * normal)
}
