public import FulcrumAPI
public import Hummingbird

// The API's types are answered as they are, JSON-encoded by the request context's encoder.
extension ClusterStatus: ResponseEncodable {}
extension CommandResult: ResponseEncodable {}
extension Accepted: ResponseEncodable {}
extension WorkerList: ResponseEncodable {}
extension StateDigest: ResponseEncodable {}
extension LeaderAnswer: ResponseEncodable {}
extension SnapshotAnswer: ResponseEncodable {}
extension HealthAnswer: ResponseEncodable {}
extension ScheduleResponse: ResponseEncodable {}
extension VersionAnswer: ResponseEncodable {}
