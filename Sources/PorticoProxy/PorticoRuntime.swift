import Logging
import NIOCore
import PorticoConfig
import Prometheus
import ServiceLifecycle
import UnixSignals

/// One running Portico: the proxy, its health prober, the reloader, the optional admin API and the SIGHUP
/// handler, built from a validated configuration. `portico run` and `portico proxy` hand ``services`` to a
/// `ServiceGroup`; tests start the parts directly.
public final class PorticoRuntime: Sendable {
    public let store: ConfigStore
    public let server: ProxyServer
    public let reloader: ConfigReloader
    public let prober: HealthProber
    public let admin: AdminServer?
    public let dnsDiscovery: DNSDiscovery
    public let redisDiscovery: RedisDiscovery

    /// - Parameters:
    ///   - configuration: the validated configuration to start with.
    ///   - path: the file it came from, for reloads; `nil` when there is none.
    ///   - group: the event loops.
    ///   - logger: for lifecycle, health and admin logs.
    ///   - accessLogger: one line per request.
    ///   - registry: the Prometheus registry `GET /metrics` emits.
    ///   - version: shown by the admin API.
    /// - Throws: ``ConfigurationErrors`` when the TLS material the configuration names cannot be used.
    public init(
        configuration: PorticoConfiguration,
        path: String?,
        group: any EventLoopGroup,
        logger: Logger,
        accessLogger: Logger? = nil,
        registry: PrometheusCollectorRegistry = PrometheusMetricsFactory.defaultRegistry,
        resolver: any NameResolver = SystemResolver(),
        version: String
    ) throws(ConfigurationErrors) {
        let store = ConfigStore(try ProxySnapshot(configuration: configuration))
        let server = ProxyServer(store: store, group: group, logger: logger, accessLogger: accessLogger)
        let reloader = ConfigReloader(path: path, store: store, server: server, logger: logger)
        self.store = store
        self.server = server
        self.reloader = reloader
        self.prober = HealthProber(store: store, group: group, logger: logger)
        self.dnsDiscovery = DNSDiscovery(reloader: reloader, resolver: resolver, logger: logger)
        self.redisDiscovery = RedisDiscovery(reloader: reloader, logger: logger)
        self.admin = configuration.admin.map {
            AdminServer(
                configuration: $0,
                store: store,
                server: server,
                reloader: reloader,
                registry: registry,
                version: version,
                group: group,
                logger: logger
            )
        }
    }

    /// Everything that runs until graceful shutdown, for a `ServiceGroup`.
    public var services: [any Service] {
        var services: [any Service] = [
            self.server, self.prober, self.dnsDiscovery, self.redisDiscovery, ReloadOnSIGHUP(reloader: self.reloader),
        ]
        if let admin = self.admin { services.append(admin) }
        return services
    }
}

/// Reloads the configuration on every SIGHUP.
struct ReloadOnSIGHUP: Service {
    let reloader: ConfigReloader

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                _ = try? await self.reloader.reload()
            }
        }
    }
}
