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

/// The body of every error answer, in OpenAI's shape — `{"error": {"message", "type", "param",
/// "code"}}` — with Fulcrum's extras beside (`field`, the leader's id and address), which
/// OpenAI's clients ignore.
public struct ErrorBody: Codable, Sendable, Hashable {
    public struct Detail: Codable, Sendable, Hashable {
        public var message: String
        /// OpenAI's error class (`invalid_request_error`, `rate_limit_error`, …), from the status.
        public var type: String
        /// The request field at fault (OpenAI's `param`; always present, null when none).
        public var param: String?
        /// Fulcrum's machine-readable code (`invalid_request`, `no_leader`, …).
        public var code: String
        /// The same as `param`, kept for Fulcrum's own clients.
        public var field: String?
        public var leaderId: UInt64?
        public var leaderPeerAddress: String?

        public init(
            code: String, message: String, type: String = "invalid_request_error", field: String? = nil,
            leaderId: UInt64? = nil, leaderPeerAddress: String? = nil
        ) {
            self.message = message
            self.type = type
            self.param = field
            self.code = code
            self.field = field
            self.leaderId = leaderId
            self.leaderPeerAddress = leaderPeerAddress
        }

        /// OpenAI's error type for an HTTP status.
        public static func type(forStatus status: Int) -> String {
            switch status {
            case 401: "authentication_error"
            case 403: "permission_error"
            case 404: "not_found_error"
            case 409: "conflict_error"
            case 429: "rate_limit_error"
            case 500...: "server_error"
            default: "invalid_request_error"
            }
        }

        enum CodingKeys: String, CodingKey {
            case message, type, param, code, field, leaderId, leaderPeerAddress
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            message = try container.decode(String.self, forKey: .message)
            type = try container.decodeIfPresent(String.self, forKey: .type) ?? ""
            code = try Self.decodeCode(container)
            field = try container.decodeIfPresent(String.self, forKey: .field)
            param = try container.decodeIfPresent(String.self, forKey: .param) ?? field
            leaderId = try container.decodeIfPresent(UInt64.self, forKey: .leaderId)
            leaderPeerAddress = try container.decodeIfPresent(String.self, forKey: .leaderPeerAddress)
        }

        /// Engines' errors carry a string code (OpenAI), a number (vLLM: the status) or none.
        private static func decodeCode(_ container: KeyedDecodingContainer<CodingKeys>) throws -> String {
            if let text = try? container.decodeIfPresent(String.self, forKey: .code) { return text }
            if let number = try? container.decodeIfPresent(Int.self, forKey: .code) { return String(number) }
            return ""
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(message, forKey: .message)
            try container.encode(type, forKey: .type)
            try container.encode(param, forKey: .param)
            try container.encode(code, forKey: .code)
            try container.encodeIfPresent(field, forKey: .field)
            try container.encodeIfPresent(leaderId, forKey: .leaderId)
            try container.encodeIfPresent(leaderPeerAddress, forKey: .leaderPeerAddress)
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
