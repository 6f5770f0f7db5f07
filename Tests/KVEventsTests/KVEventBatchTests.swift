import Balancer
import Foundation
@testable import KVEvents
import Testing

/// Engines' KV-cache event batches, byte for byte.
///
/// The vectors were written by msgspec 0.23 (the encoder vLLM and SGLang use) from the struct
/// definitions restated field for field from upstream:
/// - vllm-project/vllm `vllm/distributed/kv_events.py` at 0181ea3: `EventBatch(ts, events,
///   data_parallel_rank=None)` and `KVCacheEvent(tag=True)` without `array_like` (maps tagged
///   `"type"`), `BlockStored(block_hashes, parent_block_hash, token_ids, block_size, lora_id,
///   medium, lora_name, extra_keys=None, group_idx=None, …)`, `BlockRemoved(block_hashes,
///   medium, group_idx=None)`, `AllBlocksCleared`, all `omit_defaults=True`;
/// - sgl-project/sglang `python/sglang/srt/disaggregation/kv_events.py` at 006d053: the same
///   kinds with `array_like=True` (`BlockStored(block_hashes, parent_block_hash, token_ids,
///   block_size, lora_id)`, `BlockRemoved(block_hashes)`), as vLLM also wrote them before.
@Suite struct KVEventBatchTests {
    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    /// `KVEventBatch(ts=1.5, events=[BlockStored([2^64−1, 7], None, [1…8], 4, None, "GPU", None),
    /// BlockRemoved([7], "GPU"), AllBlocksCleared()], data_parallel_rank=0)`.
    static let vllmMaps = bytes(
        "83a27473cb3ff8000000000000a66576656e74739388a474797065ab426c6f636b53746f726564ac626c6f636b5f68617368657392cfffffffffffffffff07b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f696473980102030405060708aa626c6f636b5f73697a6504a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c083a474797065ac426c6f636b52656d6f766564ac626c6f636b5f6861736865739107a66d656469756da347505581a474797065b0416c6c426c6f636b73436c6561726564b2646174615f706172616c6c656c5f72616e6b00"
    )
    /// With `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`: digests as 32 bytes, and `group_idx=0`.
    static let vllmDigests = bytes(
        "83a27473cb4000000000000000a66576656e74739189a474797065ab426c6f636b53746f726564ac626c6f636b5f68617368657391c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fb1706172656e745f626c6f636b5f68617368c4200909090909090909090909090909090909090909090909090909090909090909a9746f6b656e5f6964739405060708aa626c6f636b5f73697a6504a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c0a967726f75705f69647800b2646174615f706172616c6c656c5f72616e6b00"
    )
    /// SGLang's `KVEventBatch(ts=1.5, events=[BlockStored([-2, 300], 12, [1…8], 4, None),
    /// BlockRemoved([300]), AllBlocksCleared()])`.
    static let sglangArrays = bytes(
        "92cb3ff80000000000009396ab426c6f636b53746f72656492fecd012c0c98010203040506070804c092ac426c6f636b52656d6f76656491cd012c91b0416c6c426c6f636b73436c6561726564"
    )

    @Test func decodesVLLMMaps() throws {
        let batch = try KVEventBatch.decode(Self.vllmMaps)
        #expect(batch.timestamp == 1.5 && batch.dataParallelRank == 0)
        #expect(batch.events == [
            .stored(hashes: [.max, 7], parent: nil, tokens: Array(1...8), blockSize: 4), .removed(hashes: [7]), .allCleared,
        ])
        // Encoding the decoded batch gives upstream's bytes back.
        #expect(batch.encoded(.maps) == Self.vllmMaps)
    }

    @Test func decodesDigestHashesToTheirLow64Bits() throws {
        let batch = try KVEventBatch.decode(Self.vllmDigests)
        // int.from_bytes(digest, "big") & (2^64 − 1): the last eight bytes.
        #expect(batch.events == [.stored(hashes: [0x1819_1a1b_1c1d_1e1f], parent: 0x0909_0909_0909_0909, tokens: [5, 6, 7, 8], blockSize: 4)])
    }

    @Test func decodesSGLangTaggedArrays() throws {
        let batch = try KVEventBatch.decode(Self.sglangArrays)
        #expect(batch.timestamp == 1.5 && batch.dataParallelRank == nil)
        #expect(batch.events == [
            .stored(hashes: [UInt64(bitPattern: -2), 300], parent: 12, tokens: Array(1...8), blockSize: 4), .removed(hashes: [300]), .allCleared,
        ])
        let again = try KVEventBatch.decode(batch.encoded(.arrays))
        #expect(again.events == batch.events)
    }

    @Test func refusesMalformedBatches() {
        let cases: [(String, [UInt8])] = [
            ("empty", []),
            ("truncated", Array(Self.vllmMaps.dropLast(3))),
            ("trailing bytes", Self.sglangArrays + [0x00]),
            ("a forged array length", [0xdd, 0xff, 0xff, 0xff, 0xff, 0x00]),
            ("deep nesting", Array(repeating: 0x91, count: 40) + [0x00]),
            ("not a batch", [0x05]),
            ("tokens not matching blocks", MsgPackEncoder.encode(.array([.float(1), .array([.array([
                .string("BlockStored"), .array([.unsigned(1)]), .null, .array([.unsigned(1)]), .unsigned(4), .null,
            ])])]))),
            ("block size zero", MsgPackEncoder.encode(.array([.float(1), .array([.array([
                .string("BlockStored"), .array([]), .null, .array([]), .unsigned(0), .null,
            ])])]))),
            ("a token id past 2^32", MsgPackEncoder.encode(.array([.float(1), .array([.array([
                .string("BlockStored"), .array([.unsigned(1)]), .null, .array([.unsigned(1 << 40)]), .unsigned(1), .null,
            ])])]))),
            ("invalid UTF-8", [0xa2, 0xff, 0xfe]),
            ("ts not finite", MsgPackEncoder.encode(.array([.float(.nan), .array([])]))),
        ]
        for (name, bytes) in cases {
            #expect(throws: MsgPackError.self, "\(name)") { try KVEventBatch.decode(bytes) }
        }
        // An event kind this version does not know is skipped, not fatal.
        let future = MsgPackEncoder.encode(.array([.float(1), .array([.array([.string("BlockMoved"), .unsigned(1)]), .array([.string("AllBlocksCleared")])])]))
        #expect((try? KVEventBatch.decode(future))?.events == [.allCleared])
    }

    /// Every prefix and every single-byte change of the vectors: errors, never a trap.
    @Test func survivesMutations() {
        for vector in [Self.vllmMaps, Self.vllmDigests, Self.sglangArrays] {
            for length in 0..<vector.count { _ = try? KVEventBatch.decode(Array(vector.prefix(length))) }
            for index in vector.indices {
                for value: UInt8 in [0x00, 0x7f, 0x80, 0xc1, 0xcf, 0xdc, 0xdd, 0xdf, 0xff] {
                    var mutated = vector
                    mutated[index] = value
                    _ = try? KVEventBatch.decode(mutated)
                }
            }
        }
    }

    @Test func msgPackRoundTripsEveryWidth() throws {
        let values: [MsgPackValue] = [
            .null, .bool(true), .unsigned(0), .unsigned(127), .unsigned(128), .unsigned(65_535), .unsigned(65_536), .unsigned(.max),
            .signed(-1), .signed(-32), .signed(-33), .signed(-129), .signed(-40_000), .signed(Int64.min), .float(-0.5),
            .string(""), .string(String(repeating: "x", count: 40)), .string(String(repeating: "é", count: 200)),
            .binary([1, 2, 3]), .binary(Array(repeating: 7, count: 300)), .array((0..<20).map { .unsigned(UInt64($0)) }),
            .map([(.string("a"), .unsigned(1))]), .ext(type: 5, data: [1, 2, 3, 4]), .ext(type: -1, data: [9, 9, 9]),
        ]
        for value in values {
            #expect(try MsgPackDecoder.decode(MsgPackEncoder.encode(value)) == value, "\(value)")
        }
    }
}

@Suite struct BlockMapperTests {
    /// Blocks stored from events get the names requests carrying the same token ids get.
    @Test func storedBlocksMatchTheHashesOfRequestsWithTheSameTokens() {
        var mapper = BlockMapper(model: "m", capacity: 1_000)
        let tokens: [UInt32] = Array(1...48)
        let requestBlocks = BlockHasher(tokensPerBlock: 16).blocks(tokens: tokens + [99, 98], model: "m")
        // The engine stores the first two blocks, then the third as their child.
        let first = mapper.apply(.stored(hashes: [0xA1, 0xA2], parent: nil, tokens: Array(tokens[0..<32]), blockSize: 16))
        let second = mapper.apply(.stored(hashes: [0xA3], parent: 0xA2, tokens: Array(tokens[32..<48]), blockSize: 16))
        #expect(first.stored + second.stored == requestBlocks)
        let removed = mapper.apply(.removed(hashes: [0xA3, 0xFFFF]))
        #expect(removed.removed == [requestBlocks[2]] && removed.stored.isEmpty)
        // A child of a forgotten block cannot be named.
        let orphan = mapper.apply(.stored(hashes: [0xB1], parent: 0xA3, tokens: Array(repeating: 5, count: 16), blockSize: 16))
        #expect(orphan.stored.isEmpty && orphan.unmapped == 1)
        let cleared = mapper.apply(.allCleared)
        #expect(cleared.cleared && mapper.count == 0)
    }

    @Test func theMapStaysWithinItsCapacity() {
        var mapper = BlockMapper(model: "m", capacity: 100)
        for index in 0..<1_000 {
            _ = mapper.apply(.stored(hashes: [UInt64(index)], parent: nil, tokens: [UInt32(index)], blockSize: 1))
        }
        #expect(mapper.count <= 100)
    }

    @Test func changesMergeInOrder() {
        var change = BlockMapper.Change()
        change.merge(.init(stored: [1, 2]))
        change.merge(.init(removed: [2]))
        #expect(change.stored == [1] && change.removed == [2])
        change.merge(.init(stored: [2]))
        #expect(change.stored == [1, 2] && change.removed == [2])
        change.merge(.init(cleared: true))
        #expect(change.cleared && change.stored.isEmpty)
    }
}

extension BlockMapper.Change {
    init(stored: [BlockHash] = [], removed: [BlockHash] = [], cleared: Bool = false) {
        self.init()
        self.stored = stored
        self.removed = removed
        self.cleared = cleared
    }
}

@Suite struct EventSequencerTests {
    /// Both layouts of a replay answer, as vLLM's `ZmqEventPublisher._service_replay`
    /// (vllm/distributed/kv_events.py, 0181ea3) sends them from its ROUTER —
    /// `[identity, "", seq, payload]`, which a DEALER receives as `["", seq, payload]` — and as a
    /// peer that strips the delimiter hands them on (`[seq, payload]`); `seq` −1 with an empty
    /// payload ends the replay. Anything else is malformed.
    @Test func replayAnswersInBothLayouts() {
        let payload: [UInt8] = [0x93, 0x01, 0x02, 0x03]
        let seven: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 7]
        let end: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(KVEventHub.replayAnswer([[], seven, payload]).map { [$0.sequence] + $0.payload.map(Int64.init) } == [7, 0x93, 1, 2, 3])
        #expect(KVEventHub.replayAnswer([seven, payload]).map { [$0.sequence] + $0.payload.map(Int64.init) } == [7, 0x93, 1, 2, 3])
        #expect(KVEventHub.replayAnswer([[], end, []])?.sequence == -1)
        #expect(KVEventHub.replayAnswer([end, []])?.sequence == -1)
        for malformed: [[UInt8]] in [[seven], [[1], seven, payload], [[0, 7], payload], [[0x80, 0, 0, 0, 0, 0, 0, 0], payload], [], [[], [], seven, payload]] {
            #expect(KVEventHub.replayAnswer(malformed) == nil, "\(malformed)")
        }
    }

    @Test func gapsAreReplayedInOrder() {
        var sequencer = EventSequencer(hasReplay: true)
        #expect(sequencer.start() == [.requestReplay(from: 0)])
        // Live batches during the start-up replay are held.
        #expect(sequencer.live(5, [5]).isEmpty)
        #expect(sequencer.replayed(3, [3]) == [.apply(sequence: 3, payload: [3])])
        #expect(sequencer.replayed(4, [4]) == [.apply(sequence: 4, payload: [4])])
        #expect(sequencer.replayEnded() == [.apply(sequence: 5, payload: [5])])
        #expect(sequencer.live(6, [6]) == [.apply(sequence: 6, payload: [6])])
        // 7 and 8 are lost.
        #expect(sequencer.live(9, [9]) == [.requestReplay(from: 7)])
        #expect(sequencer.live(10, [10]).isEmpty)
        #expect(sequencer.replayed(7, [7]) == [.apply(sequence: 7, payload: [7])])
        #expect(sequencer.replayed(8, [8]) == [.apply(sequence: 8, payload: [8])])
        #expect(sequencer.replayEnded() == [.apply(sequence: 9, payload: [9]), .apply(sequence: 10, payload: [10])])
        #expect(sequencer.live(10, [10]).isEmpty, "a duplicate is dropped")
    }

    @Test func whatCannotBeRecoveredResets() {
        var plain = EventSequencer(hasReplay: false)
        #expect(plain.start().isEmpty)
        #expect(plain.live(0, []) == [.apply(sequence: 0, payload: [])])
        let lost = plain.live(3, [])
        #expect(lost.count == 2 && lost.last == .apply(sequence: 3, payload: []))
        if case .reset = lost.first {} else { Issue.record("expected a reset, got \(lost)") }
        // The engine restarted: numbering begins again.
        let restarted = plain.live(0, [])
        if case .reset = restarted.first {} else { Issue.record("expected a reset, got \(restarted)") }
        // A replay that does not fill the gap resets instead of asking forever.
        var replaying = EventSequencer(hasReplay: true)
        _ = replaying.start()
        _ = replaying.replayEnded()
        _ = replaying.live(0, [])
        #expect(replaying.live(5, []) == [.requestReplay(from: 1)])
        let after = replaying.replayEnded()
        if case .reset = after.first {} else { Issue.record("expected a reset, got \(after)") }
        #expect(after.last == .apply(sequence: 5, payload: []))
    }

    @Test func sequenceNumbersAreEightBytesBigEndian() {
        #expect(Int64(5).bigEndianBytes == [0, 0, 0, 0, 0, 0, 0, 5])
        #expect(Int64(-1).bigEndianBytes == Array(repeating: 0xff, count: 8))
        #expect(Int64(bigEndianBytes: [0, 0, 0, 0, 0, 0, 1, 0]) == 256 && Int64(bigEndianBytes: [1]) == nil)
    }
}
