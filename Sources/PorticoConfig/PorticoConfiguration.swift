/// A validated Portico configuration: an immutable value, built once per load or reload.
///
/// Build one with ``PorticoConfiguration/load(yaml:environment:)``; every value in it has passed validation.
public struct PorticoConfiguration: Sendable, Equatable {
    /// Addresses the proxy accepts downstream connections on.
    public var listeners: [ListenerConfiguration]
    /// The admin listener, or `nil` for none.
    public var admin: AdminConfiguration?
    /// Connection and request limits.
    public var limits: LimitsConfiguration
    /// Routes in match order: the first that matches a request wins.
    public var routes: [RouteConfiguration]
    /// Pools by name, in the order the file lists them.
    public var pools: [PoolConfiguration]
    /// Event loop threads; `nil` means one per core.
    public var workers: Int?

    /// Creates a configuration from parts; call ``validate()`` before serving it.
    public init(
        listeners: [ListenerConfiguration],
        admin: AdminConfiguration? = nil,
        limits: LimitsConfiguration = LimitsConfiguration(),
        routes: [RouteConfiguration],
        pools: [PoolConfiguration],
        workers: Int? = nil
    ) {
        self.listeners = listeners
        self.admin = admin
        self.limits = limits
        self.routes = routes
        self.pools = pools
        self.workers = workers
    }

    /// The pool named `name`, if any.
    public func pool(named name: String) -> PoolConfiguration? {
        self.pools.first { $0.name == name }
    }
}

/// One bound address that accepts downstream connections.
public struct ListenerConfiguration: Sendable, Equatable {
    /// Where to listen.
    public var address: HostPort
    /// TLS termination on this listener, or `nil` for plain HTTP.
    public var tls: ListenerTLSConfiguration?
    /// On a plain listener: answer every request with 308 to the same URL over https.
    public var redirectHTTPS: Bool

    /// - Parameters:
    ///   - address: where to listen.
    ///   - tls: certificates, for an https listener.
    ///   - redirectHTTPS: on a plain listener, redirect everything to https. Default false.
    public init(address: HostPort, tls: ListenerTLSConfiguration? = nil, redirectHTTPS: Bool = false) {
        self.address = address
        self.tls = tls
        self.redirectHTTPS = redirectHTTPS
    }
}

/// TLS on a listener: certificates chosen by SNI, by the names in each certificate.
public struct ListenerTLSConfiguration: Sendable, Equatable {
    /// A PEM certificate chain and its private key.
    public struct Certificate: Sendable, Equatable {
        public var cert: String
        public var key: String

        public init(cert: String, key: String) {
            self.cert = cert
            self.key = key
        }
    }

    /// The first is the default for clients that send no SNI or an unknown name.
    public var certificates: [Certificate]

    public init(certificates: [Certificate]) {
        self.certificates = certificates
    }
}

/// TLS from Portico to a pool's backends.
public struct UpstreamTLSConfiguration: Sendable, Equatable {
    /// PEM file of the CAs to trust; `nil` for the system's.
    public var ca: String?
    /// SNI and the name to verify; default the backend's host.
    public var serverName: String?
    /// Verify the backend's certificate (default true).
    public var verify: Bool = true

    public init(ca: String? = nil, serverName: String? = nil, verify: Bool = true) {
        self.ca = ca
        self.serverName = serverName
        self.verify = verify
    }
}

/// The admin listener.
public struct AdminConfiguration: Sendable, Equatable {
    /// Where the admin API listens (loopback is strongly advised).
    public var address: HostPort
    /// When set, every admin call needs `Authorization: Bearer <token>`.
    public var token: String?
    /// Host names a request's `Host` may carry besides IP literals and `localhost` (any other name gets 403,
    /// against DNS rebinding). Lower case, without a trailing dot. Default none.
    public var allowedHosts: [String]
    /// Admin connections open at once; more are closed at accept. Default 64.
    public var maxConnections: Int
    /// The whole admin request must arrive within this of its first byte (or of the connection's start).
    /// Default 10s.
    public var headerTimeout: Duration
    /// A keep-alive admin connection with no request in progress is closed after this. Default 60s.
    public var idleTimeout: Duration

    /// - Parameters:
    ///   - address: where the admin API listens.
    ///   - token: the bearer token every call must carry; `nil` (the default) for none.
    ///   - allowedHosts: host names accepted in `Host` besides IP literals and `localhost`; default none.
    ///   - maxConnections: admin connections open at once; default 64.
    ///   - headerTimeout: how long a request may take to arrive; default 10s.
    ///   - idleTimeout: how long a keep-alive connection may wait for its next request; default 60s.
    public init(
        address: HostPort,
        token: String? = nil,
        allowedHosts: [String] = [],
        maxConnections: Int = 64,
        headerTimeout: Duration = .seconds(10),
        idleTimeout: Duration = .seconds(60)
    ) {
        self.address = address
        self.token = token
        self.allowedHosts = allowedHosts
        self.maxConnections = maxConnections
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }

    /// Whether `text` is a DNS host name: dot-separated labels of letters, digits, `-` (not at either end of a
    /// label) and `_` (compose service names use it), 1…63 bytes each, 253 in all, one trailing dot allowed.
    /// No port, scheme, wildcard or brackets.
    public static func isHostName(_ text: String) -> Bool {
        var name = Substring(text)
        if name.hasSuffix(".") { name = name.dropLast() }
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            let bytes = label.utf8
            guard (1...63).contains(bytes.count), bytes.first != UInt8(ascii: "-"), bytes.last != UInt8(ascii: "-")
            else { return false }
            return bytes.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                    return true
                default:
                    return false
                }
            }
        }
    }
}

/// Limits that protect the proxy from slow or oversized downstream traffic.
public struct LimitsConfiguration: Sendable, Equatable {
    /// Downstream connections open at once; more are closed at accept. Default 50,000.
    public var maxConnections: Int = 50_000
    /// The whole request head must arrive within this once its first byte has. Default 10s.
    public var headerTimeout: Duration = .seconds(10)
    /// A keep-alive connection with no request in progress is closed after this. Default 60s.
    public var idleTimeout: Duration = .seconds(60)
    /// Largest request head (request line and headers); larger gets 431. Default 16 KiB.
    public var maxHeaderBytes: Int = 16_384
    /// Longest request target; longer gets 414. Default 8 KiB.
    public var maxURIBytes: Int = 8_192
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish before connections are cut. Default 30s.
    public var shutdownTimeout: Duration = .seconds(30)
    /// Downstream connections one client IP may hold open; `nil` for no limit.
    public var maxConnectionsPerIP: Int?
    /// IPv6 clients are counted for `maxConnectionsPerIP` by this prefix of their address (one site usually
    /// gets a whole /64, so counting single addresses would not limit anyone). Default 64.
    public var ipv6Prefix: Int = 64
    /// The longest gap between two reads of a request body; then 408 and close. Default 30s.
    public var bodyTimeout: Duration = .seconds(30)
    /// A downstream that takes nothing of what portico has to send it (a response, a tunnel's traffic) for
    /// this long is cut, and its upstream released (nginx `send_timeout`). Default 60s.
    public var sendTimeout: Duration = .seconds(60)

    public init() {}
}
