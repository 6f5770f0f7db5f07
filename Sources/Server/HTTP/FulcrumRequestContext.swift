public import Foundation
public import Hummingbird
public import NIOCore
import Serving
import FulcrumAPI

/// Request context of Fulcrum's HTTP APIs: JSON in and out, snake_case keys, the client's
/// address, and the API key it presented (set by ``AccessMiddleware``).
public struct FulcrumRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The API key the client authenticated with, when keys are configured.
    public var apiKey: String?
    /// What that key may do; nil when no keys are configured (everything is allowed).
    var grantedScopes: Set<SecuritySettings.Scope>?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    public var requestDecoder: JSONDecoder { FulcrumJSON.decoder }

    public var responseEncoder: JSONEncoder { FulcrumJSON.encoder }

    /// A hard ceiling (the highest `max_body_bytes` accepts); ``AccessMiddleware`` enforces the
    /// configured limit.
    public var maxUploadSize: Int { Self.maxBodyBytesCeiling }

    public static let maxBodyBytesCeiling = 1 << 30

    /// Who is calling, for rate limits: the API key when one was presented, else the address.
    var clientIdentity: String {
        if let apiKey { return "key:" + apiKey }
        return "ip:" + (remoteAddress?.ipAddress ?? "unknown")
    }
}
