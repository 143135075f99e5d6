import Foundation
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import PorticoConfig
import PorticoProxy
import PorticoTestSupport
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// swift-metrics can be bootstrapped once per process; every test that reads /metrics shares this.
enum TestMetrics {
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}

/// A whole Portico (proxy, prober, reloader, admin) from a configuration file on disk, on free ports.
final class RuntimeHarness: Sendable {
    let runtime: PorticoRuntime
    let group: MultiThreadedEventLoopGroup
    let path: String
    let port: Int
    let adminPort: Int
    private let prober: Task<Void, Never>

    /// Writes `yaml` (with LISTEN and ADMIN placeholders) to a temporary file and starts Portico on it.
    init(_ yaml: String, resolver: any NameResolver = SystemResolver()) async throws {
        _ = TestMetrics.registry
        let listen = try freeLoopbackPort()
        let admin = try freeLoopbackPort()
        self.path = "/tmp/portico-test-\(UInt64.random(in: 0...UInt64.max)).yml"
        try Self.write(yaml, listen: listen, admin: admin, to: self.path)
        let configuration = try PorticoConfiguration.load(path: self.path)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "portico.test")
        logger.logLevel = .critical
        self.runtime = try PorticoRuntime(
            configuration: configuration,
            path: self.path,
            group: self.group,
            logger: logger,
            registry: TestMetrics.registry,
            resolver: resolver,
            version: "test"
        )
        try await self.runtime.server.start()
        try await self.runtime.admin?.start()
        self.port = listen
        self.adminPort = admin
        let prober = self.runtime.prober
        let discovery = self.runtime.dnsDiscovery
        self.prober = Task {
            await withDiscardingTaskGroup { group in
                group.addTask { try? await prober.run() }
                group.addTask { try? await discovery.run() }
            }
        }
    }

    static func write(_ yaml: String, listen: Int, admin: Int, to path: String) throws {
        let text = yaml.replacingPlaceholder("LISTEN", with: "127.0.0.1:\(listen)")
            .replacingPlaceholder("ADMIN", with: "127.0.0.1:\(admin)")
        guard let file = fopen(path, "w") else { throw HarnessError.cannotWrite(path) }
        fputs(text, file)
        fclose(file)
    }

    /// Replaces the configuration file (same placeholders, same ports).
    func rewrite(_ yaml: String) throws {
        try Self.write(yaml, listen: self.port, admin: self.adminPort, to: self.path)
    }

    func admin(_ method: String, _ path: String, token: String? = nil) async throws -> HTTPTestClient.Response {
        try await HTTPTestClient.request(
            port: self.adminPort,
            method == "POST" ? .POST : .GET,
            path,
            headers: token.map { [("Authorization", "Bearer \($0)")] } ?? []
        )
    }

    /// The ids of every backend of every pool that `GET /status` lists, sorted (empty if it cannot be read).
    func backendIDs() async -> [String] {
        guard let body = try? await self.admin("GET", "/status").body,
            let status = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let pools = status["pools"] as? [String: Any]
        else { return [] }
        return pools.values.flatMap { pool -> [String] in
            let backends = (pool as? [String: Any])?["backends"] as? [[String: Any]] ?? []
            return backends.compactMap { $0["id"] as? String }
        }.sorted()
    }

    func stop() async {
        self.prober.cancel()
        await self.runtime.admin?.stop()
        await self.runtime.server.shutdown(timeout: .seconds(2))
        try? await self.group.shutdownGracefully()
        unlink(self.path)
    }
}

enum HarnessError: Error {
    case cannotWrite(String)
}

func withRuntime<T>(
    _ yaml: String,
    resolver: any NameResolver = SystemResolver(),
    _ body: (RuntimeHarness) async throws -> T
) async throws -> T {
    let harness = try await RuntimeHarness(yaml, resolver: resolver)
    do {
        let result = try await body(harness)
        await harness.stop()
        return result
    } catch {
        await harness.stop()
        throw error
    }
}
