/// How a pool chooses a backend. Pure: no sockets, no health, no clocks.
///
/// The proxy calls ``makeSelector(for:load:)`` when the pool's backend list changes (load or reload), never per request.
public protocol BalancingPolicy: Sendable {
    /// Builds the per-request selector for this backend list.
    ///
    /// - Parameters:
    ///   - backends: the pool's backends, `index` matching their position.
    ///   - load: live work per backend, for load-aware policies.
    func makeSelector(for backends: [Backend], load: BackendLoad) -> any BackendSelector
}

/// Picks a backend for one request: cheap and lock-free, safe to call from every event loop at once.
public protocol BackendSelector: Sendable {
    /// The first backend in this policy's order for `key` that `isUsable` accepts.
    ///
    /// - Parameters:
    ///   - key: the request's hash key for sticky policies; others ignore it.
    ///   - isUsable: the proxy's view of health, drain and already-tried backends; kept outside the policy.
    /// - Returns: `nil` when no backend is usable.
    func select(key: UInt64?, where isUsable: (Backend) -> Bool) -> Backend?

    /// A short hash of the selector's key-placement state, for policies that pin keys: replicas with equal
    /// fingerprints send every key to the same backend. `nil` for policies that do not hash.
    var fingerprint: String? { get }
}

extension BackendSelector {
    public var fingerprint: String? { nil }

    /// Selection without a key and with every backend usable.
    public func select() -> Backend? {
        self.select(key: nil) { _ in true }
    }
}

/// SplitMix64's finaliser: spreads sequential or similar inputs over all 64 bits.
@inlinable
public func mix64(_ value: UInt64) -> UInt64 {
    var z = value &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
