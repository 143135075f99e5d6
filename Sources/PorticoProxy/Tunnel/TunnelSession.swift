import CoreMetrics
import Logging
import NIOCore
import PorticoBalancing
import Synchronization

/// Live tunnels and WebSocket traffic per backend: the hooks the admin API and metrics read.
public final class TunnelCounters: Sendable {
    private let open = Atomic<Int>(0)
    private let messagesFromClients = Atomic<Int>(0)
    private let messagesFromBackend = Atomic<Int>(0)
    private let bytesFromClients = Atomic<Int>(0)
    private let bytesFromBackend = Atomic<Int>(0)
    private let total = Atomic<Int>(0)
    /// What the last `/metrics` scrape already exported of each total.
    private let exportedClientMessages = Atomic<Int>(0)
    private let exportedBackendMessages = Atomic<Int>(0)
    private let exportedClientBytes = Atomic<Int>(0)
    private let exportedBackendBytes = Atomic<Int>(0)

    public init() {}

    /// Growth of each total since the previous call, for the Prometheus counters: the tunnels count once per
    /// read (these atomics) and `/metrics` turns that into counter increments when scraped.
    func takeGrowth() -> (clientMessages: Int, backendMessages: Int, clientBytes: Int, backendBytes: Int) {
        func growth(_ value: Int, _ exported: borrowing Atomic<Int>) -> Int {
            value - exported.exchange(value, ordering: .relaxed)
        }
        return (
            growth(self.clientMessages, self.exportedClientMessages),
            growth(self.backendMessages, self.exportedBackendMessages),
            growth(self.clientBytes, self.exportedClientBytes), growth(self.backendBytes, self.exportedBackendBytes)
        )
    }

    /// Tunnels open now.
    public var live: Int { self.open.load(ordering: .relaxed) }
    /// Tunnels ever opened.
    public var opened: Int { self.total.load(ordering: .relaxed) }
    public var clientMessages: Int { self.messagesFromClients.load(ordering: .relaxed) }
    public var backendMessages: Int { self.messagesFromBackend.load(ordering: .relaxed) }
    public var clientBytes: Int { self.bytesFromClients.load(ordering: .relaxed) }
    public var backendBytes: Int { self.bytesFromBackend.load(ordering: .relaxed) }

    func opened(_ delta: Int) {
        self.open.add(delta, ordering: .relaxed)
        if delta > 0 { self.total.add(delta, ordering: .relaxed) }
    }

    func add(fromClient: Bool, bytes: Int, messages: Int) {
        if fromClient {
            self.bytesFromClients.add(bytes, ordering: .relaxed)
            if messages > 0 { self.messagesFromClients.add(messages, ordering: .relaxed) }
        } else {
            self.bytesFromBackend.add(bytes, ordering: .relaxed)
            if messages > 0 { self.messagesFromBackend.add(messages, ordering: .relaxed) }
        }
    }
}

/// The state two ``TunnelHandler``s share: limits, idle timer, accounting, and how the tunnel ends.
///
/// Lives on the event loop of both halves.
final class TunnelSession {
    let pool: BackendPool
    let backend: Backend
    let logger: Logger
    private let idleTimeout: TimeAmount
    private let sendTimeout: TimeAmount
    /// Set while the client takes nothing of what the backend sends (`limits.send_timeout`): then both go.
    private var sendTimer: LazyTimer?
    private let eventLoop: any EventLoop
    /// Closes the tunnel with 1001 when nothing crossed it for `idleTimeout`; a read only moves its deadline.
    private var idleTimer: LazyTimer?
    private var inactiveHalves = 0
    private var isClosing = false
    private let started = NIODeadline.now()
    var downstream: TunnelHandler?
    var upstream: TunnelHandler?
    private let metrics: TunnelMetrics
    /// The close code the tunnel ended with, when Portico or a peer sent one.
    private var closeCode: UInt16?

    init(
        pool: BackendPool,
        backend: Backend,
        idleTimeout: TimeAmount,
        sendTimeout: TimeAmount = .seconds(60),
        eventLoop: any EventLoop,
        logger: Logger,
        metrics: TunnelMetrics
    ) {
        self.pool = pool
        self.backend = backend
        self.idleTimeout = idleTimeout
        self.sendTimeout = sendTimeout
        self.eventLoop = eventLoop
        self.logger = logger
        self.metrics = metrics
    }

    var counters: TunnelCounters { self.pool.states[self.backend.index].tunnels }

    func start() {
        self.counters.opened(1)
        self.pool.states[self.backend.index].register(self, on: self.eventLoop)
        let timer = LazyTimer(eventLoop: self.eventLoop, period: self.idleTimeout) { [weak self] in
            self?.close(code: 1001, reason: "idle timeout")
        }
        timer.set(in: self.idleTimeout)
        self.idleTimer = timer
    }

    func activity() {
        self.idleTimer?.set(in: self.idleTimeout)
    }

    /// The client stopped taking bytes: it has `sendTimeout` to start again. (A Close frame could not reach a
    /// client that does not read, so the cut is a plain close of both sides.)
    func downstreamBlocked() {
        if self.sendTimer == nil {
            self.sendTimer = LazyTimer(eventLoop: self.eventLoop, period: self.sendTimeout) { [weak self] in
                guard let self, !(self.downstream?.isWritable ?? true) else { return }
                self.logger.info(
                    "send timeout: closing a tunnel whose client does not read",
                    metadata: ["portico.backend": "\(self.backend.id)"]
                )
                self.closeCode = 1006
                self.closeBoth()
            }
        }
        self.sendTimer?.set(in: self.sendTimeout)
    }

    func downstreamWritable() {
        self.sendTimer?.clear()
    }

    func count(from side: TunnelHandler.Side, bytes: Int, messages: Int) {
        self.counters.add(fromClient: side == .downstream, bytes: bytes, messages: messages)
    }

    /// Ends the tunnel politely: Close `code` to the client and a masked Close to the backend, each at a
    /// frame boundary of its stream. (1001 going away on shutdown and idle, 1012 service restart on drain.)
    func close(code: UInt16, reason: String) {
        guard !self.isClosing else { return }
        self.isClosing = true
        self.closeCode = code
        self.logger.debug(
            "closing tunnel",
            metadata: ["portico.backend": "\(self.backend.id)", "portico.close_code": "\(code)"]
        )
        self.downstream?.sendClose(code: code, reason: reason)
        self.upstream?.sendClose(code: 1001, reason: "going away")
        self.scheduleHardClose()
    }

    /// A peer broke the protocol or a limit: tell it why with the violation's close code, tell the other
    /// side the tunnel is going away, and stop forwarding what the offender sends.
    func violation(_ violation: WebSocketFrameTracker.Violation, from side: TunnelHandler.Side, boundaryIsClean: Bool) {
        guard !self.isClosing else { return }
        self.isClosing = true
        self.closeCode = violation.code
        self.logger.info(
            "closing tunnel: \(violation.reason)",
            metadata: ["portico.backend": "\(self.backend.id)", "portico.close_code": "\(violation.code)"]
        )
        let offender = side == .downstream ? self.downstream : self.upstream
        let other = side == .downstream ? self.upstream : self.downstream
        offender?.isDraining = true
        offender?.sendClose(code: violation.code, reason: violation.reason)
        if boundaryIsClean {
            other?.sendClose(code: side == .downstream ? 1001 : 1014, reason: "peer violated the protocol")
        } else {
            other?.close()  // part of the bad frame's header already went out: no clean place for a Close
        }
        self.scheduleHardClose()
    }

    /// Both directions ended (half-closes): close both channels.
    func closeBoth() {
        self.downstream?.close()
        self.upstream?.close()
    }

    /// Whatever a peer does after a Close, the tunnel is gone within two seconds.
    private func scheduleHardClose() {
        self.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) { [weak self] in
            self?.closeBoth()
        }
    }

    func halfInactive(_ half: TunnelHandler) {
        self.inactiveHalves += 1
        if self.inactiveHalves == 1 {
            // One side is gone: flush what is left to the other and close it too.
            half.partner?.close()
            return
        }
        self.idleTimer?.cancel()
        self.sendTimer?.cancel()
        self.counters.opened(-1)
        self.pool.states[self.backend.index].unregister(self)
        self.pool.load.end(self.backend)
        let lifetime = NIODeadline.now() - self.started
        let peerCode = self.downstream?.tracker.closeCode ?? self.upstream?.tracker.closeCode
        self.metrics.closed(code: self.closeCode ?? peerCode, lifetime: lifetime)
        self.logger.debug(
            "tunnel closed",
            metadata: [
                "portico.backend": "\(self.backend.id)",
                "portico.tunnel_ms": "\(lifetime.nanoseconds / 1_000_000)",
            ]
        )
        self.downstream?.partner = nil
        self.upstream?.partner = nil
        self.downstream = nil
        self.upstream = nil
    }
}
