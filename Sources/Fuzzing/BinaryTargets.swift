import Balancer
import KVEvents
import NIOCore
import NIOEmbedded
import Raft
import RaftStorage
import RaftTransport
import WireCoding

/// Every binary decoder a peer or the log can feed, by name.
public enum FuzzTargets {
    public static let all: [any FuzzTarget] = [
        FrameStreamTarget(), MessagesTarget(), HelloTarget(), ChunksTarget(), CommandTarget(), CommandsThenRouteTarget(),
        BalancerSnapshotTarget(), StoredSnapshotTarget(), KVEventsTarget(),
    ]

    public static func named(_ name: String) -> (any FuzzTarget)? { all.first { $0.name == name } }
}

/// Sample Raft messages covering every field, for seeds.
enum SampleMessages {
    static var all: [Message] {
        var append = Message(kind: .append)
        append.from = 1
        append.to = 2
        append.term = 3
        append.logTerm = 2
        append.index = 10
        append.commit = 9
        append.entries = [
            Entry(term: 3, index: 11, kind: .normal, data: CommandEnvelope(issuedAt: 5, command: .deregisterWorker(id: "w1")).encoded()),
            Entry(term: 3, index: 12, kind: .normal, data: []),
        ]
        var response = Message(kind: .appendResponse)
        response.from = 2
        response.to = 1
        response.term = 3
        response.index = 12
        response.reject = true
        response.rejectHint = 7
        var vote = Message(kind: .vote)
        vote.from = 3
        vote.term = 4
        vote.context = Array("transfer".utf8)
        var snapshot = Message(kind: .snapshot)
        snapshot.from = 1
        snapshot.to = 3
        snapshot.term = 3
        snapshot.snapshot = Snapshot(
            metadata: SnapshotMetadata(index: 20, term: 3, confState: ConfState(voters: [1, 2, 3], learners: [4])),
            data: SampleCommands.state.snapshot()
        )
        return [append, response, vote, snapshot]
    }
}

/// Sample balancer commands of every kind, and a state they apply to.
enum SampleCommands {
    static let worker = Worker(
        id: "w1", model: "m", role: .prefill, address: "10.0.0.1:8000", group: "g", labels: ["zone": "a"],
        capacity: WorkerCapacity(kvBlocks: 800, blockSize: 16),
        resources: WorkerResources(coreLoads: [0.5, 0.25], memoryTotalBytes: 1 << 30, gpus: [GPUStatus(utilization: 0.5, memoryTotalBytes: 1 << 34, memoryUsedBytes: 1 << 33)]),
        location: GeoLocation(latitude: 48.8, longitude: 2.3)
    )

    static var all: [BalancerCommand] {
        let key = StickyKey(session: "s", model: "m", tier: "t")
        return [
            .registerWorker(worker),
            .deregisterWorker(id: "w1"),
            .setDraining(id: "w1", draining: true),
            .setHealth(id: "w1", verdict: .healthy),
            .setCircuit(id: "w1", state: .halfOpen),
            .reportLoads(["w1": EngineLoad(runningRequests: 3, waitingRequests: 1, queuedPrefillTokens: 900, kvBlocksUsed: 10, kvBlocksTotal: 800, stepLatencyMilliseconds: 6.5, reportedAt: 7)]),
            .reportResources(id: "w1", resources: WorkerResources(coreLoads: [0.1]), location: nil),
            .recordPrefixes([PrefixRecord(workerID: "w1", blocks: [1, 2, 3])]),
            .evictPrefixes([PrefixRecord(workerID: "w1", blocks: [3])]),
            .bindSticky([StickyBinding(key: key, workerID: "w1", expiresAt: 1_000)]),
            .unbindSticky(key),
            .setPolicy(model: "m", policy: ModelPolicy(strategies: [.prefill: .cacheAware], split: [StrategyArm(name: "a", strategy: .roundRobin, weight: 3)])),
            .setPolicy(model: "m", policy: nil),
            .setDefaultPolicy(ModelPolicy(strategies: [.decode: .leastLoad])),
            .setSettings(RoutingSettings()),
            .setTier(name: "big", tier: ResourceTier(vCPUs: 8, memoryBytes: 1 << 34, gpus: 1)),
            .setNodeEndpoint(node: 2, url: "http://127.0.0.1:8080"),
            .batch([.setHealth(id: "w1", verdict: .unhealthy), .setCircuit(id: "w1", state: .open)]),
        ]
    }

    /// A state holding one of everything, so commands have something to act on.
    static var state: BalancerState {
        var state = BalancerState()
        for (index, command) in all.enumerated() where !isRemoval(command) {
            state.apply(CommandEnvelope(issuedAt: UInt64(index + 1), command: command))
        }
        return state
    }

    static func isRemoval(_ command: BalancerCommand) -> Bool {
        switch command {
        case .deregisterWorker, .unbindSticky, .setPolicy(_, nil): true
        default: false
        }
    }
}

/// Bytes as they arrive on a peer connection, in up to three reads, through the frame decoder.
struct FrameStreamTarget: FuzzTarget {
    let name = "frames"
    static let maxPayload = 1 << 16

    func seeds() -> [[UInt8]] {
        let encoder = FrameEncoder()
        let hello = MessageCodec.encode(MessageCodec.Hello(clusterID: "c", from: 2, address: "127.0.0.1:7000"))
        let frames = [
            Frame(kind: .hello, payload: hello),
            Frame(kind: .messages, payload: MessageCodec.encode(SampleMessages.all)),
            Frame(kind: .chunk, payload: MessageCodec.chunks(of: Array(repeating: 7, count: 40), transfer: 1, chunkBytes: 64)[0]),
        ]
        var stream = ByteBuffer()
        for frame in frames { try? encoder.encode(data: frame, out: &stream) }
        return [Array(stream.readableBytesView)]
    }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxPayloadBytes: Self.maxPayload)))
        defer { _ = try? channel.finish() }
        // Split points from the input itself, so partial reads are exercised reproducibly.
        let first = input.isEmpty ? 0 : Int(input[0]) % (input.count + 1)
        let second = first + (input.count - first) / 2
        do {
            for range in [0..<first, first..<second, second..<input.count] where !range.isEmpty {
                try channel.writeInbound(ByteBuffer(bytes: input[range]))
            }
        } catch {
            return false  // the connection would be closed
        }
        var frames = 0
        while let frame = try? channel.readInbound(as: Frame.self) {
            guard frame.payload.count <= Self.maxPayload else { throw FuzzFinding("a frame over the cap got through") }
            frames += 1
        }
        return frames > 0
    }
}

/// A frame payload of Raft messages; what decodes must re-encode to the same messages.
struct MessagesTarget: FuzzTarget {
    let name = "messages"

    func seeds() -> [[UInt8]] { [MessageCodec.encode(SampleMessages.all)] + SampleMessages.all.map { MessageCodec.encode([$0]) } }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        guard let messages = try? MessageCodec.decodeMessages(input) else { return false }
        guard (try? MessageCodec.decodeMessages(MessageCodec.encode(messages))) == messages else {
            throw FuzzFinding("messages do not survive re-encoding")
        }
        return true
    }
}

struct HelloTarget: FuzzTarget {
    let name = "hello"

    func seeds() -> [[UInt8]] { [MessageCodec.encode(MessageCodec.Hello(clusterID: "fulcrum", from: 3, address: "10.0.0.3:7000"))] }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        guard let hello = try? MessageCodec.decodeHello(input) else { return false }
        guard (try? MessageCodec.decodeHello(MessageCodec.encode(hello))) == hello else { throw FuzzFinding("hello does not survive re-encoding") }
        return true
    }
}

/// A sequence of chunk payloads (each prefixed by a 2-byte length) into one assembler.
struct ChunksTarget: FuzzTarget {
    let name = "chunks"
    static let cap = 4096

    func seeds() -> [[UInt8]] {
        let chunks = MessageCodec.chunks(of: (0..<300).map { UInt8(truncatingIfNeeded: $0) }, transfer: 9, chunkBytes: 100)
        return [chunks.flatMap { [UInt8($0.count >> 8), UInt8($0.count & 0xFF)] + $0 }]
    }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        var assembler = ChunkAssembler(maxAssembledBytes: Self.cap)
        var offset = 0
        var completed = false
        while offset + 2 <= input.count {
            let length = Int(input[offset]) << 8 | Int(input[offset + 1])
            offset += 2
            let chunk = Array(input[offset..<min(input.count, offset + length)])
            offset += chunk.count
            do {
                if let whole = try assembler.add(chunk) {
                    guard whole.count <= Self.cap else { throw FuzzFinding("assembled \(whole.count) bytes over the cap") }
                    completed = true
                }
            } catch let finding as FuzzFinding {
                throw finding
            } catch {
                return completed
            }
        }
        return completed
    }
}

/// A log entry's command: what decodes re-encodes to the same command, applies to a populated
/// state without trapping, and the state then survives a snapshot round trip.
struct CommandTarget: FuzzTarget {
    let name = "commands"

    func seeds() -> [[UInt8]] { SampleCommands.all.enumerated().map { CommandEnvelope(issuedAt: UInt64($0.offset), command: $0.element).encoded() } }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        guard let envelope = try? CommandEnvelope(decoding: input) else { return false }
        guard (try? CommandEnvelope(decoding: envelope.encoded())) == envelope else { throw FuzzFinding("command does not survive re-encoding") }
        var state = SampleCommands.state
        state.apply(envelope)
        let snapshot = state.snapshot()
        guard let restored = try? BalancerState(snapshot: snapshot) else { throw FuzzFinding("the state after the command does not restore from its snapshot") }
        guard restored.fingerprint == state.fingerprint else { throw FuzzFinding("the restored state differs from the applied one") }
        return true
    }
}

/// A command from the log (a batch, often), applied; then every strategy routes every role
/// combination on the resulting state. Nothing a command can carry may make a decision trap
/// (issue 16: one absurd load stopped every leader in turn).
struct CommandsThenRouteTarget: FuzzTarget {
    let name = "commands-then-route"

    static let roleSets: [[WorkerRole]] = [[], [.pdfusion], [.prefill, .decode], [.vit, .decode], [.vit, .pdfusion]]

    func seeds() -> [[UInt8]] {
        var absurd = EngineLoad()
        absurd.runningRequests = .max
        absurd.waitingRequests = 1
        absurd.queuedPrefillTokens = .max
        absurd.kvBlocksUsed = .min
        absurd.stepLatencyMilliseconds = .infinity
        var settings = RoutingSettings()
        settings.stickyTTLMilliseconds = .max
        settings.boundedLoadFactor = .infinity
        let extreme: [BalancerCommand] = [
            .reportLoads(["w1": absurd]), .setSettings(settings),
            .batch([.reportLoads(["w1": absurd]), .setPolicy(model: "m", policy: ModelPolicy(strategies: [.prefill: .leastLoad]))]),
        ]
        return (SampleCommands.all + extreme).enumerated().map { CommandEnvelope(issuedAt: UInt64($0.offset), command: $0.element).encoded() }
    }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        guard let envelope = try? CommandEnvelope(decoding: input) else { return false }
        var state = SampleCommands.state
        state.apply(envelope)
        for strategy in StrategyKind.allCases {
            let strategies = Dictionary(uniqueKeysWithValues: WorkerRole.allCases.map { ($0, strategy) })
            state.apply(CommandEnvelope(
                issuedAt: envelope.issuedAt,
                command: .setPolicy(model: "m", policy: ModelPolicy(strategies: strategies, stickyFallback: strategy == .sticky ? .leastLoad : strategy))
            ))
            var router = Router(seed: envelope.issuedAt)
            for (index, roles) in Self.roleSets.enumerated() {
                let request = RoutingRequest(
                    model: "m", requestID: "r\(index)", sessionKey: "s", prompt: .tokens(Array(0..<48)), promptTokens: 48,
                    expectedOutputTokens: 16, roles: roles
                )
                _ = try? router.route(request, state: state, now: envelope.issuedAt)
            }
        }
        return true
    }
}

/// A balancer snapshot from a peer or the disk.
struct BalancerSnapshotTarget: FuzzTarget {
    let name = "balancer-snapshot"

    func seeds() -> [[UInt8]] { [SampleCommands.state.snapshot(), BalancerState().snapshot()] }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        guard let state = try? BalancerState(snapshot: input) else { return false }
        guard (try? BalancerState(snapshot: state.snapshot()))?.fingerprint == state.fingerprint else {
            throw FuzzFinding("a decoded snapshot does not survive re-encoding")
        }
        return true
    }
}

/// A stored (compressed, checksummed) snapshot as read back from SQLite.
struct StoredSnapshotTarget: FuzzTarget {
    let name = "stored-snapshot"

    func seeds() -> [[UInt8]] { [SnapshotCodec.compress(SampleCommands.state.snapshot()), SnapshotCodec.compress(Array(repeating: 1, count: 500))] }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        guard let data = try? SnapshotCodec.decompress(input) else { return false }
        guard (try? SnapshotCodec.decompress(SnapshotCodec.compress(data))) == data else { throw FuzzFinding("snapshot does not survive recompression") }
        return true
    }
}

/// An engine's KV-event batch (MessagePack from a ZeroMQ peer): decoded, re-encoded in both
/// encodings to the same events, and applied to a prefix mapper — nothing may trap.
struct KVEventsTarget: FuzzTarget {
    let name = "kv-events"

    func seeds() -> [[UInt8]] {
        let batch = KVEventBatch(timestamp: 1.5, events: [
            .stored(hashes: [1, 2], parent: nil, tokens: Array(1...8), blockSize: 4), .stored(hashes: [3], parent: 2, tokens: [9, 9, 9, 9], blockSize: 4),
            .removed(hashes: [1, 99]), .allCleared,
        ], dataParallelRank: 0)
        return [batch.encoded(.maps), batch.encoded(.arrays)]
    }

    func run(_ input: [UInt8]) throws(FuzzFinding) -> Bool {
        guard let batch = try? KVEventBatch.decode(input) else { return false }
        for encoding in [KVEventBatch.Encoding.maps, .arrays] {
            guard (try? KVEventBatch.decode(batch.encoded(encoding)))?.events == batch.events else {
                throw FuzzFinding("a decoded batch does not survive re-encoding as \(encoding)")
            }
        }
        var mapper = BlockMapper(model: "m", capacity: 64)
        let change = mapper.apply(batch)
        guard mapper.count <= 64, change.stored.count <= batch.events.reduce(0, { total, event in
            if case .stored(let hashes, _, _, _) = event { return total + hashes.count }
            return total
        }) else { throw FuzzFinding("the mapper grew past its bounds") }
        return true
    }
}
