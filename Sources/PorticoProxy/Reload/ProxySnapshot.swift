import PorticoBalancing
import PorticoConfig
import PorticoRouting

/// Everything a request needs from one configuration generation, built once and never mutated.
///
/// A downstream connection reads the current snapshot when it is accepted and keeps it to the end, so a
/// reload never changes the rules under a connection that is already talking.
public final class ProxySnapshot: Sendable {
    public let generation: Int
    public let configuration: PorticoConfiguration
    public let routes: RouteTable
    public let pools: [String: BackendPool]

    /// - Parameters:
    ///   - configuration: a validated configuration.
    ///   - generation: increases with every reload.
    public init(configuration: PorticoConfiguration, generation: Int = 1) {
        self.generation = generation
        self.configuration = configuration
        self.routes = RouteTable(configuration.routes)
        self.pools = Dictionary(
            uniqueKeysWithValues: configuration.pools.map { ($0.name, BackendPool(configuration: $0)) }
        )
    }
}

/// A pool at run time: its backends, their live load and the policy's selector.
public final class BackendPool: Sendable {
    public let name: String
    public let configuration: PoolConfiguration
    public let backends: [Backend]
    public let load: BackendLoad
    public let selector: any BackendSelector
    /// Live tunnels and WebSocket traffic, by backend index.
    public let tunnels: [TunnelCounters]

    init(configuration: PoolConfiguration) {
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
        self.load = BackendLoad(count: self.backends.count)
        self.tunnels = self.backends.map { _ in TunnelCounters() }
        self.selector = configuration.makePolicy().makeSelector(for: self.backends, load: self.load)
    }
}
