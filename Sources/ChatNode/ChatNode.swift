import ArgumentParser
import Logging
import Metrics
import NIOCore
import NIOPosix
import PorticoRESP
import PorticoRelay
import Prometheus
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `portico-chat`: an example chat node. WebSocket JSON protocol on `/ws`, the web page on `/`, `/healthz`,
/// `/metrics`; rooms shared with the other nodes through PorticoRelay.
@main
struct ChatNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portico-chat",
        abstract: "An example chat node: rooms across nodes through PorticoRelay (Redis), WebSockets, a web page."
    )

    @Option(help: "Address to listen on (host:port).")
    var listen: String = "127.0.0.1:9001"

    @Option(help: "This node's id, unique in the cluster (default: the host name).")
    var nodeId: String?

    @Option(
        help: """
            Redis URL (redis://host:port); without it the node runs alone with the in-process broker. With \
            --redis-cluster, repeat it to name several seed nodes: the slot map is read from any that answers.
            """
    )
    var redis: [String] = []

    @Flag(help: "--redis is a node of a Redis Cluster: rooms become shard channels (SSUBSCRIBE/SPUBLISH).")
    var redisCluster = false

    @Option(help: "Address the balancer should use for this node (announced in Redis with --service).")
    var advertise: String?

    @Option(help: "Service name to announce under for the balancer's Redis discovery.")
    var service: String?

    @Option(help: "Rooms one WebSocket connection may be in at once; a join beyond gets an error.")
    var maxRooms: Int = 100

    func run() async throws {
        let nodeId = self.nodeId ?? hostName()
        // The node id travels in every envelope (a u16 length) and in every member id: keep it short.
        guard !nodeId.isEmpty, nodeId.utf8.count <= 255 else {
            throw ValidationError("--node-id: expected 1-255 bytes")
        }
        guard self.maxRooms >= 1 else { throw ValidationError("--max-rooms: expected 1 or more") }
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        MetricsSystem.bootstrap(PrometheusMetricsFactory())
        var logger = Logger(label: "portico.chat")
        logger[metadataKey: "portico.node"] = "\(nodeId)"
        guard let colon = self.listen.lastIndex(of: ":"),
            let port = Int(self.listen[self.listen.index(after: colon)...]), (0...65_535).contains(port)
        else { throw ValidationError("--listen: expected host:port") }
        let host = String(self.listen[..<colon])

        var services: [any Service] = []
        let broker: any Broker
        var health: @Sendable () async -> Bool = { true }
        if !self.redis.isEmpty {
            let urls = try self.redis.map { redis in
                guard let url = RedisURL(redis) else { throw ValidationError("--redis: expected redis://host:port") }
                return url
            }
            guard urls.count == 1 || self.redisCluster else {
                throw ValidationError("--redis: only one without --redis-cluster (several are a cluster's seeds)")
            }
            var configuration = RedisBroker.Configuration(url: urls[0], node: nodeId)
            if self.redisCluster { configuration.mode = .cluster(seeds: Array(urls.dropFirst())) }
            if let service = self.service {
                configuration.service = service
                configuration.advertise = self.advertise ?? self.listen
            }
            let redisBroker = RedisBroker(configuration: configuration)
            broker = redisBroker
            services.append(redisBroker)
            health = { await redisBroker.isHealthy }
        } else {
            if self.redisCluster { throw ValidationError("--redis-cluster needs --redis") }
            broker = InProcessBroker(node: nodeId)
        }
        let relay = Relay(node: nodeId, broker: broker, logger: logger)
        let server = ChatServer(
            host: host,
            port: port,
            node: nodeId,
            relay: relay,
            health: health,
            logger: logger,
            maxRooms: self.maxRooms
        )
        services.append(server)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        logger.info(
            "chat node starting",
            metadata: [
                "portico.listen": "\(self.listen)",
                "portico.redis":
                    "\(self.redis.isEmpty ? "none" : self.redis.map(RedisURL.redactingPassword(in:)).joined(separator: ","))",
            ]
        )
        try await group.run()
    }
}

/// The host name (a container's is unique per replica).
func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count) == 0 else { return "chat" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
