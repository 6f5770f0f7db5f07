import Foundation
import FulcrumAPI
import Testing

/// Wall-clock jumps (through the node's injectable clock, `fault_injection`) move nothing the
/// cluster keeps in time. A leader whose clock leaps two hours ahead stamps a command; a
/// successor whose clock is two hours behind binds new sessions; a third node takes over and
/// every session, old and new, is still bound to its worker, and the workers stay healthy.
/// (With stamps from the wall clock the first jump expired every binding on every replica, and
/// the second created bindings already expired.)
@Suite(.serialized) struct ClockJumpTests {
    /// Routes `sessions` through `node`; each session's worker and the reason given.
    static func route(_ sessions: [String], _ cluster: ProcessCluster, via node: UInt64) async throws -> [String: Placement] {
        var placed: [String: Placement] = [:]
        for session in sessions {
            let answer = try await cluster.request(
                .POST, cluster.endpoint(node) + "/v1/route", json: #"{"model":"m","prompt":"hello","session_id":"\#(session)"}"#
            )
            guard answer.status == 200, let target = answer.decode(RouteResponse.self)?.targets.first else { throw IntegrationError("route of \(session) via node \(node): \(answer)") }
            placed[session] = Placement(worker: target.workerId, reason: target.reason)
        }
        return placed
    }

    struct Placement: Equatable, CustomStringConvertible {
        var worker: String
        var reason: String
        var description: String { "\(worker) (\(reason))" }
    }

    static func transfer(_ cluster: ProcessCluster, from leader: UInt64, to target: UInt64) async throws {
        _ = try await cluster.request(.POST, cluster.endpoint(leader) + "/admin/leader/transfer", json: #"{"to":\#(target)}"#)
        for _ in 0..<200 {
            if (try? await cluster.leader()) == target { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw IntegrationError("leadership did not move from \(leader) to \(target)")
    }

    static func expectSticky(_ now: [String: Placement], _ before: [String: Placement], _ when: String) {
        for (session, placement) in before {
            #expect(now[session]?.worker == placement.worker && now[session]?.reason == "sticky",
                    "\(session) \(when): \(String(describing: now[session])), bound to \(placement)")
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func stickySessionsOutliveWallClockJumpsOnEveryLeader() async throws {
        let environment = ["FULCRUM_FAULT_INJECTION": "true", "FULCRUM_LOG_LEVEL": "warning"]
        try await ServingClusterTests.with(engines: 4, environment: environment) { cluster, fleet in
            let first = try await cluster.leader()
            try await cluster.waitUntilReady()
            try await ServingClusterTests.register(cluster, fleet, via: first)
            let policy = #"{"strategies":{"PDFUSION":"sticky"},"sticky_fallback":"round_robin"}"#
            #expect(try await cluster.request(.PUT, cluster.endpoint(first) + "/admin/config/default_policy", json: policy).status == 200)
            let ttl = #"{"sticky_ttl_ms":600000}"#
            #expect(try await cluster.request(.PATCH, cluster.endpoint(first) + "/admin/config/settings", json: ttl).status == 200)
            let old = (0..<8).map { "old-\($0)" }
            let new = (0..<8).map { "new-\($0)" }
            // Until the engines are polled healthy, routes are refused.
            var bound: [String: Placement] = [:]
            for _ in 0..<100 {
                if let placed = try? await Self.route(old, cluster, via: first) { bound = placed; break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(bound.count == old.count)
            #expect(Set(bound.values.map(\.worker)).count > 1, "round robin spread the sessions")
            try await Task.sleep(for: .milliseconds(500))  // the bindings reach the log

            // The leader's wall clock leaps two hours ahead, and it stamps a command.
            try await cluster.fault(first, #"{"clock_jump_ms":7200000}"#)
            #expect(try await cluster.request(.PATCH, cluster.endpoint(first) + "/admin/config/settings", json: ttl).status == 200)
            let second = cluster.founders.first { $0 != first }!
            let third = cluster.founders.first { $0 != first && $0 != second }!
            try await Self.transfer(cluster, from: first, to: second)
            Self.expectSticky(try await Self.route(old, cluster, via: second), bound, "after a leader two hours ahead")

            // The next leader's wall clock falls two hours behind, and it binds new sessions.
            try await cluster.fault(second, #"{"clock_jump_ms":-7200000}"#)
            bound.merge(try await Self.route(new, cluster, via: second)) { $1 }
            try await Task.sleep(for: .milliseconds(500))
            try await Self.transfer(cluster, from: second, to: third)
            Self.expectSticky(try await Self.route(old + new, cluster, via: third), bound, "after a leader two hours behind")

            // The engines stayed healthy throughout.
            let workers = try await cluster.request(.GET, cluster.endpoint(third) + "/admin/workers?consistent=true")
            let health = (workers.decode(WorkerList.self)?.workers ?? []).map(\.health)
            #expect(health.count == 4 && health.allSatisfy { $0 == "healthy" }, "\(health)")
        }
    }
}
