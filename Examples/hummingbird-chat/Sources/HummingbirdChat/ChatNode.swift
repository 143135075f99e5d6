import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import PorticoRelay
import ServiceLifecycle

/// A chat node on Hummingbird 2 that shares rooms with `portico-chat` nodes through PorticoRelay.
///
/// It speaks portico-chat's client protocol (DESIGN.md, chat protocol) on `GET /ws` and answers `GET /healthz`, so a
/// balancer can put both kinds of node behind one address and a client of either sees the other's messages. The
/// relay does the cross-node work: ``ChatConnection`` joins rooms, broadcasts and leaves; the ``RedisBroker`` moves
/// what is broadcast between nodes over Redis pub/sub.
struct ChatNode: Sendable {
    /// This node's id, unique among the nodes that share the Redis (it is in every message said here).
    let node: String
    let relay: Relay
    /// The relay's Redis connection: a `Service`, run by the application below.
    let broker: RedisBroker
    let logger: Logger

    /// The Hummingbird application: one HTTP server (with the WebSocket upgrade) and the broker, in one service group.
    ///
    /// - Parameters:
    ///   - host: the address to listen on.
    ///   - port: the port to listen on; 0 picks a free one (`onServerRunning` gets the channel, with its address).
    ///   - onServerRunning: called once the server is listening. Default: nothing.
    func makeApplication(
        host: String,
        port: Int,
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let node = self.node
        let relay = self.relay
        let broker = self.broker

        // Plain HTTP: 200 with the node id while the relay's Redis link works (probes come back), 503 otherwise,
        // as portico-chat answers, so the same balancer health check fits both.
        let router = Router()
        router.get("/healthz") { _, _ -> Response in
            let isHealthy = await broker.isHealthy
            return Response(
                status: isHealthy ? .ok : .serviceUnavailable,
                headers: [.contentType: "text/plain"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: isHealthy ? node + "\n" : "relay unhealthy\n"))
            )
        }

        // WebSocket upgrades have a router of their own (hummingbird-websocket's advice): `/ws` upgrades, whatever
        // its query (portico-chat's page connects to `/ws?client=…`, which balancers hash on).
        let webSocketRouter = Router(context: BasicWebSocketRequestContext.self)
        webSocketRouter.ws("/ws") { inbound, outbound, _ in
            await ChatConnection.run(node: node, relay: relay, inbound: inbound, outbound: outbound)
        }

        return Application(
            router: router,
            server: .http1WebSocketUpgrade(
                webSocketRouter: webSocketRouter,
                // portico-chat's limit: a `say` of 4,096 bytes fits whatever its JSON escaping makes of it.
                configuration: HTTP1WebSocketUpgradeChannel.Configuration(
                    ws: WebSocketServerConfiguration(maxFrameSize: ChatConnection.maxMessageSize)
                )
            ),
            configuration: ApplicationConfiguration(
                address: .hostname(host, port: port),
                serverName: "hummingbird-chat"
            ),
            // Started before the server and stopped after it: the relay can publish until the last client is gone.
            services: [broker],
            onServerRunning: onServerRunning,
            logger: self.logger
        )
    }
}
