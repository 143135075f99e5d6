import NIOConcurrencyHelpers

/// Holds the current ``ProxySnapshot``; a reload installs a new one whole.
///
/// Read once per accepted connection (not per request), so the lock is off the request path.
public final class ConfigStore: Sendable {
    private let current: NIOLockedValueBox<ProxySnapshot>

    public init(_ snapshot: ProxySnapshot) {
        self.current = NIOLockedValueBox(snapshot)
    }

    /// The snapshot new connections start with.
    public var snapshot: ProxySnapshot {
        self.current.withLockedValue { $0 }
    }

    /// Makes `next` the snapshot for connections accepted from now on.
    public func install(_ next: ProxySnapshot) {
        self.current.withLockedValue { $0 = next }
    }
}
