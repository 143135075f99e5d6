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
            var connections: [String: RedisConnection] = [:]
            while !Task.isCancelled {
                let configuration = await self.reloader.baseConfiguration
                for pool in configuration.pools {
                    guard let redis = pool.discovery?.redis, let url = RedisURL(redis.url) else { continue }
                    do {
                        let connection: RedisConnection
                        if let existing = connections[redis.url], existing.isActive {
                            connection = existing
                        } else {
                            connection = try await RedisConnection.connect(to: url)
                            connections[redis.url] = connection
                        }
                        let backends = try await Self.nodes(of: redis.service, on: connection)
                        await self.reloader.discovered(backends, pool: pool.name, source: "redis")
                    } catch {
                        self.logger.warning(
                            "Redis discovery failed; keeping the last known nodes",
                            metadata: ["portico.pool": "\(pool.name)", "portico.error": "\(error)"]
                        )
                        await connections.removeValue(forKey: redis.url)?.close()
                    }
                }
                try? await Task.sleep(for: self.interval)
            }
            for connection in connections.values { await connection.close() }
        }
    }

    /// Every node announced for `service`, as backends sorted by id.
    static func nodes(of service: String, on connection: RedisConnection) async throws -> [BackendConfiguration] {
        let prefix = Self.keyPrefix(service: service)
        var keys: [String] = []
        var cursor = "0"
        repeat {
            let reply = try await connection.send(["SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"])
            guard case .array(let parts?) = reply, parts.count == 2, case .bulkString(let next?) = parts[0],
                case .array(let found?) = parts[1]
            else { throw RedisConnection.ConnectionError(message: "unexpected SCAN reply") }
            cursor = String(buffer: next)
            for case .bulkString(let key?) in found { keys.append(String(buffer: key)) }
        } while cursor != "0"
        guard !keys.isEmpty else { return [] }
        let values = try await connection.send(["MGET"] + keys)
        guard case .array(let addresses?) = values, addresses.count == keys.count else { return [] }
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
