import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
public import KVEvents
import NIOCore

/// Which real engine a simulated engine speaks as: its API-key rule, its PD hand-off and its
/// streams follow that engine's upstream source.
public enum EngineDialect: String, Sendable, CaseIterable {
    /// Fulcrum's own dialect: `X-Fulcrum-Role`, `X-Fulcrum-Decode-Worker` and
    /// `X-Fulcrum-Prefill-Worker` headers.
    case fulcrum
    /// vLLM with the NIXL connector: `kv_transfer_params` in the request and the prefill's answer.
    case vllm
    /// SGLang with `--disaggregation-mode`: `bootstrap_host`, `bootstrap_port`, `bootstrap_room`.
    case sglang
    /// rtp-llm (its engine gRPC beside the HTTP API).
    case rtpLLM = "rtp-llm"

    /// How the dialect's engine encodes its KV events: vLLM's current releases as maps,
    /// SGLang's as tagged arrays.
    public var kvEventEncoding: KVEventBatch.Encoding {
        self == .sglang ? .arrays : .maps
    }

    /// Whether a request to `path` must carry the engine's key. vLLM's `--api-key` guards the
    /// `/v1` routes (vllm `entrypoints/openai/api_server.py`); SGLang's every route but those
    /// under `/health` and `/metrics` (sglang `srt/utils` `add_api_key_middleware`). Both answer
    /// 401 `{"error": "Unauthorized"}`.
    func requiresKey(_ path: String) -> Bool {
        switch self {
        case .vllm: path.hasPrefix("/v1")
        case .sglang: !path.hasPrefix("/health") && !path.hasPrefix("/metrics") && !path.hasPrefix("/fulcrum-sim/")
        case .fulcrum, .rtpLLM: !["/health", "/fault"].contains(path) && !path.hasPrefix("/fulcrum-sim/")
        }
    }
}

/// How one request takes part in a prefill–decode hand-off, as its engine's dialect says.
struct HandoffPart: Sendable {
    /// Compute the prompt and one token only (the prefill side).
    var prefillOnly = false
    /// The prompt's KV arrives from a prefill engine (the decode side).
    var transferred = false
    /// SGLang: where the decode side waits for the prefill's KV.
    var bootstrap: (host: String, port: Int?, room: UInt64)?
}

/// The bootstrap rendezvous of SGLang's PD (a prefill engine's bootstrap server, reduced to
/// what a simulation needs): the prefill side marks its room done or failed; the decode side
/// polls `GET /fulcrum-sim/bootstrap/{room}` on the prefill engine's `bootstrap_port` until the
/// room is done, and fails when it fails or never comes.
enum BootstrapRoom: String, Sendable {
    case pending
    case done
    case failed

    static let maxRooms = 65_536
}

extension SimulatedEngine {
    /// Reads the hand-off fields of `object` (and the Fulcrum headers); nil with an error
    /// message when the request is not one the engine would take.
    func handoffPart(_ object: [String: Any], served: Served) -> Result<HandoffPart, HandoffRefusal> {
        var part = HandoffPart()
        switch options.dialect {
        case .fulcrum, .rtpLLM:
            part.prefillOnly = served.role == "prefill"
            part.transferred = served.role == "decode" && served.prefillWorker != nil
        case .vllm:
            guard let params = object["kv_transfer_params"] else { return .success(part) }
            guard let params = params as? [String: Any] else { return .failure(.init(status: .badRequest, message: "kv_transfer_params must be an object")) }
            if params["do_remote_decode"] as? Bool == true {
                part.prefillOnly = true
            } else if params["do_remote_prefill"] as? Bool == true {
                guard params["remote_engine_id"] is String, params["remote_block_ids"] is [Any], params["remote_host"] is String,
                      params["remote_port"] is NSNumber else {
                    return .failure(.init(status: .badRequest, message: "do_remote_prefill needs remote_engine_id, remote_block_ids, remote_host and remote_port"))
                }
                part.transferred = true
            }
        case .sglang:
            let host = object["bootstrap_host"], room = object["bootstrap_room"]
            guard options.role == "PREFILL" || options.role == "DECODE" else { return .success(part) }
            // SGLang's PD engines refuse a request the balancer did not pair.
            guard let host = host as? String, let room = room as? NSNumber, room.int64Value >= 0 else {
                return .failure(.init(status: .badRequest, message: "a \(options.role.lowercased()) engine needs bootstrap_host and a bootstrap_room"))
            }
            let port = object["bootstrap_port"] as? NSNumber
            if object["bootstrap_port"] != nil && !(object["bootstrap_port"] is NSNull) && port == nil {
                return .failure(.init(status: .badRequest, message: "bootstrap_port must be an integer or null"))
            }
            part.bootstrap = (host, port?.intValue, room.uint64Value)
            part.prefillOnly = options.role == "PREFILL"
            part.transferred = options.role == "DECODE"
        }
        return .success(part)
    }

    struct HandoffRefusal: Error {
        var status: HTTPResponse.Status
        var message: String
    }

    /// The prefill side's answer fields (vLLM: the parameters the decode side needs).
    func prefillAnswerFields(_ part: HandoffPart, blocks: Int) -> String {
        guard options.dialect == .vllm, part.prefillOnly else { return "" }
        let (host, port) = (options.sideChannelHost, options.sideChannelPort)
        let ids = (0..<blocks).map(String.init).joined(separator: ",")
        return #","kv_transfer_params":{"do_remote_prefill":true,"do_remote_decode":false,"remote_block_ids":[\#(ids)],"#
            + #""remote_engine_id":"\#(options.id)","remote_request_id":"\#(UUID().uuidString)","remote_host":"\#(host)","remote_port":\#(port),"tp_size":1}"#
    }

    /// The decode side of SGLang's hand-off: waits until the prefill engine's room is done.
    func awaitBootstrap(_ bootstrap: (host: String, port: Int?, room: UInt64)) async throws -> HandoffRefusal? {
        let host = bootstrap.host.hasPrefix("[") ? bootstrap.host : (bootstrap.host.contains(":") ? "[\(bootstrap.host)]" : bootstrap.host)
        let url = "http://\(host):\(bootstrap.port ?? 8998)/fulcrum-sim/bootstrap/\(bootstrap.room)"
        let deadline = ContinuousClock.now + .milliseconds(options.bootstrapWaitMilliseconds)
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            var request = HTTPClientRequest(url: url)
            request.method = .GET
            if let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(2)),
               let body = try? await response.body.collect(upTo: 1_024) {
                switch BootstrapRoom(rawValue: String(buffer: body)) {
                case .done: return nil
                case .failed: return HandoffRefusal(status: .internalServerError, message: "KV transfer failed: the prefill of room \(bootstrap.room) was aborted")
                case .pending, nil: break
                }
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        return HandoffRefusal(status: .internalServerError, message: "KV transfer timed out: room \(bootstrap.room) never arrived")
    }

    /// OpenAI's stream chunk, as vLLM and SGLang write it (`object`, `created`).
    static func chunk(id: String, engine: String, model: String, chat: Bool, created: Int, choices: String, usage: String? = nil) -> ByteBuffer {
        let object = chat ? "chat.completion.chunk" : "text_completion"
        let usagePart = usage.map { #","usage":\#($0)"# } ?? ""
        return ByteBuffer(string: #"data: {"id":"\#(id)","object":"\#(object)","created":\#(created),"model":"\#(model)","engine":"\#(engine)","choices":[\#(choices)]\#(usagePart)}"# + "\n\n")
    }

    /// Whether the request asked for a final usage chunk (`stream_options.include_usage`).
    static func includeUsage(_ object: [String: Any]) -> Bool {
        (object["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true
    }
}
