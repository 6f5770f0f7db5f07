import Raft
import RaftTransport

/// Where every member's peer port is. Founders start from configuration; every other address
/// arrives through the log (a `memberAddress` entry, or the book inside a snapshot), so any
/// member can dial any other without further discovery.
struct AddressBook: Sendable {
    /// Every address known: configured and replicated.
    private(set) var all: [NodeID: PeerAddress]
    /// The part of `all` that came through the log or a snapshot; what snapshots carry.
    private(set) var replicated: [NodeID: PeerAddress] = [:]

    init(configured: [NodeID: PeerAddress]) { all = configured }

    subscript(member: NodeID) -> PeerAddress? { all[member] }

    /// An address the log announced.
    mutating func learn(_ member: NodeID, at address: PeerAddress) {
        all[member] = address
        replicated[member] = address
    }

    /// A snapshot's book replaces the replicated part; configured addresses stay unless the
    /// snapshot names the member.
    mutating func adopt(_ book: [NodeID: PeerAddress]) {
        all.merge(book) { _, replicated in replicated }
        replicated = book
    }

    /// Members whose address this node knows but the log does not hold yet: a new leader
    /// announces them, so members added later can reach the founders.
    func unannounced(among members: [NodeID]) -> [(NodeID, PeerAddress)] {
        members.compactMap { member in
            guard let address = all[member], replicated[member] != address else { return nil }
            return (member, address)
        }
    }

    /// The transport's peer set for `members`: their known addresses (and `own`), and the
    /// members whose address is not known yet (kept, not dropped).
    func peers(for members: Set<NodeID>, own: NodeID) -> (addresses: [NodeID: PeerAddress], unknown: Set<NodeID>) {
        (all.filter { members.contains($0.key) || $0.key == own }, members.filter { all[$0] == nil })
    }
}

/// Whether `text` is a peer address (`host:port`) a node can dial.
public func isPeerAddress(_ text: String) -> Bool { PeerAddress(text) != nil }
