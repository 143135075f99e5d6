import NIOConcurrencyHelpers
import NIOCore
import PorticoConfig
import Synchronization

/// The run-time state that outlives configuration snapshots: every backend's ``BackendState`` and every
/// pool's ``PoolState``, found again by name on each reload so that health, counters and held requests
/// carry over. Locked only while a snapshot is built, never on the request path.
public final class RuntimeState: Sendable {
    private let backends = NIOLockedValueBox<[String: BackendState]>([:])
    private let pools = NIOLockedValueBox<[String: PoolState]>([:])

    public init() {}

    /// The state of backend `backend` in pool `pool`: the existing one when id and address are unchanged.
    func backendState(pool: String, backend: BackendConfiguration, health: HealthConfiguration?) -> BackendState {
        let key = "\(pool)\u{0}\(backend.id)\u{0}\(backend.address)"
        return self.backends.withLockedValue { states in
            if let existing = states[key] { return existing }
            let state = BackendState(pool: pool, id: backend.id, address: backend.address, health: health)
            states[key] = state
            return state
        }
    }

    /// Forgets backends that configurations dropped and that have drained completely, so discovery churn
    /// (autoscaling, rolling deploys) does not grow this map forever. A backend that comes back later starts
    /// with a fresh state; one that comes back while still draining keeps its old one.
    ///
    /// - Parameter kept: the states the installed snapshot uses.
    /// - Returns: how many were forgotten.
    @discardableResult
    func forgetDeparted(keeping kept: Set<ObjectIdentifier>) -> Int {
        let gone = self.backends.withLockedValue { states in
            let keys = states.filter { !kept.contains(ObjectIdentifier($0.value)) && $0.value.isGone }.map(\.key)
            return keys.compactMap { states.removeValue(forKey: $0) }
        }
        for state in gone { exportTunnelTraffic(of: state) }  // its last counts, which no scrape will see now
        return gone.count
    }

    /// Backend states known, kept or draining.
    var backendCount: Int { self.backends.withLockedValue { $0.count } }

    /// Every backend state known, kept or draining.
    var backendStates: [BackendState] { self.backends.withLockedValue { Array($0.values) } }

    /// The state of pool `name`, created on first use.
    public func poolState(_ name: String) -> PoolState {
        self.pools.withLockedValue { pools in
            if let existing = pools[name] { return existing }
            let state = PoolState(name: name)
            pools[name] = state
            return state
        }
    }
}

/// A pool's run-time state: paused or not, and the requests held while it has no usable backend.
public final class PoolState: Sendable {
    public let name: String
    private let paused = Atomic<Bool>(false)
    private let queue = NIOLockedValueBox(HoldQueue())

    struct HoldQueue {
        var nextID: UInt64 = 0
        var waiters: [(id: UInt64, release: @Sendable () -> Void)] = []
    }

    init(name: String) {
        self.name = name
    }

    public var isPaused: Bool { self.paused.load(ordering: .relaxed) }

    /// Requests waiting now.
    public var held: Int { self.queue.withLockedValue { $0.waiters.count } }

    func setPaused(_ value: Bool) {
        self.paused.store(value, ordering: .relaxed)
    }

    /// Queues a waiter; `release` runs (from any thread) when the pool can take work again.
    ///
    /// - Returns: the waiter's id, or `nil` when `limit` waiters are already queued.
    func hold(limit: Int, release: @escaping @Sendable () -> Void) -> UInt64? {
        self.queue.withLockedValue { queue in
            guard queue.waiters.count < limit else { return nil }
            queue.nextID += 1
            queue.waiters.append((queue.nextID, release))
            return queue.nextID
        }
    }

    /// Removes a waiter that gave up (timeout, client gone).
    func cancel(_ id: UInt64) {
        self.queue.withLockedValue { queue in queue.waiters.removeAll { $0.id == id } }
    }

    /// Releases every waiter, in arrival order.
    func releaseAll() {
        let waiters = self.queue.withLockedValue { queue in
            defer { queue.waiters = [] }
            return queue.waiters
        }
        for waiter in waiters { waiter.release() }
    }
}
