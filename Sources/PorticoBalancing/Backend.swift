import Synchronization

/// One upstream `host:port` of a pool, as the balancing policies see it.
public struct Backend: Sendable, Hashable, CustomStringConvertible {
    /// Stable identity (config `id`, default the address); hashing policies hash this, so it pins keys.
    public let id: String
    public let host: String
    public let port: Int
    /// Relative share of new work, at least 1.
    public let weight: Int
    /// Position in the pool's backend list; indexes ``BackendLoad``.
    public let index: Int
    /// `host:port` (`[host]:port` for an IPv6 literal), as a `Host` header names it; built once.
    public let address: String

    public init(id: String, host: String, port: Int, weight: Int = 1, index: Int) {
        self.id = id
        self.host = host
        self.port = port
        self.weight = max(1, weight)
        self.index = index
        self.address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public var description: String { self.id }
}

/// Live work per backend: in-flight requests plus open tunnels. The proxy writes it, load-aware policies read it.
///
/// One counter per backend, each an atomic, so readers and writers on different event loops never lock.
public final class BackendLoad: Sendable {
    private let counters: [ActiveCounter]

    /// - Parameters:
    ///   - count: number of backends in the pool.
    public init(count: Int) {
        self.counters = (0..<count).map { _ in ActiveCounter() }
    }

    /// Load over counters that outlive this pool's selector (a reload keeps a backend's counter).
    ///
    /// - Parameters:
    ///   - counters: one per backend, in backend index order.
    public init(counters: [ActiveCounter]) {
        self.counters = counters
    }

    /// Work currently assigned to `backend`.
    public func active(_ backend: Backend) -> Int {
        self.counters[backend.index].value.load(ordering: .relaxed)
    }

    /// Work currently assigned to the backend at `index`.
    @inline(__always)
    func active(at index: Int) -> Int {
        self.counters[index].value.load(ordering: .relaxed)
    }

    /// Records that `backend` took one more request or tunnel.
    public func begin(_ backend: Backend) {
        self.counters[backend.index].value.add(1, ordering: .relaxed)
    }

    /// Records that one request or tunnel on `backend` finished.
    public func end(_ backend: Backend) {
        self.counters[backend.index].value.subtract(1, ordering: .relaxed)
    }

    /// Sum over every backend.
    public var total: Int {
        self.counters.reduce(0) { $0 + $1.value.load(ordering: .relaxed) }
    }
}

/// One backend's live work: an atomic the proxy increments and decrements and policies read.
public final class ActiveCounter: Sendable {
    let value = Atomic<Int>(0)

    public init() {}

    /// The current count.
    public var current: Int { self.value.load(ordering: .relaxed) }
}

/// A lock-free sequence number shared by all event loops; policies use it to rotate and to draw random numbers.
final class Ticket: Sendable {
    private let value = Atomic<UInt64>(0)

    init(start: UInt64 = 0) {
        self.value.store(start, ordering: .relaxed)
    }

    func next() -> UInt64 {
        self.value.wrappingAdd(1, ordering: .relaxed).oldValue
    }
}
