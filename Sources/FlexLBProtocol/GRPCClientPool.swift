// Hand-written (not generated): the one pool of gRPC clients for rtp-llm's services, used by
// the leader's engine prober and by the simulator's replay.
public import GRPCCore
public import GRPCNIOTransportHTTP2
import Synchronization

/// One gRPC client (one HTTP/2 connection) per `host:port`, created on first use and running
/// its connections until closed. Clients not used for `idleLimit` (engines that left) are
/// closed by a sweep that runs at most once per `idleLimit`, so a lookup costs O(1).
public final class GRPCClientPool: Sendable {
    private struct Entry {
        let client: GRPCClient<HTTP2ClientTransport.Posix>
        var lastUsed: ContinuousClock.Instant
    }

    private struct Pool {
        var entries: [String: Entry] = [:]
        var lastSweep = ContinuousClock.now
    }

    private let pool = Mutex(Pool())
    private let idleLimit: Duration

    public init(idleLimit: Duration = .seconds(60)) { self.idleLimit = idleLimit }

    public func client(host: String, port: Int) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        let key = "\(host):\(port)"
        let now = ContinuousClock.now
        let (client, idle) = try pool.withLock { pool -> (GRPCClient<HTTP2ClientTransport.Posix>, [GRPCClient<HTTP2ClientTransport.Posix>]) in
            var idle: [GRPCClient<HTTP2ClientTransport.Posix>] = []
            if now - pool.lastSweep > idleLimit {
                pool.lastSweep = now
                for (address, entry) in pool.entries where now - entry.lastUsed > idleLimit {
                    idle.append(entry.client)
                    pool.entries[address] = nil
                }
            }
            if let client = pool.entries[key]?.client {
                pool.entries[key]!.lastUsed = now
                return (client, idle)
            }
            let client = GRPCClient(transport: try HTTP2ClientTransport.Posix(target: .dns(host: host, port: port), transportSecurity: .plaintext))
            pool.entries[key] = Entry(client: client, lastUsed: now)
            Task { try? await client.runConnections() }
            return (client, idle)
        }
        for client in idle { client.beginGracefulShutdown() }
        return client
    }

    /// Closes every client.
    public func shutdown() {
        let all = pool.withLock { pool in
            defer { pool.entries = [:] }
            return pool.entries.values.map(\.client)
        }
        for client in all { client.beginGracefulShutdown() }
    }
}
