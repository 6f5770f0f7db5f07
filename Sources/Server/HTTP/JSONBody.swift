import Foundation
public import Hummingbird
import Serving
import FulcrumAPI

extension Request {
    /// Decodes the JSON body as `Value`; a body that is not JSON, or not this shape, is a 400
    /// naming the field at fault (`snake_case`, dotted for nested fields).
    public mutating func decodeJSON<Value: Decodable>(_ type: Value.Type, context: FulcrumRequestContext) async throws -> Value {
        let body = try await collectBody(upTo: context.maxUploadSize)
        return try decodeJSONBody(type, Data(body.readableBytesView), decoder: context.requestDecoder)
    }
}

/// Decodes `data` as `Value`, turning decoding errors into 400s naming the field.
func decodeJSONBody<Value: Decodable>(_ type: Value.Type, _ data: Data, decoder: JSONDecoder) throws -> Value {
    guard !data.isEmpty else { throw APIError.badRequest(field: "body", "a JSON body is required") }
    do {
        return try decoder.decode(type, from: data)
    } catch let error as DecodingError {
        throw APIError(error)
    } catch let error as APIError {
        throw error
    } catch {
        throw APIError.badRequest(field: "body", "not valid JSON: \(error.localizedDescription)")
    }
}

extension APIError {
    /// A JSON decoding error as a 400 naming the field.
    init(_ error: DecodingError) {
        func path(_ keys: [any CodingKey], _ last: (any CodingKey)? = nil) -> String {
            let all = keys + (last.map { [$0] } ?? [])
            let parts = all.map { key in key.intValue.map { "[\($0)]" } ?? snakeCase(key.stringValue) }
            let joined = parts.reduce("") { result, part in
                part.hasPrefix("[") || result.isEmpty ? result + part : result + "." + part
            }
            return joined.isEmpty ? "body" : joined
        }
        switch error {
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath, key)
            self = .badRequest(field: field, "is required")
        case .typeMismatch(let type, let context):
            self = .badRequest(field: path(context.codingPath), "expected \(jsonTypeName(type))")
        case .valueNotFound(let type, let context):
            self = .badRequest(field: path(context.codingPath), "expected \(jsonTypeName(type)), got null")
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            let reason = field == "body" ? "not valid JSON (or not UTF-8)" : context.debugDescription
            self = .badRequest(field: field, reason)
        @unknown default:
            self = .badRequest(field: "body", "could not be decoded")
        }
    }
}

/// `requestId` → `request_id`.
func snakeCase(_ name: String) -> String {
    var result = ""
    for character in name {
        if character.isUppercase {
            if !result.isEmpty { result.append("_") }
            result.append(contentsOf: character.lowercased())
        } else {
            result.append(character)
        }
    }
    return result
}

private func jsonTypeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Bool.Type: "a boolean"
    case is Int.Type, is Int64.Type, is UInt64.Type, is UInt32.Type, is Int32.Type: "an integer"
    case is Double.Type, is Float.Type: "a number"
    default:
        String(describing: type).hasPrefix("Array") ? "an array" : (String(describing: type).hasPrefix("Dictionary") ? "an object" : "\(type)")
    }
}
