/// Why a peer connection was closed. Never fatal to the node: the connection goes, the node
/// stays, and the error is logged.
public struct TransportError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        case badMagic = "bad_magic"
        case unsupportedVersion = "unsupported_version"
        case frameTooLarge = "frame_too_large"
        case checksumMismatch = "checksum_mismatch"
        case malformedPayload = "malformed_payload"
        case unexpectedFrame = "unexpected_frame"
        case foreignCluster = "foreign_cluster"
        case spoofedSender = "spoofed_sender"
    }

    public let code: Code
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
