/// Why a peer connection was closed. Never fatal to the node: the connection goes, the node
/// stays, and the error is logged.
public struct TransportError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, CaseIterable {
        case badMagic = "bad_magic"
        case unsupportedVersion = "unsupported_version"
        case frameTooLarge = "frame_too_large"
        case checksumMismatch = "checksum_mismatch"
        case malformedPayload = "malformed_payload"
        case unexpectedFrame = "unexpected_frame"
        case foreignCluster = "foreign_cluster"
        case spoofedSender = "spoofed_sender"
        /// No proof of the cluster's secret, or a connection without the certificate it needs.
        case unauthenticated = "unauthenticated"
        /// A proof or accept that does not verify against the secret.
        case badProof = "bad_proof"
        /// The hello names another node than the certificate does.
        case identityMismatch = "identity_mismatch"
        case handshakeTimeout = "handshake_timeout"
        case tooManyConnections = "too_many_connections"
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
