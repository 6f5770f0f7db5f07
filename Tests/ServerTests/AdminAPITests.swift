import Cluster
import Foundation
import Hummingbird
import HummingbirdTesting
import Raft
import RaftTransport
import Server
import Serving
import Testing

/// The admin API against a single-node cluster, through Hummingbird's test client.
@Suite struct AdminAPITests {
    @Test(.timeLimit(.minutes(1)))
    func registersWorkersAndNamesTheFieldOfEveryBadRequest() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fulcrum-api-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let address = PeerAddress(host: "127.0.0.1", port: 0)
        var settings = NodeSettings(clusterID: "api", dataDirectory: directory, peerListen: address, bootstrap: [1: address], nodeID: 1)
        settings.durability = .normal
        let machine = BalancerMachine()
        let node = try ClusterNode(settings: settings, machine: machine)
        let running = Task { try await node.run() }
        defer { running.cancel() }
        while await node.status().role != "leader" { try await Task.sleep(for: .milliseconds(10)) }

        let router = Hummingbird.Router(context: FulcrumRequestContext.self)
        let api = AdminAPI(proposer: CommandProposer(node: node, clock: machine.clock, metrics: ServerMetrics()))
        api.addProbes(to: router)
        api.addRoutes(to: router.group())
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { #expect($0.status == .ok) }
            let good = #"{"id":"w1","model":"llama","role":"PREFILL","address":"10.0.0.5:8000"}"#
            try await client.execute(uri: "/admin/workers", method: .post, body: ByteBuffer(string: good)) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).contains("applied"))
            }
            try await client.execute(uri: "/admin/workers?consistent=true", method: .get) { response in
                #expect(String(buffer: response.body).contains(#""id":"w1""#))
            }
            for (body, field) in [
                (#"{"model":"llama","role":"PREFILL","address":"10.0.0.5:8000"}"#, "id"),
                (#"{"id":"w2","role":"PREFILL","address":"10.0.0.5:8000"}"#, "model"),
                (#"{"id":"w2","model":"llama","role":"TRAINER","address":"10.0.0.5:8000"}"#, "role"),
                (#"{"id":"w2","model":"llama","role":"DECODE","address":"nowhere"}"#, "address"),
            ] {
                try await client.execute(uri: "/admin/workers", method: .post, body: ByteBuffer(string: body)) { response in
                    #expect(response.status == .badRequest)
                    #expect(String(buffer: response.body).contains(#""field":"\#(field)""#), "\(String(buffer: response.body))")
                }
            }
            try await client.execute(uri: "/admin/workers", method: .post, body: ByteBuffer(string: "{not json")) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: "/admin/members/0/promote", method: .post) { response in
                #expect(response.status == .badRequest)
                #expect(String(buffer: response.body).contains(#""field":"id""#))
            }
            try await client.execute(uri: "/admin/members/5/promote", method: .post) { response in
                #expect(response.status == .badRequest)
                #expect(String(buffer: response.body).contains("not a learner"))
            }
            try await client.execute(uri: "/admin/cluster", method: .get) { response in
                #expect(String(buffer: response.body).contains(#""role":"leader""#))
            }
        }
    }
}
