import ArgumentParser
import Cluster
import Foundation
import RaftTransport
import Server
import Serving

/// `fulcrum restore`: starts a new cluster from a snapshot file.
struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a one-member cluster's data directory from a snapshot file (`fulcrumctl snapshot save`).",
        discussion: """
            Then run `fulcrum serve` on that directory (it leads at once) and add the other members \
            as learners with `fulcrumctl member add`, promoting them once caught up.
            """
    )

    @Option(help: "The snapshot file.") var snapshot: String
    @Option(help: "The new node's data directory (must hold no log).") var dataDir: String
    @Option(help: "The new node's id.") var nodeID: UInt64
    @Option(help: "host:port other members will dial (the node's peer address).") var peerAdvertise: String
    @Option(help: "The new cluster's id (default: the snapshot's).") var clusterID: String?

    func validate() throws {
        guard nodeID > 0 else { throw ValidationError("--node-id must be positive") }
        guard PeerAddress(peerAdvertise) != nil else { throw ValidationError("--peer-advertise must be host:port") }
    }

    func run() async throws {
        guard let bytes = FileManager.default.contents(atPath: snapshot) else { throw ValidationError("cannot read \(snapshot)") }
        let archive: SnapshotArchive
        do {
            archive = try SnapshotArchive(decoding: Array(bytes))
        } catch {
            throw ValidationError("\(snapshot): \(error)")
        }
        let cluster = clusterID ?? archive.clusterID
        do {
            try ClusterNode<BalancerMachine>.seed(
                dataDirectory: dataDir, clusterID: cluster, nodeID: nodeID, address: PeerAddress(peerAdvertise)!, from: archive
            )
        } catch {
            throw ValidationError("\(error)")
        }
        print("restored index \(archive.index) (term \(archive.term)) into \(dataDir) as node \(nodeID) of cluster \(cluster)")
        print("next: fulcrum serve --cluster-id \(cluster) --node-id \(nodeID) --data-dir \(dataDir) --peer-listen … ; then add members")
    }
}

/// `fulcrum recover --force-new-cluster`: disaster recovery when a majority is lost for good.
struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn a stopped survivor's data into a one-member cluster (when a majority is lost for good).",
        discussion: """
            Keeps every entry the survivor holds (committed or not: with the majority gone nobody can \
            tell), moves the old database aside, and makes this node the only member. Run it on ONE \
            survivor only, with the other members gone for good; then start it with `fulcrum serve` \
            and add fresh members. See Docs/operations.md.
            """
    )

    @Flag(help: "Required: confirms that the old members are gone for good.") var forceNewCluster = false
    @Option(help: "The survivor's data directory.") var dataDir: String
    @Option(help: "The cluster id the data belongs to.") var clusterID = "fulcrum"
    @Option(help: "host:port other members will dial (the node's peer address).") var peerAdvertise: String

    func validate() throws {
        guard forceNewCluster else { throw ValidationError("--force-new-cluster is required: this discards the old membership") }
        guard PeerAddress(peerAdvertise) != nil else { throw ValidationError("--peer-advertise must be host:port") }
    }

    func run() async throws {
        do {
            let (archive, nodeID, backup) = try ClusterNode<BalancerMachine>.forceNewCluster(
                dataDirectory: dataDir, clusterID: clusterID, address: PeerAddress(peerAdvertise)!, machine: BalancerMachine()
            )
            print("node \(nodeID) is now the only member, at index \(archive.index) (term \(archive.term)); the old database is in \(backup)")
        } catch {
            throw ValidationError("\(error)")
        }
    }
}
