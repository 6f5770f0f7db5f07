public import Cluster
public import ServiceLifecycle
import Serving
import FulcrumAPI

/// Runs a ``ClusterNode`` as a service: on graceful shutdown (SIGTERM) a leader first hands
/// leadership to the most caught-up voter, then the node stops.
public struct NodeService<Machine: ReplicatedStateMachine>: Service {
    let node: ClusterNode<Machine>

    public init(node: ClusterNode<Machine>) { self.node = node }

    public func run() async throws {
        let running = Task { try await node.run() }
        try await withGracefulShutdownHandler {
            do {
                try await running.value
            } catch is CancellationError {
                // Stopped on purpose.
            }
        } onGracefulShutdown: {
            Task {
                await node.prepareToStop()
                running.cancel()
            }
        }
    }
}
