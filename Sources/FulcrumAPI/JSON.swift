public import Foundation

/// The HTTP API's JSON conventions: `snake_case` keys on the wire, camelCase in Swift, sorted
/// keys out. Every client of the API (fulcrumctl, the agent, the simulator, the tests) and the
/// server itself encode and decode through these.
public enum FulcrumJSON {
    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    /// For other systems' wire types whose `CodingKeys` spell every key as it is sent (FlexLB's
    /// mix of snake and camel case): no key conversion, and none for dictionary keys either.
    public static var verbatimEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public static var verbatimDecoder: JSONDecoder { JSONDecoder() }

    public static func encode(_ value: some Encodable) throws -> Data { try encoder.encode(value) }

    public static func decode<Value: Decodable>(_ type: Value.Type, from data: Data) throws -> Value {
        try decoder.decode(type, from: data)
    }
}

/// The body of every error answer: `{"error": {"code", "message", "field", …}}`.
public struct ErrorBody: Codable, Sendable, Hashable {
    public struct Detail: Codable, Sendable, Hashable {
        public var code: String
        public var message: String
        public var field: String?
        public var leaderId: UInt64?
        public var leaderPeerAddress: String?

        public init(code: String, message: String, field: String? = nil, leaderId: UInt64? = nil, leaderPeerAddress: String? = nil) {
            self.code = code
            self.message = message
            self.field = field
            self.leaderId = leaderId
            self.leaderPeerAddress = leaderPeerAddress
        }
    }

    public var error: Detail

    public init(error: Detail) { self.error = error }
}

/// What a replicated command did: `applied`, or `ignored: <why>`.
public struct CommandResult: Codable, Sendable, Hashable {
    public var result: String

    public init(result: String) { self.result = result }

    public var applied: Bool { result == "applied" }
}
