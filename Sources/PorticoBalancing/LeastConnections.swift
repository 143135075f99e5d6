/// Weighted least connections: the usable backend with the fewest live requests and tunnels per unit of weight.
///
/// Ties rotate, so an idle pool still spreads new work evenly.
public struct LeastConnections: BalancingPolicy {
    public init() {}

    public func makeSelector(for backends: [Backend], load: BackendLoad) -> any BackendSelector {
        LeastConnectionsSelector(backends: backends, load: load)
    }
}

struct LeastConnectionsSelector: BackendSelector {
    let backends: [Backend]
    let load: BackendLoad
    let ticket = Ticket()

    func select(key: UInt64?, where isUsable: (Backend) -> Bool) -> Backend? {
        let count = self.backends.count
        guard count > 0 else { return nil }
        let start = Int(self.ticket.next() % UInt64(count))
        var best: Backend?
        var bestActive = 0
        for step in 0..<count {
            let backend = self.backends[(start + step) % count]
            guard isUsable(backend) else { continue }
            let active = self.load.active(backend)
            // active/weight < bestActive/bestWeight, without division.
            if let current = best, active * current.weight >= bestActive * backend.weight { continue }
            best = backend
            bestActive = active
        }
        return best
    }
}
