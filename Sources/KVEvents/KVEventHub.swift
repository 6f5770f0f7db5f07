import Foundation
import Synchronization

/// Subscribes to engines' KV-event publishers over ZeroMQ, on one thread of its own (libzmq
/// sockets belong to one thread): a SUB socket per engine on its `endpoint`, and a DEALER on its
/// `replay_endpoint` when it has one. Frames are checked (`[topic, seq(8), payload]` live;
/// `["", seq(8), payload]` or `[seq(8), payload]` from the replay socket), batches are put in
/// order by an ``EventSequencer`` and decoded, and what results is handed to `deliver`.
/// Malformed frames and batches are dropped and counted, never thrown.
public final class KVEventHub: Sendable {
    public struct Endpoints: Sendable, Hashable {
        public var events: String
        public var replay: String?

        public init(events: String, replay: String?) {
            self.events = events
            self.replay = replay
        }
    }

    public enum Delivery: Sendable {
        case batch(KVEventBatch)
        /// What was known of the engine's cache is no longer true (see ``EventSequencer``).
        case reset(reason: String)
    }

    /// Counters, read by metrics.
    public struct Counts: Sendable, Equatable {
        public var batches = 0
        public var malformed = 0
        public var gaps = 0
        public var resets = 0
        public var replayed = 0
    }

    private struct Shared {
        var wanted: [String: Endpoints] = [:]
        var counts = Counts()
        var running = true
    }

    private final class Subscription {
        let endpoints: Endpoints
        let events: ZMQSocket
        let replay: ZMQSocket?
        var sequencer: EventSequencer
        var replayDeadline: ContinuousClock.Instant?

        init(_ endpoints: Endpoints) throws {
            self.endpoints = endpoints
            events = try ZMQSocket(.sub)
            try events.connect(endpoints.events)
            if let endpoint = endpoints.replay {
                let socket = try ZMQSocket(.dealer)
                try socket.connect(endpoint)
                replay = socket
            } else {
                replay = nil
            }
            sequencer = EventSequencer(hasReplay: replay != nil)
        }
    }

    public static let replayTimeout: Duration = .seconds(2)

    private let shared = Mutex(Shared())
    private let deliver: @Sendable (String, Delivery) -> Void
    private let log: @Sendable (String) -> Void

    /// `deliver` and `log` run on the hub's thread and must not block.
    public init(deliver: @escaping @Sendable (String, Delivery) -> Void, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.deliver = deliver
        self.log = log
        let thread = Thread { [self] in run() }
        thread.name = "kv-events"
        thread.start()
    }

    /// The engines to follow, by id: new ones are subscribed, gone or changed ones dropped.
    public func follow(_ wanted: [String: Endpoints]) {
        shared.withLock { $0.wanted = wanted }
    }

    public var counts: Counts { shared.withLock { $0.counts } }

    public func stop() {
        shared.withLock { $0.running = false }
    }

    private func count(_ change: (inout Counts) -> Void) {
        shared.withLock { change(&$0.counts) }
    }

    private func run() {
        var subscriptions: [String: Subscription] = [:]
        var failed: [String: (Endpoints, ContinuousClock.Instant)] = [:]
        while true {
            let (running, wanted) = shared.withLock { ($0.running, $0.wanted) }
            guard running else { break }
            for (id, subscription) in subscriptions where wanted[id] != subscription.endpoints {
                subscriptions[id] = nil
                subscription.events.close()
                subscription.replay?.close()
            }
            failed = failed.filter { wanted[$0.key] == $0.value.0 }
            for (id, endpoints) in wanted where subscriptions[id] == nil {
                if let (_, retryAt) = failed[id], ContinuousClock.now < retryAt { continue }
                do {
                    let subscription = try Subscription(endpoints)
                    subscriptions[id] = subscription
                    failed[id] = nil
                    perform(subscription.sequencer.start(), id: id, subscription)
                } catch {
                    log("cannot subscribe to the KV events of \(id) at \(endpoints.events): \(error)")
                    failed[id] = (endpoints, .now + .seconds(5))
                }
            }
            let order = subscriptions.keys.sorted()
            var sockets: [ZMQSocket] = []
            for id in order {
                sockets.append(subscriptions[id]!.events)
                if let replay = subscriptions[id]!.replay { sockets.append(replay) }
            }
            let ready = ZMQSocket.poll(sockets, timeoutMilliseconds: 50)
            var index = 0
            for id in order {
                let subscription = subscriptions[id]!
                if ready.indices.contains(index), ready[index] { drainLive(subscription, id: id) }
                index += 1
                if subscription.replay != nil {
                    if ready.indices.contains(index), ready[index] { drainReplay(subscription, id: id) }
                    index += 1
                }
                if let deadline = subscription.replayDeadline, ContinuousClock.now > deadline {
                    subscription.replayDeadline = nil
                    log("the replay of \(id)'s KV events timed out")
                    perform(subscription.sequencer.replayEnded(), id: id, subscription)
                }
            }
        }
        for subscription in subscriptions.values {
            subscription.events.close()
            subscription.replay?.close()
        }
    }

    private func drainLive(_ subscription: Subscription, id: String) {
        for _ in 0..<1_024 {
            let frames: [[UInt8]]?
            do {
                frames = try subscription.events.receive()
            } catch {
                log("receiving \(id)'s KV events failed: \(error)")
                return
            }
            guard let frames else { return }
            guard frames.count == 3, let sequence = Int64(bigEndianBytes: frames[1]), sequence >= 0 else {
                count { $0.malformed += 1 }
                continue
            }
            let before = subscription.sequencer.replaying
            let actions = subscription.sequencer.live(sequence, frames[2])
            if !before && subscription.sequencer.replaying { count { $0.gaps += 1 } }
            perform(actions, id: id, subscription)
        }
    }

    /// One answer of an engine's replay socket: `["", seq, payload]` as a DEALER receives what
    /// the ROUTER sends (its empty delimiter kept), or `[seq, payload]` (a peer that strips
    /// it); `seq` is 8 bytes big-endian, −1 (with an empty payload) ending the replay. Nil
    /// for anything else.
    static func replayAnswer(_ frames: [[UInt8]]) -> (sequence: Int64, payload: [UInt8])? {
        var frames = frames
        if frames.count == 3, frames[0].isEmpty { frames.removeFirst() }
        guard frames.count == 2, frames[0].count == 8, let sequence = Int64(bigEndianBytes: frames[0]), sequence >= -1 else { return nil }
        return (sequence, frames[1])
    }

    private func drainReplay(_ subscription: Subscription, id: String) {
        guard let socket = subscription.replay else { return }
        for _ in 0..<1_024 {
            let frames: [[UInt8]]?
            do {
                frames = try socket.receive()
            } catch {
                return
            }
            guard let frames else { return }
            guard let (sequence, payload) = Self.replayAnswer(frames) else {
                count { $0.malformed += 1 }
                continue
            }
            if sequence == -1 {
                subscription.replayDeadline = nil
                perform(subscription.sequencer.replayEnded(), id: id, subscription)
            } else {
                count { $0.replayed += 1 }
                perform(subscription.sequencer.replayed(sequence, payload), id: id, subscription)
            }
        }
    }

    private func perform(_ actions: [EventSequencer.Action], id: String, _ subscription: Subscription) {
        for action in actions {
            switch action {
            case .apply(_, let payload):
                do {
                    let batch = try KVEventBatch.decode(payload)
                    count { $0.batches += 1 }
                    deliver(id, .batch(batch))
                } catch {
                    count { $0.malformed += 1 }
                    log("dropped a malformed KV event batch from \(id): \(error)")
                }
            case .reset(let reason):
                count { $0.resets += 1 }
                log("KV events of \(id): \(reason)")
                deliver(id, .reset(reason: reason))
            case .requestReplay(let start):
                do {
                    try subscription.replay?.send([[], start.bigEndianBytes])
                    subscription.replayDeadline = .now + Self.replayTimeout
                } catch {
                    subscription.replayDeadline = nil
                    perform(subscription.sequencer.replayEnded(), id: id, subscription)
                }
            }
        }
    }
}
