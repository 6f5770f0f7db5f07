/// Names the node and router that hold a decision's reservations: `node.epoch.token`.
public struct ReleaseToken: Sendable, Hashable, CustomStringConvertible {
    public var node: UInt64
    public var epoch: UInt32
    public var token: UInt64

    public var description: String { "\(node).\(epoch).\(token)" }

    public init(node: UInt64, epoch: UInt32, token: UInt64) {
        self.node = node
        self.epoch = epoch
        self.token = token
    }

    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let node = UInt64(parts[0]), let epoch = UInt32(parts[1]), let token = UInt64(parts[2]) else {
            return nil
        }
        self.init(node: node, epoch: epoch, token: token)
    }
}
