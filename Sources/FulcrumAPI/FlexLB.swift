/// The answer to FlexLB's HTTP-era `POST /rtp_llm/schedule`: failures are answered in the body
/// (`success: false` and a `code`), with HTTP 200.
public struct ScheduleResponse: Codable, Sendable, Hashable {
    public struct ServerStatus: Codable, Sendable, Hashable {
        public var role: String
        public var serverIp: String
        public var httpPort: Int
        public var grpcPort: Int
        public var prefillTime: Int64
        public var group: String

        public init(role: String, serverIp: String, httpPort: Int, grpcPort: Int, prefillTime: Int64, group: String) {
            self.role = role
            self.serverIp = serverIp
            self.httpPort = httpPort
            self.grpcPort = grpcPort
            self.prefillTime = prefillTime
            self.group = group
        }
    }

    public var success: Bool
    public var code: Int
    public var errorMessage: String
    public var realMasterHost: String
    public var serverStatus: [ServerStatus]
    public var releaseToken: String?

    public init(success: Bool, code: Int, errorMessage: String, realMasterHost: String, serverStatus: [ServerStatus], releaseToken: String? = nil) {
        self.success = success
        self.code = code
        self.errorMessage = errorMessage
        self.realMasterHost = realMasterHost
        self.serverStatus = serverStatus
        self.releaseToken = releaseToken
    }
}
