/// Power of two choices: draw two backends at random and take the less loaded (per unit of weight).
///
/// Nearly as even as least connections, without scanning the pool, and without the herd effect when many
/// proxies share one stale view of load.
public struct RandomTwo: BalancingPolicy {
    private let seed: UInt64

    /// - Parameters:
    ///   - seed: starts the random sequence; tests pass a fixed one.
    public init(seed: UInt64 = UInt64.random(in: 0...UInt64.max)) {
        self.seed = seed
    }

    public func makeSelector(for backends: [Backend], load: BackendLoad) -> any BackendSelector {
        RandomTwoSelector(backends: backends, load: load, ticket: Ticket(start: self.seed))
    }
}

struct RandomTwoSelector: BackendSelector {
    let backends: [Backend]
    let load: BackendLoad
    let ticket: Ticket

    func select(key: UInt64?, where isUsable: (Backend) -> Bool) -> Backend? {
        let count = self.backends.count
        guard count > 1 else { return self.backends.first.flatMap { isUsable($0) ? $0 : nil } }
        // Random numbers from a shared atomic sequence through SplitMix64: lock-free and well spread.
        let random = mix64(self.ticket.next())
        let first = Int(random % UInt64(count))
        let second = (first + 1 + Int((random >> 32) % UInt64(count - 1))) % count
        let a = self.backends[first]
        let b = self.backends[second]
        switch (isUsable(a), isUsable(b)) {
        case (true, true):
            let loadA = self.load.active(a) * b.weight
            let loadB = self.load.active(b) * a.weight
            if loadA != loadB { return loadA < loadB ? a : b }
            // Equal load: choose by weight share, so weights hold on an idle pool too.
            return Int((random >> 16) % UInt64(a.weight + b.weight)) < a.weight ? a : b
        case (true, false): return a
        case (false, true): return b
        case (false, false):
            let start = Int((random >> 8) % UInt64(count))
            for step in 0..<count where isUsable(self.backends[(start + step) % count]) {
                return self.backends[(start + step) % count]
            }
            return nil
        }
    }
}
