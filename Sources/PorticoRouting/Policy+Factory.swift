import PorticoBalancing
import PorticoConfig

extension PoolConfiguration {
    /// The balancing policy this pool's configuration names. The one place where config becomes policy.
    public func makePolicy() -> any BalancingPolicy {
        switch self.policy {
        case .roundRobin: return RoundRobin()
        case .leastConnections: return LeastConnections()
        case .randomTwo: return RandomTwo()
        case .consistentHash: return ConsistentHash(boundedLoad: self.boundedLoad)
        case .cookie: return RoundRobin()  // the first choice; from then on the sticky cookie pins
        }
    }
}
