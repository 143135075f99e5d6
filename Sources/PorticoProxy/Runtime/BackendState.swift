import Logging
import NIOConcurrencyHelpers
import NIOCore
import PorticoBalancing
import PorticoConfig
import Synchronization

/// Everything Portico knows about one backend at run time. It outlives configuration snapshots: a reload
/// that keeps the backend keeps this object, its health, counters and live tunnels.
///
/// Read on the request path through atomics only.
public final class BackendState: Sendable {
    /// What the admin API reports.
    public enum Status: String, Sendable {
        case up, down, draining, ejected
    }

    public let pool: String
    public let id: String
    public let address: HostPort
    /// In-flight requests plus open tunnels; shared with the balancing policies.
    public let active = ActiveCounter()
    public let tunnels = TunnelCounters()
    private let healthy = Atomic<Bool>(true)
    private let draining = Atomic<Bool>(false)
    /// Draining because a reload or discovery removed it (not because an operator asked).
    private let removed = Atomic<Bool>(false)
    /// Uptime nanoseconds until which passive ejection keeps the backend out; 0 when not ejected.
    private let ejectedUntil = Atomic<Int64>(0)
    private let consecutiveFailures = Atomic<Int>(0)
    private let ejections = Atomic<Int>(0)
    private let requests = Atomic<Int>(0)
    private let failures = Atomic<Int>(0)
    /// The active health check's bookkeeping; touched by the prober only.
    let health: NIOLockedValueBox<HealthTracker>
    private let liveTunnels = NIOLockedValueBox<[ObjectIdentifier: TunnelReference]>([:])

    init(pool: String, id: String, address: HostPort, health: HealthConfiguration?) {
        self.pool = pool
        self.id = id
        self.address = address
        self.health = NIOLockedValueBox(HealthTracker(rise: health?.rise ?? 1, fall: health?.fall ?? 1))
    }

    /// Takes new work: healthy, not draining, not ejected.
    public var isUsable: Bool {
        guard self.healthy.load(ordering: .relaxed), !self.draining.load(ordering: .relaxed) else { return false }
        let until = self.ejectedUntil.load(ordering: .relaxed)
        return until == 0 || until <= NIODeadline.now().uptimeNanoseconds.asInt64
    }

    public var status: Status {
        if self.draining.load(ordering: .relaxed) { return .draining }
        if !self.healthy.load(ordering: .relaxed) { return .down }
        let until = self.ejectedUntil.load(ordering: .relaxed)
        if until != 0 && until > NIODeadline.now().uptimeNanoseconds.asInt64 { return .ejected }
        return .up
    }

    public var isDraining: Bool { self.draining.load(ordering: .relaxed) }
    public var requestsTotal: Int { self.requests.load(ordering: .relaxed) }
    public var failuresTotal: Int { self.failures.load(ordering: .relaxed) }
    public var activeConnections: Int { self.active.current }

    func setHealthy(_ value: Bool) {
        self.healthy.store(value, ordering: .relaxed)
    }

    func setDraining(_ value: Bool) {
        self.draining.store(value, ordering: .relaxed)
        if !value { self.removed.store(false, ordering: .relaxed) }
    }

    /// Marks the backend as removed by a reload or discovery: it drains.
    func markRemoved() {
        self.removed.store(true, ordering: .relaxed)
        self.draining.store(true, ordering: .relaxed)
    }

    /// Removed by a reload or discovery and nothing of it is left: no request in flight, no open tunnel.
    var isGone: Bool {
        self.removed.load(ordering: .relaxed) && self.active.current == 0 && self.liveTunnelCount == 0
    }

    /// A reload brought a removed backend back: it takes work again.
    func restoreIfRemoved() {
        if self.removed.load(ordering: .relaxed) { self.setDraining(false) }
    }

    func countRequest() {
        self.requests.add(1, ordering: .relaxed)
    }

    /// A request or connection to this backend succeeded: passive ejection starts over.
    func recordSuccess() {
        if self.consecutiveFailures.load(ordering: .relaxed) != 0 {
            self.consecutiveFailures.store(0, ordering: .relaxed)
            self.ejections.store(0, ordering: .relaxed)
        }
    }

    /// A connect failure, reset or 5xx. Returns the ejection time when this failure ejects the backend:
    /// `eject`, doubling with every ejection in a row (at most 32×).
    func recordFailure(passive: PassiveHealthConfiguration?) -> Duration? {
        self.failures.add(1, ordering: .relaxed)
        guard let passive else { return nil }
        let count = self.consecutiveFailures.wrappingAdd(1, ordering: .relaxed).newValue
        guard count >= passive.failures else { return nil }
        self.consecutiveFailures.store(0, ordering: .relaxed)
        let ejections = self.ejections.wrappingAdd(1, ordering: .relaxed).newValue
        let duration = passive.eject * (1 << min(ejections - 1, 5))
        let until = NIODeadline.now() + .milliseconds(duration.milliseconds)
        self.ejectedUntil.store(until.uptimeNanoseconds.asInt64, ordering: .relaxed)
        return duration
    }

    // MARK: Live tunnels, for drain and shutdown

    func register(_ session: TunnelSession, on eventLoop: any EventLoop) {
        let reference = TunnelReference(session: session, eventLoop: eventLoop)
        self.liveTunnels.withLockedValue { $0[ObjectIdentifier(session)] = reference }
    }

    func unregister(_ session: TunnelSession) {
        _ = self.liveTunnels.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(session)) }
    }

    /// Sends Close `code` to every live tunnel, spread at random over `spread` (so reconnects do not arrive
    /// as one storm), and cuts whatever is still open at `cutAfter`.
    func closeTunnels(code: UInt16, reason: String, spread: Duration, cutAfter: Duration?) {
        let tunnels = self.liveTunnels.withLockedValue { Array($0.values) }
        let spreadMillis = max(0, spread.milliseconds)
        for tunnel in tunnels {
            let delay = spreadMillis > 0 ? Int64.random(in: 0...spreadMillis) : 0
            tunnel.eventLoop.scheduleTask(in: .milliseconds(delay)) {
                tunnel.close(code: code, reason: reason)
            }
            if let cutAfter {
                tunnel.eventLoop.scheduleTask(in: .milliseconds(cutAfter.milliseconds)) { tunnel.cut() }
            }
        }
    }

    public var liveTunnelCount: Int { self.liveTunnels.withLockedValue { $0.count } }
}

/// A live tunnel as seen from another event loop: only ever touched on its own loop.
struct TunnelReference: Sendable {
    // The session is loop-bound; every use below hops onto its loop first.
    private let session: NIOLoopBound<TunnelSession>
    let eventLoop: any EventLoop

    init(session: TunnelSession, eventLoop: any EventLoop) {
        self.session = NIOLoopBound(session, eventLoop: eventLoop)
        self.eventLoop = eventLoop
    }

    func close(code: UInt16, reason: String) {
        self.eventLoop.execute { self.session.value.close(code: code, reason: reason) }
    }

    func cut() {
        self.eventLoop.execute { self.session.value.closeBoth() }
    }
}

extension UInt64 {
    fileprivate var asInt64: Int64 { Int64(clamping: self) }
}
