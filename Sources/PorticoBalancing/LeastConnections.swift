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
        // Indexes, not Backend copies: each copy would retain and release the backend's strings.
        var index = Int(self.ticket.next() % UInt64(count))
        var best = -1
        var bestActive = 0
        var bestWeight = 1
        for _ in 0..<count {
            if isUsable(self.backends[index]) {
                let active = self.load.active(at: index)
                let weight = self.backends[index].weight
                // active/weight < bestActive/bestWeight, without division.
                if best < 0 || active * bestWeight < bestActive * weight {
                    best = index
                    bestActive = active
                    bestWeight = weight
                }
            }
            index += 1
            if index == count { index = 0 }
        }
        return best < 0 ? nil : self.backends[best]
    }
}
