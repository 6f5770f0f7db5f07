public import Raft
public import RaftStorage
public import RaftTransport

/// How one node runs.
public struct NodeSettings: Sendable {
    public var clusterID: String
    /// Holds `raft.sqlite`: the log, hard state, snapshots and the node's own id.
    public var dataDirectory: String
    /// Where peers connect.
    public var peerListen: PeerAddress
    /// What other nodes dial (defaults to `peerListen`).
    public var peerAdvertise: PeerAddress?
    /// The founding members, this node included, for a new cluster. Empty for a node that
    /// joins an existing cluster (it waits to be added as a learner).
    public var bootstrap: [NodeID: PeerAddress]
    /// This node's id: required for founders, generated (and kept) for joiners.
    public var nodeID: NodeID?
    public var tick: Duration = .milliseconds(20)
    public var raft: RaftSettings
    /// Applied entries after which the node snapshots and compacts its log.
    public var snapshotEntries: Int = 10_000
    public var proposalTimeout: Duration = .seconds(5)
    public var durability: RaftDatabase.Options.Durability = .full
    public var transport = RaftTransport.Settings()

    public init(
        clusterID: String, dataDirectory: String, peerListen: PeerAddress, bootstrap: [NodeID: PeerAddress] = [:],
        nodeID: NodeID? = nil
    ) {
        self.clusterID = clusterID
        self.dataDirectory = dataDirectory
        self.peerListen = peerListen
        self.bootstrap = bootstrap
        self.nodeID = nodeID
        var raft = RaftSettings()
        // 20 ms ticks: heartbeats every 40 ms, elections after 200–400 ms of silence.
        raft.electionTicks = 10
        raft.heartbeatTicks = 2
        self.raft = raft
    }

    public var advertised: PeerAddress { peerAdvertise ?? peerListen }
}
