import Logging
import NIOCore
import PorticoConfig
import PorticoRESP
import ServiceLifecycle

/// Reads the nodes PorticoRelay announces under `discovery.redis.service` (docs/relay-protocol.md) every
/// 500 ms; each becomes a backend whose id is the node id. An orderly leave (key deleted) or a crash (key
/// expired) removes the backend, which then drains. A Redis outage keeps the last known nodes.
public struct RedisDiscovery: Service {
    private let reloader: ConfigReloader
    private let logger: Logger
    private let interval: Duration

    public init(reloader: ConfigReloader, logger: Logger, interval: Duration = .milliseconds(500)) {
        self.reloader = reloader
        self.logger = logger
        self.interval = interval
    }

    /// The Redis key prefix of `service`'s node announcements.
    public static func keyPrefix(service: String) -> String { "portico:v1:node:\(service):" }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var sources: [String: RedisKeyspace] = [:]
            while !Task.isCancelled {
                let configuration = await self.reloader.baseConfiguration
                for pool in configuration.pools {
                    guard let redis = pool.discovery?.redis, let url = RedisURL(redis.url) else { continue }
                    let name = "\(redis.cluster ? "cluster" : "single") \(redis.url)"
                    do {
                        let source: RedisKeyspace
                        if let existing = sources[name], await existing.isActive {
                            source = existing
                        } else {
                            await sources[name]?.close()
                            source =
                                redis.cluster
                                ? .cluster(try await RedisClusterClient.connect(seeds: [url]))
                                : .single(try await RedisConnection.connect(to: url))
                            sources[name] = source
                        }
                        let backends = try await Self.nodes(of: redis.service, from: source)
                        await self.reloader.discovered(backends, pool: pool.name, source: "redis")
                    } catch {
                        self.logger.warning(
                            "Redis discovery failed; keeping the last known nodes",
                            metadata: ["portico.pool": "\(pool.name)", "portico.error": "\(error)"]
                        )
                        await sources.removeValue(forKey: name)?.close()
                    }
                }
                try? await Task.sleep(for: self.interval)
            }
            for source in sources.values { await source.close() }
        }
    }

    /// Every node announced for `service`, as backends sorted by id.
    static func nodes(of service: String, from source: RedisKeyspace) async throws -> [BackendConfiguration] {
        let prefix = Self.keyPrefix(service: service)
        let keys = try await source.scanKeys(matching: prefix + "*")
        guard !keys.isEmpty else { return [] }
        let addresses = try await source.values(of: keys)
        guard addresses.count == keys.count else { return [] }
        var backends: [BackendConfiguration] = []
        for (key, value) in zip(keys, addresses) {
            guard case .bulkString(let buffer?) = value, let address = HostPort(parsing: String(buffer: buffer)),
                address.port != 0
            else { continue }
            backends.append(BackendConfiguration(address: address, id: String(key.dropFirst(prefix.count))))
        }
        return backends.sorted { $0.id < $1.id }
    }
}
