import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import PorticoRelay
import Prometheus
import ServiceLifecycle

/// The chat node's HTTP and WebSocket server. On graceful shutdown it stops accepting, sends Close 1012 to
/// every client (so they reconnect through the balancer to another node) and returns.
final class ChatServer: Service, Sendable {
    let host: String
    let port: Int
    let node: String
    let relay: Relay
    let health: @Sendable () async -> Bool
    let logger: Logger
    /// Rooms one connection may be in at once; a join beyond gets an `error`. Default 100.
    let maxRooms: Int
    /// Operations one connection may have waiting; then the node stops reading its socket until the connection's
    /// session has worked through half of them. Default 64.
    let operationQueueLimit: Int
    let stats = ChatStats()
    private let clients = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    init(
        host: String,
        port: Int,
        node: String,
        relay: Relay,
        health: @escaping @Sendable () async -> Bool,
        logger: Logger,
        maxRooms: Int = 100,
        operationQueueLimit: Int = 64
    ) {
        self.host = host
        self.port = port
        self.node = node
        self.relay = relay
        self.health = health
        self.logger = logger
        self.maxRooms = maxRooms
        self.operationQueueLimit = operationQueueLimit
    }

    func run() async throws {
        let server = self
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let upgrader = NIOWebSocketServerUpgrader(
                        maxFrameSize: 1 << 16,
                        shouldUpgrade: { channel, head in
                            channel.eventLoop.makeSucceededFuture(head.uri.hasPrefix("/ws") ? HTTPHeaders() : nil)
                        },
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOWebSocketFrameAggregator(
                                        minNonFinalFragmentSize: 0,
                                        maxAccumulatedFrameCount: 64,
                                        maxAccumulatedFrameSize: 1 << 16
                                    )
                                )
                                try channel.pipeline.syncOperations.addHandler(ChatConnection(server: server))
                            }
                        }
                    )
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (
                            upgraders: [upgrader],
                            completionHandler: { context in
                                let sync = context.pipeline.syncOperations
                                if let http = try? sync.context(handlerType: ChatHTTPHandler.self) {
                                    sync.removeHandler(context: http, promise: nil)
                                }
                            }
                        )
                    )
                    try channel.pipeline.syncOperations.addHandler(ChatHTTPHandler(server: server))
                }
            }
            .bind(host: self.host, port: self.port)
            .get()
        self.logger.info("chat node listening", metadata: ["portico.listen": "\(self.host):\(self.port)"])
        try? await gracefulShutdown()
        self.logger.info("shutting down: Close 1012 to every client")
        try? await channel.close()
        let clients = self.clients.withLockedValue { Array($0.values) }
        for client in clients {
            var payload = ByteBuffer()
            payload.writeInteger(UInt16(1012))
            payload.writeString("service restart")
            client.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)).whenComplete { _ in
                client.close(promise: nil)
            }
        }
        try? await Task.sleep(for: .milliseconds(200))
    }

    func register(_ channel: any Channel) {
        self.clients.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
        self.stats.connections.add(1)
    }

    func unregister(_ channel: any Channel) {
        _ = self.clients.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
        self.stats.connections.add(-1)
    }
}

/// Counters for `/metrics`.
final class ChatStats: Sendable {
    let connections = AtomicCounter()
    let messagesIn = AtomicCounter()
}

final class AtomicCounter: Sendable {
    private let value = NIOLockedValueBox(0)

    /// Adds `delta` and returns the new value, in one step.
    @discardableResult
    func add(_ delta: Int) -> Int {
        self.value.withLockedValue {
            $0 += delta
            return $0
        }
    }

    var current: Int { self.value.withLockedValue { $0 } }
}

/// `/` (the page), `/healthz`, `/metrics`; everything else 404.
final class ChatHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: ChatServer
    private var head: HTTPRequestHead?

    init(server: ChatServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?").first.map(String.init) ?? "/"
            switch path {
            case "/", "/index.html":
                self.respond(
                    .ok,
                    type: "text/html; charset=utf-8",
                    body: ChatPage.html,
                    keepAlive: head.isKeepAlive,
                    context: context
                )
            case "/healthz":
                let server = self.server
                let keepAlive = head.isKeepAlive
                let promise = context.eventLoop.makePromise(of: Bool.self)
                promise.completeWithTask { await server.health() }
                promise.futureResult.assumeIsolated().whenSuccess { healthy in
                    self.respond(
                        healthy ? .ok : .serviceUnavailable,
                        type: "text/plain",
                        body: healthy ? server.node + "\n" : "relay unhealthy\n",
                        keepAlive: keepAlive,
                        context: context
                    )
                }
            case "/metrics":
                let server = self.server
                let keepAlive = head.isKeepAlive
                let promise = context.eventLoop.makePromise(of: String.self)
                promise.completeWithTask {
                    let stats = server.stats
                    let node = server.node
                    // Deliveries are counted on the relay's data plane and read from there (never per message).
                    let delivered = await server.relay.delivered
                    let dropped = server.relay.droppedForSlowMembers
                    Gauge(label: "chat_connections", dimensions: [("node", node)]).record(stats.connections.current)
                    Gauge(label: "chat_messages_in", dimensions: [("node", node)]).record(stats.messagesIn.current)
                    Gauge(label: "chat_messages_out", dimensions: [("node", node)]).record(delivered - dropped)
                    Gauge(label: "chat_messages_dropped", dimensions: [("node", node)]).record(dropped)
                    return PrometheusMetricsFactory.defaultRegistry.emitToString()
                }
                promise.futureResult.assumeIsolated().whenSuccess { text in
                    self.respond(
                        .ok,
                        type: "text/plain; version=0.0.4",
                        body: text,
                        keepAlive: keepAlive,
                        context: context
                    )
                }
            default:
                self.respond(
                    .notFound,
                    type: "text/plain",
                    body: "not found\n",
                    keepAlive: head.isKeepAlive,
                    context: context
                )
            }
        }
    }

    private func respond(
        _ status: HTTPResponseStatus,
        type: String,
        body: String,
        keepAlive: Bool,
        context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: type)
        headers.add(name: "content-length", value: String(body.utf8.count))
        headers.add(name: "x-chat-node", value: self.server.node)
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
            promise: nil
        )
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
