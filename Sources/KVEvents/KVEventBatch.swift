/// A batch of KV-cache events as vLLM and SGLang publish them (`--kv-events-config`), decoded
/// from msgspec's MessagePack. Two encodings exist, both read here:
///
/// - **maps** (vllm-project/vllm `vllm/distributed/kv_events.py`, 0181ea3, current releases):
///   the batch is `{"ts", "events", "data_parallel_rank"}` and each event a map tagged by
///   `"type"` — `BlockStored` (`block_hashes`, `parent_block_hash`, `token_ids`, `block_size`,
///   `lora_id`, `medium`, `lora_name`, then optional `extra_keys`, `group_idx`, …),
///   `BlockRemoved` (`block_hashes`, `medium`, optional `group_idx`), `AllBlocksCleared`;
/// - **tagged arrays** (`array_like=True`: sgl-project/sglang
///   `python/sglang/srt/disaggregation/kv_events.py`, 006d053, and vLLM before mid-2026): the
///   batch is `[ts, events, data_parallel_rank?]` and each event `[tag, fields…]` in the order
///   above.
///
/// A block hash is an integer (vLLM's default, the digest's low 64 bits; SGLang's may be
/// negative) or the digest's bytes (`VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`), folded to the
/// same low 64 bits (the last eight bytes, big-endian), so one block has one name either way.
public struct KVEventBatch: Sendable, Hashable {
    public var timestamp: Double
    public var events: [KVCacheEvent]
    public var dataParallelRank: Int?

    public init(timestamp: Double, events: [KVCacheEvent], dataParallelRank: Int? = nil) {
        self.timestamp = timestamp
        self.events = events
        self.dataParallelRank = dataParallelRank
    }

    /// What one batch may hold; an engine publishes one batch per scheduler step.
    public enum Limits {
        public static let events = 65_536
        public static let hashesPerEvent = 65_536
        public static let tokensPerEvent = 1 << 22
        public static let blockSize = 1...65_536
    }

    public enum Encoding: Sendable {
        case maps
        case arrays
    }

    public static func decode(_ bytes: [UInt8]) throws(MsgPackError) -> KVEventBatch {
        let value = try MsgPackDecoder.decode(bytes)
        switch value {
        case .map:
            guard let ts = value["ts"].flatMap(number) else { throw MsgPackError("batch: ts is missing or not a number") }
            guard let events = value["events"]?.elements else { throw MsgPackError("batch: events is missing or not an array") }
            let rank = value["data_parallel_rank"].flatMap { $0 == .null ? nil : $0.integer }
            return KVEventBatch(timestamp: ts, events: try decodeEvents(events), dataParallelRank: rank.map { Int(clamping: $0) })
        case .array(let fields):
            guard fields.count >= 2, let ts = number(fields[0]), let events = fields[1].elements else {
                throw MsgPackError("batch: expected [ts, events, data_parallel_rank?]")
            }
            let rank = fields.count > 2 ? fields[2].integer : nil
            return KVEventBatch(timestamp: ts, events: try decodeEvents(events), dataParallelRank: rank.map { Int(clamping: $0) })
        default:
            throw MsgPackError("batch: expected a map or an array")
        }
    }

    private static func decodeEvents(_ values: [MsgPackValue]) throws(MsgPackError) -> [KVCacheEvent] {
        guard values.count <= Limits.events else { throw MsgPackError("batch: \(values.count) events, at most \(Limits.events)") }
        var events: [KVCacheEvent] = []
        events.reserveCapacity(values.count)
        for (index, value) in values.enumerated() {
            do throws(MsgPackError) {
                if let event = try KVCacheEvent.decode(value) { events.append(event) }
            } catch {
                throw MsgPackError("events[\(index)]: \(error.description)")
            }
        }
        return events
    }

    static func number(_ value: MsgPackValue) -> Double? {
        switch value {
        case .float(let number): number.isFinite ? number : nil
        case .unsigned(let number): Double(number)
        case .signed(let number): Double(number)
        default: nil
        }
    }

    /// The batch in `encoding`, as msgspec writes it (for simulated engines and tests).
    public func encoded(_ encoding: Encoding) -> [UInt8] {
        let events = MsgPackValue.array(self.events.map { $0.value(encoding) })
        switch encoding {
        case .maps:
            var pairs: [(MsgPackValue, MsgPackValue)] = [(.string("ts"), .float(timestamp)), (.string("events"), events)]
            if let dataParallelRank { pairs.append((.string("data_parallel_rank"), .unsigned(UInt64(max(0, dataParallelRank))))) }
            return MsgPackEncoder.encode(.map(pairs))
        case .arrays:
            var fields: [MsgPackValue] = [.float(timestamp), events]
            if let dataParallelRank { fields.append(.unsigned(UInt64(max(0, dataParallelRank)))) }
            return MsgPackEncoder.encode(.array(fields))
        }
    }
}

public enum KVCacheEvent: Sendable, Hashable {
    /// Blocks newly cached: `hashes[i]` holds `tokens[i·blockSize ..< (i+1)·blockSize]`, and
    /// the first block follows `parent` (nil: it starts a prompt).
    case stored(hashes: [UInt64], parent: UInt64?, tokens: [UInt32], blockSize: Int)
    case removed(hashes: [UInt64])
    case allCleared

    static let fieldOrder: [String: [String]] = [
        "BlockStored": ["block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name"],
        "BlockRemoved": ["block_hashes", "medium"],
        "AllBlocksCleared": [],
    ]

    /// Nil for an event of a kind this version does not know (skipped, as msgspec would
    /// refuse it but a newer engine may add kinds); throws for a malformed known one.
    static func decode(_ value: MsgPackValue) throws(MsgPackError) -> KVCacheEvent? {
        let tag: String
        var field: (String) -> MsgPackValue?
        switch value {
        case .map:
            guard let type = value["type"]?.text else { throw MsgPackError("an event map has no type tag") }
            tag = type
            field = { value[$0] }
        case .array(let items):
            guard let type = items.first?.text else { throw MsgPackError("an event array does not start with its tag") }
            tag = type
            let order = fieldOrder[type] ?? []
            field = { name in
                guard let position = order.firstIndex(of: name), position + 1 < items.count else { return nil }
                return items[position + 1]
            }
        default:
            throw MsgPackError("an event is neither a map nor an array")
        }
        switch tag {
        case "BlockStored":
            let hashes = try blockHashes(field("block_hashes"))
            let parent: UInt64?
            switch field("parent_block_hash") {
            case nil, .null?: parent = nil
            case let value?: parent = try blockHash(value)
            }
            guard let size = field("block_size")?.integer, Int(clamping: size) >= KVEventBatch.Limits.blockSize.lowerBound,
                  Int(clamping: size) <= KVEventBatch.Limits.blockSize.upperBound else {
                throw MsgPackError("BlockStored: block_size must be in \(KVEventBatch.Limits.blockSize)")
            }
            guard let tokenValues = field("token_ids")?.elements, tokenValues.count <= KVEventBatch.Limits.tokensPerEvent else {
                throw MsgPackError("BlockStored: token_ids must be an array of at most \(KVEventBatch.Limits.tokensPerEvent)")
            }
            var tokens: [UInt32] = []
            tokens.reserveCapacity(tokenValues.count)
            for token in tokenValues {
                guard case .unsigned(let id) = token, id <= UInt64(UInt32.max) else { throw MsgPackError("BlockStored: a token id is not in 0...2^32−1") }
                tokens.append(UInt32(id))
            }
            guard tokens.count == hashes.count * Int(size) else {
                throw MsgPackError("BlockStored: \(tokens.count) token ids for \(hashes.count) blocks of \(size)")
            }
            return .stored(hashes: hashes, parent: parent, tokens: tokens, blockSize: Int(size))
        case "BlockRemoved":
            return .removed(hashes: try blockHashes(field("block_hashes")))
        case "AllBlocksCleared":
            return .allCleared
        default:
            return nil
        }
    }

    static func blockHashes(_ value: MsgPackValue?) throws(MsgPackError) -> [UInt64] {
        guard let items = value?.elements, items.count <= KVEventBatch.Limits.hashesPerEvent else {
            throw MsgPackError("block_hashes must be an array of at most \(KVEventBatch.Limits.hashesPerEvent)")
        }
        var hashes: [UInt64] = []
        hashes.reserveCapacity(items.count)
        for item in items { hashes.append(try blockHash(item)) }
        return hashes
    }

    /// An integer (negative ones by their bit pattern) or a digest's bytes (the last eight,
    /// big-endian: `int.from_bytes(digest, "big") & (2^64 − 1)`).
    static func blockHash(_ value: MsgPackValue) throws(MsgPackError) -> UInt64 {
        switch value {
        case .unsigned(let hash): return hash
        case .signed(let hash): return UInt64(bitPattern: hash)
        case .binary(let digest) where !digest.isEmpty && digest.count <= 64:
            return digest.suffix(8).reduce(0) { $0 << 8 | UInt64($1) }
        default: throw MsgPackError("a block hash is neither an integer nor 1 to 64 bytes")
        }
    }

    func value(_ encoding: KVEventBatch.Encoding) -> MsgPackValue {
        let tag: String
        var fields: [(String, MsgPackValue)]
        switch self {
        case .stored(let hashes, let parent, let tokens, let blockSize):
            tag = "BlockStored"
            fields = [
                ("block_hashes", .array(hashes.map { .unsigned($0) })), ("parent_block_hash", parent.map { .unsigned($0) } ?? .null),
                ("token_ids", .array(tokens.map { .unsigned(UInt64($0)) })), ("block_size", .unsigned(UInt64(blockSize))),
                ("lora_id", .null),
            ]
            if encoding == .maps { fields += [("medium", .string("GPU")), ("lora_name", .null)] }
        case .removed(let hashes):
            tag = "BlockRemoved"
            fields = [("block_hashes", .array(hashes.map { .unsigned($0) }))]
            if encoding == .maps { fields.append(("medium", .string("GPU"))) }
        case .allCleared:
            tag = "AllBlocksCleared"
            fields = []
        }
        switch encoding {
        case .maps: return .map([(.string("type"), .string(tag))] + fields.map { (.string($0.0), $0.1) })
        case .arrays: return .array([.string(tag)] + fields.map(\.1))
        }
    }
}
