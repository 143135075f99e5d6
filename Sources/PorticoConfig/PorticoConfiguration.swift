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

    public init(address: HostPort, token: String? = nil) {
        self.address = address
        self.token = token
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

    public init() {}
}
