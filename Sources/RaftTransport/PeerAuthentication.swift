import Crypto
import Foundation
public import NIOSSL
public import Raft
import Synchronization
import WireCoding
import X509

/// A secret every member of a cluster holds, for the HMAC challenge that authenticates a peer
/// connection when mutual TLS is not configured.
///
/// The handshake proves that both ends hold the secret, and binds the proof to the cluster, both
/// node ids and two fresh nonces, so it cannot be replayed to another node or another
/// connection. It does not encrypt or sign the frames that follow: an attacker on the network
/// path can still read or alter them. Mutual TLS covers that.
public struct PeerSecret: Sendable, Hashable {
    /// Fewer bytes than this are refused: the secret is the cluster's only lock.
    public static let minimumBytes = 16

    let key: SymmetricKey

    public init(_ bytes: some Sequence<UInt8>) throws(PeerSecretError) {
        let bytes = Array(bytes)
        guard bytes.count >= Self.minimumBytes else { throw PeerSecretError.tooShort(bytes.count) }
        key = SymmetricKey(data: bytes)
    }

    /// A secret from text (a file's content or an environment variable), surrounding whitespace
    /// and a trailing newline removed.
    public init(text: String) throws(PeerSecretError) {
        try self.init(Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8))
    }

    public static func == (lhs: PeerSecret, rhs: PeerSecret) -> Bool {
        lhs.key.withUnsafeBytes { l in rhs.key.withUnsafeBytes { r in l.elementsEqual(r) } }
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(key.bitCount) }
}

public enum PeerSecretError: Error, Sendable, Hashable, CustomStringConvertible {
    case tooShort(Int)

    public var description: String {
        switch self {
        case .tooShort(let count): "a peer secret needs at least \(PeerSecret.minimumBytes) bytes, got \(count)"
        }
    }
}

/// The HMAC challenge on hello. After the dialler's hello:
/// ```
/// listener → dialler  challenge: nonce_l (32 bytes)
/// dialler  → listener proof:     nonce_d (32 bytes) | HMAC-SHA256(secret, "fulcrum peer proof v1"  | cluster | dialler | listener | nonce_l | nonce_d)
/// listener → dialler  accept:    HMAC-SHA256(secret, "fulcrum peer accept v1" | cluster | dialler | listener | nonce_l | nonce_d)
/// ```
/// The listener takes no message before a valid proof, and the dialler sends none before a
/// valid accept, so neither side talks to a peer that does not hold the secret.
public enum Handshake {
    public static let nonceBytes = 32
    public static let macBytes = 32

    public static func nonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    static func mac(
        _ label: String, secret: PeerSecret, cluster: String, dialler: NodeID, listener: NodeID, listenerNonce: [UInt8], diallerNonce: [UInt8]
    ) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(label)
        writer.write(cluster)
        writer.write(dialler)
        writer.write(listener)
        writer.write(bytes: listenerNonce)
        writer.write(bytes: diallerNonce)
        return Array(HMAC<SHA256>.authenticationCode(for: writer.bytes, using: secret.key))
    }

    public static func proof(secret: PeerSecret, cluster: String, dialler: NodeID, listener: NodeID, listenerNonce: [UInt8], diallerNonce: [UInt8]) -> [UInt8] {
        mac("fulcrum peer proof v1", secret: secret, cluster: cluster, dialler: dialler, listener: listener, listenerNonce: listenerNonce, diallerNonce: diallerNonce)
    }

    public static func accept(secret: PeerSecret, cluster: String, dialler: NodeID, listener: NodeID, listenerNonce: [UInt8], diallerNonce: [UInt8]) -> [UInt8] {
        mac("fulcrum peer accept v1", secret: secret, cluster: cluster, dialler: dialler, listener: listener, listenerNonce: listenerNonce, diallerNonce: diallerNonce)
    }

    /// Compares in time independent of where the bytes differ.
    public static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}

/// With mutual TLS a node's id comes from its certificate: the subject's common name is
/// `node-<id>` (for example `node-3`), so a member cannot pose as another.
public enum CertificateIdentity {
    public static let prefix = "node-"

    /// The node id the certificate names, or nil when it names none.
    public static func nodeID(of certificate: NIOSSLCertificate) -> NodeID? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        var names: [String] = []
        for rdn in parsed.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                names.append(String(describing: attribute.value))
            }
        }
        guard names.count == 1, names[0].hasPrefix(prefix), let id = NodeID(names[0].dropFirst(prefix.count)), id > 0 else { return nil }
        return id
    }
}

/// Peer connections refused or closed for cause, by reason; read by the metrics endpoint
/// (`fulcrum_peer_connections_refused_total{reason}`).
public final class RefusalCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    public init() {}

    func record(_ reason: String) {
        counts.withLock { $0[reason, default: 0] += 1 }
    }

    /// Every reason's count, known reasons at 0 included (so their series exist from the start).
    public var snapshot: [String: Int] {
        var all = Dictionary(uniqueKeysWithValues: (TransportError.Code.allCases.map(\.rawValue) + ["tls_handshake", "connection_error"]).map { ($0, 0) })
        all.merge(counts.withLock { $0 }) { _, recorded in recorded }
        return all
    }
}
