import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import PorticoBalancing
import PorticoConfig
import Prometheus
import ServiceLifecycle

/// The admin API (DESIGN.md): status, HTML page, Prometheus metrics, effective configuration, reload, pause
/// and resume pools, drain and enable backends. A `Service`; loopback by default; bearer token when set.
///
/// Every request passes ``AdminRequestGuard`` first (Host allow-list, same-origin `Origin`, token), and the
/// listener has its own connection limit and header/idle timeouts, apart from the proxy's `limits`.
public final class AdminServer: Service, Sendable {
    /// What the admin handlers need; all of it `Sendable`.
    struct Context: Sendable {
        let store: ConfigStore
        let server: ProxyServer
        let reloader: ConfigReloader
        let requestGuard: AdminRequestGuard
        let registry: PrometheusCollectorRegistry
        let version: String
        let started: ContinuousClock.Instant
        let logger: Logger
    }

    private let configuration: AdminConfiguration
    private let context: Context
    private let group: any EventLoopGroup
    private let channel = NIOLockedValueBoxAdmin()
    /// Admin connections open now, for `admin.max_connections` (apart from the proxy's count).
    private let connections = ConnectionCounter()

    /// - Parameters:
    ///   - configuration: where to listen, the optional token, allowed host names, connection limit, timeouts.
    ///   - store: the configuration snapshots.
    ///   - server: the proxy, for connection counts.
    ///   - reloader: what `POST /reload` runs.
    ///   - registry: where swift-metrics' Prometheus factory records; emitted by `GET /metrics`.
    ///   - version: shown in `/status`.
    public init(
        configuration: AdminConfiguration,
        store: ConfigStore,
        server: ProxyServer,
        reloader: ConfigReloader,
        registry: PrometheusCollectorRegistry,
        version: String,
        group: any EventLoopGroup,
        logger: Logger
    ) {
        self.configuration = configuration
        self.group = group
        self.context = Context(
            store: store,
            server: server,
            reloader: reloader,
            requestGuard: AdminRequestGuard(token: configuration.token, allowedHosts: configuration.allowedHosts),
            registry: registry,
            version: version,
            started: .now,
            logger: logger
        )
    }

    /// Binds the admin listener.
    ///
    /// - Returns: the bound address.
    @discardableResult
    public func start() async throws -> SocketAddress? {
        let context = self.context
        let connections = self.connections
        let maxConnections = self.configuration.maxConnections
        let headerTimeout = TimeAmount.milliseconds(self.configuration.headerTimeout.milliseconds)
        let idleTimeout = TimeAmount.milliseconds(self.configuration.idleTimeout.milliseconds)
        let channel = try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                // Its own limit: a flood of admin connections must not use up the proxy's, nor the reverse.
                guard connections.acquire(limit: maxConnections) else {
                    context.logger.warning(
                        "admin max_connections reached; closing a new connection",
                        metadata: ["portico.downstream": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"]
                    )
                    return channel.eventLoop.makeFailedFuture(ProxyServerError.tooManyConnections)
                }
                channel.closeFuture.whenComplete { _ in connections.release() }
                return channel.eventLoop.makeCompletedFuture {
                    // The proxy's slowloris guard, in front of the decoder so it sees when a request starts.
                    let timeouts = DownstreamTimeoutHandler(headerTimeout: headerTimeout, idleTimeout: idleTimeout)
                    try channel.pipeline.syncOperations.addHandler(timeouts)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(context: context, timeouts: timeouts))
                }
            }
            .bind(host: self.configuration.address.host, port: self.configuration.address.port)
            .get()
        self.channel.set(channel)
        self.context.logger.info(
            "admin listening",
            metadata: ["portico.listener": "\(channel.localAddress.map { "\($0)" } ?? "?")"]
        )
        return channel.localAddress
    }

    public func stop() async {
        try? await self.channel.take()?.close()
    }

    public func run() async throws {
        try await self.start()
        try? await gracefulShutdown()
        await self.stop()
    }
}

/// The bound admin channel.
final class NIOLockedValueBoxAdmin: Sendable {
    private let box = NIOLockedValueBox<(any Channel)?>(nil)
    func set(_ channel: any Channel) { self.box.withLockedValue { $0 = channel } }
    func take() -> (any Channel)? {
        self.box.withLockedValue { channel in
            defer { channel = nil }
            return channel
        }
    }
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let context: AdminServer.Context
    private let timeouts: DownstreamTimeoutHandler
    private var head: HTTPRequestHead?
    /// A request was refused and the connection is closing: whatever else arrives is ignored.
    private var isRefused = false

    init(context: AdminServer.Context, timeouts: DownstreamTimeoutHandler) {
        self.context = context
        self.timeouts = timeouts
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.isRefused else { return }
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            if let refusal = self.context.requestGuard.check(head) {
                self.refuse(head, refusal, context: context)
            } else {
                self.head = head
            }
        case .body: break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            // Admin calls carry no body, so the header timeout runs until the request's end: a body trickled
            // byte by byte holds a connection no longer than a slow head would.
            self.timeouts.headReceived()
            self.handle(head, context: context)
        }
    }

    /// Answers at once, without reading a body, and closes: a refused client gets nothing more here.
    private func refuse(_ head: HTTPRequestHead, _ refusal: AdminRequestGuard.Refusal, context: ChannelHandlerContext) {
        self.isRefused = true
        self.timeouts.headReceived()
        // No credentials in the log; Host and Origin are what an operator needs to fix allowed_hosts.
        func clipped(_ name: String) -> Logger.MetadataValue {
            let values = head.headers[name]
            return values.isEmpty ? "-" : "\(String(values.joined(separator: ", ").prefix(100)))"
        }
        self.context.logger.warning(
            "admin request refused: \(refusal.reason)",
            metadata: [
                "portico.status": "\(refusal.status.code)",
                "portico.method": "\(head.method.rawValue)",
                "portico.path": "\(String(head.uri.prefix(200)))",
                "portico.host": clipped("host"),
                "portico.origin": clipped("origin"),
                "portico.downstream": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")",
            ]
        )
        var reply = Reply(status: refusal.status, contentType: "text/plain; charset=utf-8", body: refusal.reason + "\n")
        if refusal.status == .unauthorized { reply.extraHeaders = [("www-authenticate", "Bearer")] }
        self.send(reply, keepAlive: false, context: context)
    }

    private struct Reply {
        var status: HTTPResponseStatus
        var contentType: String
        var body: String
        var extraHeaders: [(String, String)] = []

        static func json(_ value: JSONValue, status: HTTPResponseStatus = .ok) -> Reply {
            Reply(status: status, contentType: "application/json", body: value.rendered + "\n")
        }

        static func error(_ status: HTTPResponseStatus, _ message: String) -> Reply {
            .json(.object([("error", .string(message))]), status: status)
        }
    }

    private func handle(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
        let parts = path.split(separator: "/").map(String.init)
        let snapshot = self.context.store.snapshot
        switch (head.method, parts.count) {
        case (.GET, 0):
            let status = AdminStatus.status(
                snapshot: snapshot,
                server: self.context.server,
                version: self.context.version,
                started: self.context.started
            )
            let html = StatusPage.render(status)
            self.send(
                Reply(status: .ok, contentType: "text/html; charset=utf-8", body: html),
                keepAlive: head.isKeepAlive,
                context: context
            )
        case (.GET, 1) where parts[0] == "status":
            let status = AdminStatus.status(
                snapshot: snapshot,
                server: self.context.server,
                version: self.context.version,
                started: self.context.started
            )
            self.send(.json(status), keepAlive: head.isKeepAlive, context: context)
        case (.GET, 1) where parts[0] == "metrics":
            AdminMetrics.updateGauges(snapshot: snapshot, server: self.context.server)
            let text = self.context.registry.emitToString()
            self.send(
                Reply(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: text),
                keepAlive: head.isKeepAlive,
                context: context
            )
        case (.GET, 1) where parts[0] == "config":
            self.send(
                .json(AdminStatus.configuration(snapshot.configuration)),
                keepAlive: head.isKeepAlive,
                context: context
            )
        case (.POST, 1) where parts[0] == "reload":
            let reloader = self.context.reloader
            let promise = context.eventLoop.makePromise(of: Int.self)
            promise.completeWithTask { try await reloader.reload() }
            let keepAlive = head.isKeepAlive
            promise.futureResult.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let generation):
                    self.send(
                        .json(.object([("generation", .int(generation))])),
                        keepAlive: keepAlive,
                        context: context
                    )
                case .failure(let error):
                    self.send(.error(.badRequest, "\(error)"), keepAlive: keepAlive, context: context)
                }
            }
        case (.POST, 3) where parts[0] == "pools" && (parts[2] == "pause" || parts[2] == "resume"):
            guard let pool = snapshot.pools[parts[1]] else {
                self.send(.error(.notFound, "no pool named \(parts[1])"), keepAlive: head.isKeepAlive, context: context)
                return
            }
            let pause = parts[2] == "pause"
            pool.state.setPaused(pause)
            if !pause { pool.state.releaseAll() }
            self.context.logger.notice(
                pause ? "pool paused" : "pool resumed",
                metadata: ["portico.pool": "\(pool.name)"]
            )
            self.send(
                .json(
                    .object([("pool", .string(pool.name)), ("paused", .bool(pause)), ("held", .int(pool.state.held))])
                ),
                keepAlive: head.isKeepAlive,
                context: context
            )
        case (.POST, 5)
        where parts[0] == "pools" && parts[2] == "backends" && (parts[4] == "drain" || parts[4] == "enable"):
            guard let pool = snapshot.pools[parts[1]] else {
                self.send(.error(.notFound, "no pool named \(parts[1])"), keepAlive: head.isKeepAlive, context: context)
                return
            }
            guard let index = pool.backends.firstIndex(where: { $0.id == parts[3] }) else {
                self.send(
                    .error(.notFound, "no backend \(parts[3]) in pool \(parts[1])"),
                    keepAlive: head.isKeepAlive,
                    context: context
                )
                return
            }
            let state = pool.states[index]
            if parts[4] == "drain" {
                state.setDraining(true)
                let drain = pool.configuration.drainTimeout
                state.closeTunnels(code: 1012, reason: "service restart", spread: drain * 0.8, cutAfter: drain)
            } else {
                state.setDraining(false)
                if !pool.state.isPaused { pool.state.releaseAll() }
            }
            self.context.logger.notice(
                parts[4] == "drain" ? "backend draining" : "backend enabled",
                metadata: ["portico.pool": "\(pool.name)", "portico.backend": "\(state.id)"]
            )
            self.send(
                .json(
                    .object([
                        ("pool", .string(pool.name)), ("backend", .string(state.id)),
                        ("state", .string(state.status.rawValue)),
                    ])
                ),
                keepAlive: head.isKeepAlive,
                context: context
            )
        case (.GET, _), (.POST, _):
            self.send(
                .error(.notFound, "no such admin call: \(head.method.rawValue) \(path)"),
                keepAlive: head.isKeepAlive,
                context: context
            )
        default:
            self.send(.error(.methodNotAllowed, "use GET or POST"), keepAlive: head.isKeepAlive, context: context)
        }
    }

    private func send(_ reply: Reply, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: reply.contentType)
        headers.add(name: "content-length", value: String(reply.body.utf8.count))
        headers.add(name: "cache-control", value: "no-store")
        for (name, value) in reply.extraHeaders { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(
            Self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: reply.status, headers: headers))),
            promise: nil
        )
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: reply.body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
        // Waiting for the next request: the idle timeout (or the header timeout, if one is already arriving).
        if keepAlive && !self.isRefused { self.timeouts.exchangeFinished() }
    }
}

/// Gauges read from the live state when Prometheus scrapes.
enum AdminMetrics {
    static func updateGauges(snapshot: ProxySnapshot, server: ProxyServer) {
        Gauge(label: "portico_downstream_connections").record(server.activeConnections)
        Gauge(label: "portico_config_generation").record(snapshot.generation)
        for pool in snapshot.pools.values {
            Gauge(label: "portico_held_requests", dimensions: [("pool", pool.name)]).record(pool.state.held)
            for state in pool.states {
                let dimensions = [("pool", pool.name), ("backend", state.id)]
                Gauge(label: "portico_backend_active", dimensions: dimensions).record(state.activeConnections)
                Gauge(label: "portico_tunnels_live", dimensions: dimensions).record(state.tunnels.live)
                Gauge(label: "portico_backend_up", dimensions: dimensions).record(state.status == .up ? 1 : 0)
            }
        }
        // Every known backend, draining ones too: their tunnels still carry traffic.
        for state in snapshot.runtime.backendStates { exportTunnelTraffic(of: state) }
    }
}
