public import Foundation
public import Hummingbird

/// Request context of Fulcrum's HTTP APIs: JSON in and out, snake_case keys.
public struct FulcrumRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: Source) { coreContext = .init(source: source) }

    public var requestDecoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    public var responseEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public var maxUploadSize: Int { 1 << 20 }
}
