import NIOCore
import NIOEmbedded
import Raft
@testable import RaftTransport
import Testing
import WireCoding

func sampleMessages() -> [Message] {
    let conf = ConfState(voters: [1, 2, 3], votersOutgoing: [1, 2], learners: [4], learnersNext: [2], autoLeave: true)
    return [
        Message(kind: .append, from: 1, to: 2, term: 7, logTerm: 6, index: 41, entries: [
            Entry(term: 7, index: 42, data: Array("hello".utf8)), Entry(term: 7, index: 43, kind: .confChange, data: [1, 2]),
        ], commit: 40),
        Message(kind: .appendResponse, from: 2, to: 1, term: 7, logTerm: 5, index: 43, reject: true, rejectHint: 30),
        Message(kind: .heartbeat, from: 1, to: 3, term: 7, commit: 40, context: [9, 9]),
        Message(kind: .snapshot, from: 1, to: 4, term: 7, snapshot: Snapshot(
            metadata: SnapshotMetadata(index: 100, term: 6, confState: conf), data: Array(repeating: 0xAB, count: 1000)
        )),
        Message(kind: .transferLeader, from: 3, to: 1),
    ]
}

@Suite struct FrameCodecTests {
    func channel(maxPayload: Int = 1 << 20) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxPayloadBytes: maxPayload)))
        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
        return channel
    }

    func encoded(_ frame: Frame) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        try FrameEncoder().encode(data: frame, out: &buffer)
        return buffer
    }

    /// Peer addresses are bounded where they enter (registration of members, updates, hellos):
    /// a host of at most 253 bytes of printable ASCII, a port in 1...65535.
    @Test func peerAddressesAreBounded() {
        #expect(PeerAddress("node-1.fulcrum-peer:7100")?.host == "node-1.fulcrum-peer")
        #expect(PeerAddress("[fd00::1]:7100")?.host == "fd00::1")
        #expect(PeerAddress(String(repeating: "a", count: 253) + ":1") != nil)
        for bad in [String(repeating: "a", count: 254) + ":1", String(repeating: "a", count: 1 << 20) + ":7100", "h o:1", "h\u{0}:1",
                    "hé:1", ":1", "h:0", "h:65536", "h:-1", "h:\(Int.max)", "h"] {
            #expect(PeerAddress(bad) == nil, "\(bad.prefix(20))")
        }
    }

    @Test func framesSurviveTheWireEvenByteByByte() throws {
        let channel = try channel()
        let frames = [
            Frame(kind: .hello, payload: MessageCodec.encode(.init(clusterID: "c", from: 1))),
            Frame(kind: .messages, payload: MessageCodec.encode(sampleMessages())),
            Frame(kind: .messages, payload: []),
        ]
        var all = ByteBuffer()
        for frame in frames {
            var buffer = try encoded(frame)
            all.writeBuffer(&buffer)
        }
        while let byte = all.readSlice(length: 1) { try channel.writeInbound(byte) }
        for frame in frames { #expect(try channel.readInbound(as: Frame.self) == frame) }
        #expect(try channel.readInbound(as: Frame.self) == nil)
        _ = try channel.finish()
    }

    func expectRejection(_ bytes: ByteBuffer, _ code: TransportError.Code, maxPayload: Int = 1 << 20) throws {
        let channel = try channel(maxPayload: maxPayload)
        do {
            try channel.writeInbound(bytes)
            Issue.record("expected \(code), the frame was accepted")
        } catch let error as TransportError {
            #expect(error.code == code)
        } catch {
            Issue.record("unexpected \(error)")
        }
        _ = try? channel.finish()
    }

    @Test func aWrongMagicVersionSizeOrChecksumIsRefused() throws {
        let good = try encoded(Frame(kind: .messages, payload: MessageCodec.encode(sampleMessages())))
        var badMagic = good
        badMagic.setInteger(UInt8(0x47), at: 0)
        try expectRejection(badMagic, .badMagic)
        var badVersion = good
        badVersion.setInteger(UInt8(9), at: 2)
        try expectRejection(badVersion, .unsupportedVersion)
        try expectRejection(good, .frameTooLarge, maxPayload: 16)
        var flipped = good
        flipped.setInteger(flipped.getInteger(at: 40, as: UInt8.self)! ^ 0xFF, at: 40)
        try expectRejection(flipped, .checksumMismatch)
        var badType = good
        badType.setInteger(UInt8(77), at: 3)
        try expectRejection(badType, .malformedPayload)
    }

    @Test func randomGarbageNeverCrashesTheDecoder() throws {
        var random = SplitMix64(seed: 1)
        for _ in 0..<2_000 {
            let channel = try channel()
            var buffer = ByteBuffer()
            // Half the inputs start with a valid header prefix, to get past the magic check.
            if random.next() % 2 == 0 { buffer.writeBytes([0x46, 0x52, 1, UInt8(1 + random.next() % 3)]) }
            for _ in 0..<(random.next() % 80) { buffer.writeInteger(UInt8(truncatingIfNeeded: random.next())) }
            _ = try? channel.writeInbound(buffer)
            _ = try? channel.finish()
        }
    }
}

@Suite struct MessageCodecTests {
    @Test func everyFieldOfEveryMessageRoundTrips() throws {
        let messages = sampleMessages()
        #expect(try MessageCodec.decodeMessages(MessageCodec.encode(messages)) == messages)
        let hello = MessageCodec.Hello(clusterID: "prod-eu", from: 12)
        #expect(try MessageCodec.decodeHello(MessageCodec.encode(hello)) == hello)
    }

    @Test func truncatedOrAlteredPayloadsAreRefused() {
        let bytes = MessageCodec.encode(sampleMessages())
        for length in 0..<bytes.count {
            #expect(throws: DecodingError.self) { try MessageCodec.decodeMessages(Array(bytes[..<length])) }
        }
        var badKind = bytes
        badKind[1] = 200
        #expect(throws: DecodingError.self) { try MessageCodec.decodeMessages(badKind) }
        // A count claiming more messages than bytes left.
        #expect(throws: DecodingError.self) { try MessageCodec.decodeMessages([0xFF, 0xFF, 0xFF, 0x7F]) }
    }

    @Test func chunksReassembleInOrderAndNothingElse() throws {
        let payload = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let chunks = MessageCodec.chunks(of: payload, transfer: 5, chunkBytes: 999)
        #expect(chunks.count == 11)
        var assembler = ChunkAssembler(maxAssembledBytes: 1 << 20)
        for chunk in chunks.dropLast() { #expect(try assembler.add(chunk) == nil) }
        #expect(try assembler.add(chunks.last!) == payload)

        var outOfOrder = ChunkAssembler(maxAssembledBytes: 1 << 20)
        _ = try outOfOrder.add(chunks[0])
        #expect(throws: TransportError.self) { try outOfOrder.add(chunks[2]) }

        var small = ChunkAssembler(maxAssembledBytes: 5_000)
        #expect(throws: TransportError.self) { for chunk in chunks { _ = try small.add(chunk) } }
        var garbage = ChunkAssembler(maxAssembledBytes: 1 << 20)
        #expect(throws: TransportError.self) { try garbage.add([1, 2, 3]) }
    }
}
