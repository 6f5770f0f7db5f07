import Foundation
public import Hummingbird
public import Server
public import Serving
import FulcrumAPI

/// Fault injection for the fault suites, on nodes started with `fault_injection: true` only
/// (the routes do not exist otherwise). `POST /admin/fault` sets any of:
/// - `fsync_delay_ms`: every fsync first sleeps this long (a slow disk);
/// - `disk`: `healthy`, `full` (writes fail with SQLITE_FULL) or `io_error` (writes and fsyncs
///   fail; a failed fsync loses the file's unsynced writes). A node whose log write fails stops
///   (exits non-zero), as a Raft node must when it cannot make its writes durable;
/// - `clock_jump_ms`: moves the wall clock this node reads (see ``ClusterClock``);
/// - `power_loss: true`: undoes every write not yet fsynced and kills the process at once.
/// `GET /admin/fault` answers the counters.
public struct FaultAPI: Sendable {
    let clock: ClusterClock

    public init(clock: ClusterClock) { self.clock = clock }

    struct Change: Decodable {
        var fsyncDelayMs: Int?
        var disk: String?
        var clockJumpMs: Int64?
        var powerLoss: Bool?
    }

    struct State: ResponseEncodable {
        var wallClockOffsetMs: Int64
        var unsyncedBytes: Int64
        var syncs: Int64
    }

    public func addRoutes(to router: RouterGroup<FulcrumRequestContext>) {
        router.get("admin/fault") { _, _ in state() }
        router.post("admin/fault") { request, context -> State in
            var request = request
            let change = try await request.decodeJSON(Change.self, context: context)
            var disk: StorageFaults.DiskMode?
            if let name = change.disk {
                guard let mode = StorageFaults.DiskMode(rawValue: name) else {
                    let names = StorageFaults.DiskMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw APIError.badRequest(field: "disk", "one of \(names), got '\(name)'")
                }
                disk = mode
            }
            if let delay = change.fsyncDelayMs {
                guard (0...60_000).contains(delay) else { throw APIError.badRequest(field: "fsync_delay_ms", "expected 0…60000") }
            }
            if let jump = change.clockJumpMs {
                guard abs(jump) <= 10 * 365 * 86_400_000 else { throw APIError.badRequest(field: "clock_jump_ms", "at most ten years either way") }
            }
            if change.powerLoss == true { StorageFaults.powerLoss() }
            if let delay = change.fsyncDelayMs { StorageFaults.setSyncDelay(milliseconds: delay) }
            if let disk { StorageFaults.setDiskMode(disk) }
            if let jump = change.clockJumpMs { clock.jumpWallClock(by: jump) }
            return state()
        }
    }

    private func state() -> State {
        State(wallClockOffsetMs: clock.wallClockOffset, unsyncedBytes: StorageFaults.unsyncedBytes, syncs: StorageFaults.syncs)
    }
}
