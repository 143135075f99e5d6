import NIOConcurrencyHelpers
import Synchronization

/// Holds the current ``ProxySnapshot``; a reload installs a new one whole.
///
/// A connection compares ``generation`` (an atomic) at each request head and takes the lock only when a
/// reload has installed a new snapshot since, so the request path stays lock-free.
public final class ConfigStore: Sendable {
    private let current: NIOLockedValueBox<ProxySnapshot>
    private let currentGeneration: Synchronization.Atomic<Int>

    public init(_ snapshot: ProxySnapshot) {
        self.current = NIOLockedValueBox(snapshot)
        self.currentGeneration = Synchronization.Atomic(snapshot.generation)
    }

    /// The generation of the installed snapshot.
    public var generation: Int { self.currentGeneration.load(ordering: .acquiring) }

    /// The snapshot new connections start with.
    public var snapshot: ProxySnapshot {
        self.current.withLockedValue { $0 }
    }

    /// Makes `next` the snapshot for connections accepted from now on.
    public func install(_ next: ProxySnapshot) {
        self.current.withLockedValue { $0 = next }
        self.currentGeneration.store(next.generation, ordering: .releasing)
    }
}
