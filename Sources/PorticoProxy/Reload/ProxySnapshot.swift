import PorticoBalancing
import PorticoConfig
import PorticoRouting

/// Everything a request needs from one configuration generation, built once and never mutated.
///
/// A request reads the current snapshot at its head and keeps it to its end (a tunnel, for its lifetime),
/// so a reload never changes the rules under an exchange that is already under way.
public final class ProxySnapshot: Sendable {
    public let generation: Int
    public let configuration: PorticoConfiguration
    public let routes: RouteTable
    public let pools: [String: BackendPool]

    public let runtime: RuntimeState
    /// TLS contexts of the TLS listeners, by address.
    let listenerTLS: [HostPort: ServerTLS]

    /// Builds the snapshot, loading every certificate and key the configuration names.
    ///
    /// - Parameters:
    ///   - configuration: a validated configuration.
    ///   - generation: increases with every reload.
    ///   - runtime: state that carries over from earlier snapshots (health, counters, held requests).
    /// - Throws: ``ConfigurationErrors`` when TLS files are unreadable, mismatched or expired.
    public init(
        configuration: PorticoConfiguration,
        generation: Int = 1,
        runtime: RuntimeState = RuntimeState()
    ) throws(ConfigurationErrors) {
        let tlsErrors = configuration.checkTLSMaterial()
        guard tlsErrors.isEmpty else { throw ConfigurationErrors(tlsErrors) }
        var listenerTLS: [HostPort: ServerTLS] = [:]
        for (index, listener) in configuration.listeners.enumerated() {
            if let tls = listener.tls {
                listenerTLS[listener.address] = try ServerTLS.load(tls, path: "listeners[\(index)].tls")
            }
        }
        var pools: [String: BackendPool] = [:]
        for pool in configuration.pools {
            let upstreamTLS = try pool.tls.map { tls throws(ConfigurationErrors) in
                try UpstreamTLS.load(tls, path: "pools.\(pool.name).tls")
            }
            pools[pool.name] = BackendPool(configuration: pool, runtime: runtime, tls: upstreamTLS)
        }
        self.generation = generation
        self.configuration = configuration
        self.runtime = runtime
        self.routes = RouteTable(configuration.routes)
        self.pools = pools
        self.listenerTLS = listenerTLS
    }
}

/// A pool at run time: its backends, their live load and the policy's selector.
public final class BackendPool: Sendable {
    public let name: String
    public let configuration: PoolConfiguration
    public let backends: [Backend]
    public let load: BackendLoad
    public let selector: any BackendSelector
    /// Run-time state by backend index: health, drain, counters, live tunnels.
    public let states: [BackendState]
    public let state: PoolState
    /// The sticky cookie's name, when the pool pins clients by cookie.
    public let stickyCookie: String?
    /// Sticky tokens by backend index, and the reverse.
    let stickyTokens: [String]
    private let tokenOwners: [String: Int]
    /// Per backend index: most requests and tunnels at once, or `Int.max`.
    private let connectionLimits: [Int]

    /// TLS to the backends, when the pool has a `tls` section.
    let tls: UpstreamTLS?

    init(configuration: PoolConfiguration, runtime: RuntimeState, tls: UpstreamTLS?) {
        self.tls = tls
        self.name = configuration.name
        self.configuration = configuration
        self.backends = configuration.backends.enumerated().map { index, backend in
            Backend(
                id: backend.id,
                host: backend.address.host,
                port: backend.address.port,
                weight: backend.weight,
                index: index
            )
        }
        self.states = configuration.backends.map {
            runtime.backendState(pool: configuration.name, backend: $0, health: configuration.health)
        }
        self.state = runtime.poolState(configuration.name)
        self.load = BackendLoad(counters: self.states.map(\.active))
        self.stickyCookie = configuration.stickyCookie
        self.stickyTokens = self.backends.map { StickyToken.make(pool: configuration.name, backendID: $0.id) }
        self.tokenOwners = Dictionary(
            self.stickyTokens.enumerated().map { ($0.element, $0.offset) },
            uniquingKeysWith: { first, _ in first }
        )
        self.connectionLimits = configuration.backends.map { $0.maxConnections ?? Int.max }
        self.selector = configuration.makePolicy().makeSelector(for: self.backends, load: self.load)
    }

    /// The backend a sticky token names, if it is one of this pool's.
    func backend(forStickyToken token: Substring) -> Backend? {
        self.tokenOwners[String(token)].map { self.backends[$0] }
    }

    /// Whether `backend` may take one more request or tunnel: healthy, not draining or ejected, and under its
    /// `max_connections`.
    func isUsable(_ backend: Backend) -> Bool {
        guard self.states[backend.index].isUsable else { return false }
        let limit = self.connectionLimits[backend.index]
        return limit == Int.max || self.load.active(backend) < limit
    }

    /// Some backend can take work now (the pool itself may still be paused).
    var hasUsableBackend: Bool {
        self.backends.contains { self.isUsable($0) }
    }
}
