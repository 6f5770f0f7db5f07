/// `GET /admin/cluster` and the membership commands' answer: a node's view of the cluster.
public struct ClusterStatus: Codable, Sendable, Hashable {
    public struct Member: Codable, Sendable, Hashable {
        public var id: UInt64
        public var address: String
        public var voter: Bool
        /// The leader's knowledge of the member's log; nil on followers.
        public var match: UInt64?
        /// The member's HTTP endpoint as it announced it (`http_advertise`), when known.
        public var endpoint: String?

        public init(id: UInt64, address: String, voter: Bool, match: UInt64?, endpoint: String? = nil) {
            self.id = id
            self.address = address
            self.voter = voter
            self.match = match
            self.endpoint = endpoint
        }
    }

    public var id: UInt64
    public var clusterId: String
    public var role: String
    public var term: UInt64
    public var leader: UInt64?
    public var leaderAddress: String?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastIndex: UInt64
    public var firstIndex: UInt64
    public var members: [Member]

    public init(
        id: UInt64, clusterId: String, role: String, term: UInt64, leader: UInt64?, leaderAddress: String?, commitIndex: UInt64,
        appliedIndex: UInt64, lastIndex: UInt64, firstIndex: UInt64, members: [Member]
    ) {
        self.id = id
        self.clusterId = clusterId
        self.role = role
        self.term = term
        self.leader = leader
        self.leaderAddress = leaderAddress
        self.commitIndex = commitIndex
        self.appliedIndex = appliedIndex
        self.lastIndex = lastIndex
        self.firstIndex = firstIndex
        self.members = members
    }
}

/// `PUT /admin/members/{id}`: the member's new peer address.
public struct UpdateMember: Codable, Sendable, Hashable {
    public var address: String?

    public init(address: String?) { self.address = address }
}

/// `GET /version`: what this node runs.
public struct VersionAnswer: Codable, Sendable, Hashable {
    public var version: String
    public var swiftVersion: String

    public init(version: String, swiftVersion: String) {
        self.version = version
        self.swiftVersion = swiftVersion
    }
}

/// `POST /admin/members`.
public struct AddMember: Codable, Sendable, Hashable {
    public var id: UInt64?
    public var address: String?

    public init(id: UInt64?, address: String?) {
        self.id = id
        self.address = address
    }
}

/// `POST /admin/leader/transfer`; without `to`, the most caught-up voter.
public struct LeaderTransfer: Codable, Sendable, Hashable {
    public var to: UInt64?

    public init(to: UInt64? = nil) { self.to = to }
}

public struct LeaderAnswer: Codable, Sendable, Hashable {
    public var leader: UInt64

    public init(leader: UInt64) { self.leader = leader }
}

public struct SnapshotAnswer: Codable, Sendable, Hashable {
    public var index: UInt64

    public init(index: UInt64) { self.index = index }
}

/// What replicas compare: equal fingerprints at an equal applied index mean equal states.
public struct StateDigest: Codable, Sendable, Hashable {
    public var appliedIndex: UInt64
    public var appliedCommands: UInt64
    public var fingerprint: String
    public var workers: Int

    public init(appliedIndex: UInt64, appliedCommands: UInt64, fingerprint: String, workers: Int) {
        self.appliedIndex = appliedIndex
        self.appliedCommands = appliedCommands
        self.fingerprint = fingerprint
        self.workers = workers
    }
}

/// `GET /healthz` and `/readyz`.
public struct HealthAnswer: Codable, Sendable, Hashable {
    public var status: String

    public init(status: String = "ok") { self.status = status }
}

/// `GET`/`POST /rtp_llm/master/info`: who the master is, as FlexLB's frontends ask it.
/// The answer to FlexLB's `POST /rtp_llm/master/info`, by which rtp-llm frontends find the
/// master: they probe every node and take the one whose `real_master_host` is the `ip:port`
/// they probed (`rtp_llm/server/host_service.py`); `queue_length` drives their 429s.
public struct MasterInfo: Codable, Sendable, Hashable {
    /// Per role: workers known, and those alive (FlexLB's `WorkerRoleSummary`, whose keys are
    /// camel case upstream).
    public struct RoleSummary: Codable, Sendable, Hashable {
        public var discovered: Int
        public var alive: Int
        public var maxQueueTokens: Int64

        public init(discovered: Int, alive: Int, maxQueueTokens: Int64 = 0) {
            self.discovered = discovered
            self.alive = alive
            self.maxQueueTokens = maxQueueTokens
        }

    }

    /// FlexLB's wire names, exactly (snake case at the top, camel case in the summary, as
    /// Jackson writes them): encode and decode with ``FulcrumJSON/verbatimEncoder``.
    enum CodingKeys: String, CodingKey {
        case success, code, ready
        case errorMessage = "error_message"
        case realMasterHost = "real_master_host"
        case queueLength = "queue_length"
        case enqueuedByMaster = "enqueued_by_master"
        case workerSummary = "worker_summary"
        case admissionRejectReason = "admission_reject_reason"
        case leaderId = "leader_id"
        case term
        case isMaster = "is_master"
        case nodeId = "node_id"
    }

    // FlexLB's own fields (`org.flexlb.dao.loadbalance.Response`), which frontends read.
    public var success: Bool
    public var code: Int
    public var errorMessage: String?
    /// The leader's `host:port` as frontends probe it, empty when no leader is known.
    public var realMasterHost: String
    /// Requests waiting in the master's queue (Fulcrum queues none before a decision).
    public var queueLength: Int
    public var enqueuedByMaster: Bool
    public var workerSummary: [String: RoleSummary]?
    /// False until this node can schedule (a leader is known and this node caught up).
    public var ready: Bool
    public var admissionRejectReason: String
    // Fulcrum's additions.
    public var leaderId: UInt64
    public var term: UInt64
    public var isMaster: Bool
    public var nodeId: UInt64

    public init(
        realMasterHost: String, queueLength: Int = 0, workerSummary: [String: RoleSummary]?, ready: Bool, leaderId: UInt64, term: UInt64,
        isMaster: Bool, nodeId: UInt64
    ) {
        success = true
        code = 200
        errorMessage = nil
        self.realMasterHost = realMasterHost
        self.queueLength = queueLength
        enqueuedByMaster = false
        self.workerSummary = workerSummary
        self.ready = ready
        admissionRejectReason = "UNSPECIFIED"
        self.leaderId = leaderId
        self.term = term
        self.isMaster = isMaster
        self.nodeId = nodeId
    }
}
