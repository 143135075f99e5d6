import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import PorticoBalancing
import PorticoConfig
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Accepts downstream connections on every configured listener and proxies them. A `Service`: it runs until
/// graceful shutdown, then stops accepting.
public final class ProxyServer: Service, Sendable {
    private let store: ConfigStore
    private let group: any EventLoopGroup
    private let logger: Logger
    private let accessLogger: Logger
    private let upstreams: UpstreamPools
    private let connections = ConnectionCounter()
    private let perIP = ConnectionsPerIP()
    private let listeners = NIOLockedValueBox<[HostPort: any Channel]>([:])
    /// Open downstream channels, for graceful shutdown. Locked once per connection, not per request.
    private let openChannels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    /// - Parameters:
    ///   - store: where each new connection reads the configuration snapshot it keeps.
    ///   - group: the event loops; each connection and its upstreams live on one of them.
    ///   - logger: for lifecycle and error logs.
    ///   - accessLogger: one line per request at `.info`; defaults to `logger` relabelled `portico.access`.
    public init(store: ConfigStore, group: any EventLoopGroup, logger: Logger, accessLogger: Logger? = nil) {
        self.store = store
        self.group = group
        self.logger = logger
        self.accessLogger = accessLogger ?? logger
        self.upstreams = UpstreamPools(group: group)
    }

    /// Downstream connections open now.
    public var activeConnections: Int { self.connections.current }

    /// Binds every listener of the current snapshot.
    ///
    /// - Returns: the bound addresses, in listener order (a port 0 listener gets a real port).
    @discardableResult
    public func start() async throws -> [SocketAddress] {
        let snapshot = self.store.snapshot
        for pool in snapshot.pools.values {
            if let fingerprint = pool.selector.fingerprint {
                self.logger.info(
                    "ring fingerprint \(fingerprint)",
                    metadata: ["portico.pool": "\(pool.name)", "portico.backends": "\(pool.backends.count)"]
                )
            }
        }
        try await self.reconcileListeners(snapshot.configuration.listeners)
        let bound = self.listeners.withLockedValue { $0 }
        return snapshot.configuration.listeners.compactMap { bound[$0.address]?.localAddress }
    }

    /// Opens the listeners in `wanted` that are not open yet, then closes those no longer wanted. All new ones
    /// bind or none does (the error is thrown and nothing changes); connections already accepted stay.
    public func reconcileListeners(_ wanted: [ListenerConfiguration]) async throws {
        let current = self.listeners.withLockedValue { $0 }
        var opened: [HostPort: any Channel] = [:]
        do {
            for listener in wanted where current[listener.address] == nil && opened[listener.address] == nil {
                let channel = try await self.bind(listener)
                opened[listener.address] = channel
                self.logger.info(
                    "listening",
                    metadata: ["portico.listener": "\(channel.localAddress.map { "\($0)" } ?? "?")"]
                )
            }
        } catch {
            for channel in opened.values { try? await channel.close() }
            throw error
        }
        let wantedAddresses = Set(wanted.map(\.address))
        let removed = self.listeners.withLockedValue { listeners in
            listeners.merge(opened) { old, _ in old }
            let removed = listeners.filter { !wantedAddresses.contains($0.key) }
            for key in removed.keys { listeners.removeValue(forKey: key) }
            return removed
        }
        for (address, channel) in removed {
            self.logger.info("listener closed", metadata: ["portico.listener": "\(address)"])
            try? await channel.close()
        }
    }

    /// Closes every listener; connections already accepted go on until they end.
    public func stop() async {
        let channels = self.listeners.withLockedValue { listeners in
            defer { listeners = [:] }
            return Array(listeners.values)
        }
        for channel in channels { try? await channel.close() }
    }

    /// Stops accepting, lets in-flight requests finish (idle connections close at once, WebSockets get
    /// Close 1001), and cuts whatever is still open after `timeout`.
    public func shutdown(timeout: Duration) async {
        await self.stop()
        let channels = self.openChannels.withLockedValue { Array($0.values) }
        self.logger.info("draining connections", metadata: ["portico.connections": "\(channels.count)"])
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(ProxyShutdownEvent())
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, self.openChannels.withLockedValue({ !$0.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = self.openChannels.withLockedValue { Array($0.values) }
        if !left.isEmpty {
            self.logger.warning(
                "shutdown timeout: cutting connections",
                metadata: ["portico.connections": "\(left.count)"]
            )
            for channel in left { channel.close(promise: nil) }
        }
    }

    public func run() async throws {
        try await self.start()
        try? await gracefulShutdown()
        self.logger.info("shutting down: no longer accepting connections")
        await self.shutdown(timeout: self.store.snapshot.configuration.limits.shutdownTimeout)
    }

    private func bind(_ listener: ListenerConfiguration) async throws -> any Channel {
        // A plain listener with redirect_https sends clients to the first TLS listener's port.
        let redirectPort: Int? =
            listener.redirectHTTPS
            ? self.store.snapshot.configuration.listeners.first { $0.tls != nil }?.address.port : nil
        let store = self.store
        let upstreams = self.upstreams
        let connections = self.connections
        let perIP = self.perIP
        let openChannels = self.openChannels
        let accessLog = AccessLog(logger: self.accessLogger)
        let logger = self.logger
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.recvAllocator, value: ReceiveBuffers.downstream)
            .childChannelInitializer { channel in
                let snapshot = store.snapshot
                let limits = snapshot.configuration.limits
                guard connections.acquire(limit: limits.maxConnections) else {
                    logger.warning("max_connections reached; closing a new connection")
                    return channel.eventLoop.makeFailedFuture(ProxyServerError.tooManyConnections)
                }
                let key = ObjectIdentifier(channel)
                openChannels.withLockedValue { $0[key] = channel }
                channel.closeFuture.whenComplete { _ in
                    connections.release()
                    openChannels.withLockedValue { _ = $0.removeValue(forKey: key) }
                }
                if let limit = limits.maxConnectionsPerIP, let address = channel.remoteAddress,
                    let ip = ConnectionsPerIP.key(for: address, ipv6Prefix: limits.ipv6Prefix)
                {
                    guard perIP.acquire(ip, limit: limit) else {
                        logger.warning("max_connections_per_ip reached", metadata: ["portico.downstream": "\(ip)"])
                        return channel.eventLoop.makeFailedFuture(ProxyServerError.tooManyConnections)
                    }
                    channel.closeFuture.whenComplete { _ in perIP.release(ip) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    let timeouts = DownstreamTimeoutHandler(
                        headerTimeout: .milliseconds(limits.headerTimeout.milliseconds),
                        idleTimeout: .milliseconds(limits.idleTimeout.milliseconds)
                    )
                    let sync = channel.pipeline.syncOperations
                    let tls = snapshot.listenerTLS[listener.address]
                    if let tls {
                        // Read the ClientHello's SNI, then put the TLS handler for that name right behind it.
                        let sni = ByteToMessageHandler(
                            SNIHandler { result in
                                var name: String?
                                if case .hostname(let hostname) = result { name = hostname }
                                return channel.eventLoop.makeCompletedFuture {
                                    let sync = channel.pipeline.syncOperations
                                    let sniContext = try sync.context(name: "portico.sni")
                                    try sync.addHandler(
                                        NIOSSLServerHandler(context: tls.context(for: name)),
                                        position: .after(sniContext.handler)
                                    )
                                }
                            }
                        )
                        try sync.addHandler(sni, name: "portico.sni")
                    }
                    try sync.addHandler(timeouts)
                    // An upgrade configuration without upgraders: NIO then builds the request decoder with
                    // `.forwardBytes`, so bytes a client sends after its WebSocket handshake reach the tunnel
                    // when the decoder leaves the pipeline. The upgrade handler itself steps aside after the
                    // first request head, since it has nothing to upgrade to.
                    // Pipelining is DownstreamHandler's: it queues a pipelined request only when one arrives,
                    // instead of pausing reads around every exchange (two epoll_ctl calls per request).
                    // No outbound header validator: every header the proxy writes was checked on its way in
                    // (RequestInspection for requests, NIO's strict parser for backend responses) or is built by
                    // the proxy from such parts, so a second scan of every header per response finds nothing.
                    try sync.configureHTTPServerPipeline(
                        withPipeliningAssistance: false,
                        withServerUpgrade: (upgraders: [], completionHandler: { _ in }),
                        withErrorHandling: false,
                        withOutboundHeaderValidation: false
                    )
                    try sync.addHandler(
                        DownstreamHandler(
                            store: store,
                            upstreams: upstreams.pool(for: channel.eventLoop),
                            timeouts: timeouts,
                            accessLog: accessLog,
                            metrics: upstreams.metrics(for: channel.eventLoop),
                            scheme: tls == nil ? "http" : "https",
                            redirectHTTPSPort: redirectPort
                        )
                    )
                }
            }
            .bind(host: listener.address.host, port: listener.address.port)
            .get()
    }
}

enum ProxyServerError: Error {
    case tooManyConnections
}

/// Open downstream connections; an atomic, so accepting on several loops takes no lock.
final class ConnectionCounter: Sendable {
    private let value = Atomic<Int>(0)

    var current: Int { self.value.load(ordering: .relaxed) }

    func acquire(limit: Int) -> Bool {
        let after = self.value.wrappingAdd(1, ordering: .relaxed).newValue
        if after > limit {
            self.value.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func release() {
        self.value.subtract(1, ordering: .relaxed)
    }
}

/// Open downstream connections per client IP, for `max_connections_per_ip`. Touched once per connection.
final class ConnectionsPerIP: Sendable {
    /// Whom a connection counts against: its IPv4 address, or the `ipv6Prefix` first bits of its IPv6 address
    /// (one host usually holds a whole /64, so single IPv6 addresses would limit nobody). An IPv4-mapped IPv6
    /// address counts as its IPv4 address.
    static func key(for address: SocketAddress, ipv6Prefix: Int) -> String? {
        switch address {
        case .v4:
            return address.ipAddress
        case .v6:
            var bytes = [UInt8](repeating: 0, count: 16)
            guard let text = address.ipAddress, inet_pton(AF_INET6, text, &bytes) == 1 else { return nil }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                return bytes[12..<16].map { String($0) }.joined(separator: ".")
            }
            let prefix = max(0, min(128, ipv6Prefix))
            for index in 0..<16 {
                let keep = max(0, min(8, prefix - 8 * index))
                bytes[index] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
            }
            let hex = bytes.map { byte in
                let text = String(byte, radix: 16)
                return byte < 16 ? "0" + text : text
            }
            return hex.joined() + "/\(prefix)"
        case .unixDomainSocket:
            return nil
        }
    }

    private let counts = NIOLockedValueBox<[String: Int]>([:])

    func acquire(_ ip: String, limit: Int) -> Bool {
        self.counts.withLockedValue { counts in
            let current = counts[ip, default: 0]
            guard current < limit else { return false }
            counts[ip] = current + 1
            return true
        }
    }

    func release(_ ip: String) {
        self.counts.withLockedValue { counts in
            let remaining = counts[ip, default: 1] - 1
            counts[ip] = remaining > 0 ? remaining : nil
        }
    }
}
