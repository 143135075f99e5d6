import Logging
import PorticoConfig
import ServiceLifecycle

/// Re-resolves every pool's `discovery.dns.name` each `interval`; every address becomes a backend on
/// `discovery.dns.port` (how `docker compose --scale` and Kubernetes headless services show replicas).
/// Changes go through the reloader, so removed backends drain rather than being cut.
public struct DNSDiscovery: Service {
    private let reloader: ConfigReloader
    private let resolver: any NameResolver
    private let logger: Logger

    public init(reloader: ConfigReloader, resolver: any NameResolver = SystemResolver(), logger: Logger) {
        self.reloader = reloader
        self.resolver = resolver
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var due: [String: ContinuousClock.Instant] = [:]
            while !Task.isCancelled {
                let configuration = await self.reloader.baseConfiguration
                let now = ContinuousClock.now
                for pool in configuration.pools {
                    guard let dns = pool.discovery?.dns, due[pool.name, default: now] <= now else { continue }
                    due[pool.name] = now + dns.interval
                    do {
                        let addresses = try await self.resolver.resolve(dns.name)
                        let backends = addresses.sorted().map { address in
                            BackendConfiguration(address: HostPort(host: address, port: dns.port))
                        }
                        await self.reloader.discovered(backends, pool: pool.name, source: "dns")
                    } catch {
                        // Keep the last answer: a resolver hiccup must not empty a pool.
                        self.logger.warning(
                            "DNS discovery failed",
                            metadata: ["portico.pool": "\(pool.name)", "portico.error": "\(error)"]
                        )
                    }
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}
