import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import PorticoBalancing
import PorticoRESP

/// Keep-alive connections to backends, for one event loop. Touched only on that loop, so it takes no locks.
final class UpstreamConnectionPool {
    let eventLoop: any EventLoop
    /// Per backend, most recently used last, so a lease takes the warmest connection. Each list is a class,
    /// found with a plain lookup and changed in place: `idle[key]?.popLast()` on a dictionary of arrays goes
    /// through nested `modify` accessors whose coroutine frames are heap-allocated, three per request.
    private var idle: [Key: IdleList] = [:]

    private final class IdleList {
        var handlers: [UpstreamHandler] = []
    }
    private let maxIdlePerBackend: Int
    private let idleTimeout: TimeAmount

    /// - Parameters:
    ///   - eventLoop: the loop whose downstream connections use this pool.
    ///   - maxIdlePerBackend: idle connections kept per backend; more are closed. Default 64.
    ///   - idleTimeout: an idle connection is closed after this. Default 30 s.
    init(eventLoop: any EventLoop, maxIdlePerBackend: Int = 64, idleTimeout: TimeAmount = .seconds(30)) {
        self.eventLoop = eventLoop
        self.maxIdlePerBackend = maxIdlePerBackend
        self.idleTimeout = idleTimeout
    }

    /// Which connections can serve a backend: same address, same transport.
    struct Key: Hashable {
        let address: String
        let tls: Bool
    }

    /// An idle keep-alive connection to `backend`, if there is one.
    func lease(_ backend: Backend, tls: Bool = false) -> UpstreamHandler? {
        guard let list = self.idle[Key(address: backend.address, tls: tls)] else { return nil }
        while let handler = list.handlers.popLast() {
            if handler.isActive { return handler }
        }
        return nil
    }

    /// Gives a connection back after a complete exchange.
    func release(_ handler: UpstreamHandler) {
        guard handler.isActive else { return }
        let list: IdleList
        if let existing = self.idle[handler.backendKey] {
            list = existing
        } else {
            list = IdleList()
            self.idle[handler.backendKey] = list
        }
        if list.handlers.count >= self.maxIdlePerBackend {
            handler.close()
            return
        }
        handler.park(timeout: self.idleTimeout)
        list.handlers.append(handler)
    }

    private func forget(_ handler: UpstreamHandler) {
        self.idle[handler.backendKey]?.handlers.removeAll { $0 === handler }
    }

    /// Opens a new connection to `backend` on this pool's loop.
    ///
    /// - Parameters:
    ///   - backend: where to connect.
    ///   - timeout: the connect timeout.
    ///   - forUpgrade: the connection carries a WebSocket handshake: bytes after the 101 go to the tunnel. Any
    ///     other connection treats bytes its decoder holds when it leaves as an error.
    func connect(
        _ backend: Backend,
        timeout: TimeAmount,
        tls: UpstreamTLS? = nil,
        forUpgrade: Bool = false
    ) -> EventLoopFuture<any Channel> {
        let key = Key(address: backend.address, tls: tls != nil)
        let serverName = tls?.serverName ?? (SocketAddressCheck.isIPLiteral(backend.host) ? nil : backend.host)
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: ReceiveBuffers.upstream)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls.context, serverHostname: serverName)
                        )
                    }
                    // Request headers were validated when the request arrived (see ProxyServer): no second scan.
                    // Framing headers are written by `upstreamHead` from what the proxy parsed; the encoder must
                    // neither add nor drop them (it drops TRACE's, for one, while the body would still go out).
                    var encoder = HTTPRequestEncoder.Configuration()
                    encoder.automaticallySetFramingHeaders = false
                    let idleGuard = UpstreamIdleGuard()
                    try channel.pipeline.syncOperations.addHandler(idleGuard)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: forUpgrade ? .forwardBytes : .fireError,
                        enableOutboundHeaderValidation: false,
                        encoderConfiguration: encoder
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        UpstreamHandler(backendKey: key, idleGuard: idleGuard)
                    )
                }
            }
        return bootstrap.connect(hostOrAddress: backend.host, port: backend.port)
    }

    /// The ``UpstreamHandler`` of a channel that ``connect(_:timeout:)`` opened; call on the loop.
    func handler(of channel: any Channel) -> UpstreamHandler? {
        guard let handler = try? channel.pipeline.syncOperations.handler(type: UpstreamHandler.self) else {
            return nil
        }
        handler.onClose = { [weak self] closed in self?.forget(closed) }
        return handler
    }
}

/// One ``UpstreamConnectionPool`` per event loop of the group, found by the loop a connection runs on.
final class UpstreamPools: Sendable {
    private let pools: [ObjectIdentifier: NIOLoopBoundBox<UpstreamConnectionPool>]
    private let metrics: [ObjectIdentifier: NIOLoopBoundBox<LoopMetrics>]

    init(group: any EventLoopGroup) {
        var pools: [ObjectIdentifier: NIOLoopBoundBox<UpstreamConnectionPool>] = [:]
        var metrics: [ObjectIdentifier: NIOLoopBoundBox<LoopMetrics>] = [:]
        for loop in group.makeIterator() {
            pools[ObjectIdentifier(loop)] = .makeBoxSendingValue(
                UpstreamConnectionPool(eventLoop: loop),
                eventLoop: loop
            )
            metrics[ObjectIdentifier(loop)] = .makeBoxSendingValue(LoopMetrics(), eventLoop: loop)
        }
        self.pools = pools
        self.metrics = metrics
    }

    /// The metric caches of `eventLoop`; call on that loop.
    func metrics(for eventLoop: any EventLoop) -> LoopMetrics {
        self.metrics[ObjectIdentifier(eventLoop)]?.value ?? LoopMetrics()
    }

    /// The pool of `eventLoop`; call on that loop.
    func pool(for eventLoop: any EventLoop) -> UpstreamConnectionPool {
        if let pool = self.pools[ObjectIdentifier(eventLoop)] { return pool.value }
        // A loop outside the group (an EmbeddedEventLoop in a test): a private pool is still correct.
        return UpstreamConnectionPool(eventLoop: eventLoop)
    }
}

enum SocketAddressCheck {
    /// IP literals are not valid SNI names.
    static func isIPLiteral(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}
