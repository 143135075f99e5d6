/// A named group of backends and how to balance over them.
public struct PoolConfiguration: Sendable, Equatable {
    /// A balancing policy name as written in YAML.
    public enum Policy: String, Sendable, Equatable, CaseIterable {
        case roundRobin = "round_robin"
        case leastConnections = "least_conn"
        case randomTwo = "random_two"
        case consistentHash = "consistent_hash"
        case cookie = "cookie"
    }

    /// One source of the key a sticky policy hashes.
    public enum HashKeySource: Sendable, Equatable {
        /// The downstream IP address.
        case ip
        /// A request header (name lowercased).
        case header(String)
        /// A cookie.
        case cookie(String)
        /// A query parameter.
        case query(String)
    }

    public var name: String
    public var policy: Policy = .roundRobin
    /// Key sources tried in order; the first present one is hashed.
    public var hashKey: [HashKeySource] = []
    /// Consistent hashing with bounded loads factor (> 1), or `nil` for pure consistent hashing.
    public var boundedLoad: Double?
    /// Cookie name for the `cookie` policy.
    public var stickyCookie: String?
    public var backends: [BackendConfiguration] = []
    public var discovery: DiscoveryConfiguration?
    /// TLS to the backends, or `nil` for plain HTTP.
    public var tls: UpstreamTLSConfiguration?
    public var health: HealthConfiguration?
    public var passive: PassiveHealthConfiguration?
    public var hold: HoldConfiguration?
    /// How many other backends to try after a failure that is safe to retry. Default 2.
    public var retries: Int = 2
    /// Default 2s.
    public var connectTimeout: Duration = .seconds(2)
    /// Time from the end of the request to the response head. Default 60s.
    public var responseTimeout: Duration = .seconds(60)
    /// Default 30s.
    public var drainTimeout: Duration = .seconds(30)

    public init(name: String, backends: [BackendConfiguration] = []) {
        self.name = name
        self.backends = backends
    }
}

/// One backend of a pool.
public struct BackendConfiguration: Sendable, Equatable {
    public var address: HostPort
    /// Stable identity used in logs, the admin API and sticky tokens. Default: the address.
    public var id: String
    /// Relative share of new work, 1…1000. Default 1.
    public var weight: Int
    /// Most requests and tunnels this backend takes at once; `nil` for no limit.
    public var maxConnections: Int?

    public init(address: HostPort, id: String? = nil, weight: Int = 1, maxConnections: Int? = nil) {
        self.address = address
        self.id = id ?? address.description
        self.weight = weight
        self.maxConnections = maxConnections
    }
}

/// Where a pool finds backends at run time.
public struct DiscoveryConfiguration: Sendable, Equatable {
    public struct DNS: Sendable, Equatable {
        public var name: String
        public var port: Int
        public var interval: Duration = .seconds(5)
    }
    public struct Redis: Sendable, Equatable {
        public var url: String
        public var service: String
        /// `url` is a node of a Redis Cluster: every master is scanned.
        public var cluster: Bool = false
    }
    public var dns: DNS?
    public var redis: Redis?
}

/// Active health checks.
public struct HealthConfiguration: Sendable, Equatable {
    public var path: String = "/healthz"
    public var interval: Duration = .seconds(2)
    public var timeout: Duration = .seconds(1)
    public var rise: Int = 2
    public var fall: Int = 3
    /// Accepted status codes, inclusive.
    public var expectStatus: ClosedRange<Int> = 200...399
    public init() {}
}

/// Passive ejection after consecutive failures.
public struct PassiveHealthConfiguration: Sendable, Equatable {
    public var failures: Int = 3
    public var eject: Duration = .seconds(10)
    public init() {}
}

/// Holding requests while a pool has no usable backend.
public struct HoldConfiguration: Sendable, Equatable {
    public var timeout: Duration = .seconds(30)
    public var maxQueued: Int = 10_000
    public init() {}
}
