/// Smooth weighted round robin (nginx's algorithm): weights 5,1,1 give a a b a c a a, not a a a a a b c.
///
/// The schedule for one full cycle is computed when the selector is built; a request then takes the next slot
/// with one atomic increment, so no lock is taken per request.
public struct RoundRobin: BalancingPolicy {
    public init() {}

    public func makeSelector(for backends: [Backend], load: BackendLoad) -> any BackendSelector {
        RoundRobinSelector(backends: backends)
    }

    /// One cycle of the smooth weighted round robin schedule, as backend indexes.
    static func schedule(weights: [Int]) -> [Int] {
        guard !weights.isEmpty else { return [] }
        let divisor = weights.reduce(0) { gcd($0, $1) }
        let reduced = weights.map { $0 / max(divisor, 1) }
        let total = reduced.reduce(0, +)
        var current = Array(repeating: 0, count: reduced.count)
        var schedule: [Int] = []
        schedule.reserveCapacity(total)
        for _ in 0..<total {
            var best = 0
            for index in reduced.indices {
                current[index] += reduced[index]
                if current[index] > current[best] { best = index }
            }
            current[best] -= total
            schedule.append(best)
        }
        return schedule
    }
}

struct RoundRobinSelector: BackendSelector {
    let backends: [Backend]
    let schedule: [Int]
    let ticket = Ticket()

    init(backends: [Backend]) {
        self.backends = backends
        self.schedule = RoundRobin.schedule(weights: backends.map(\.weight))
    }

    func select(key: UInt64?, where isUsable: (Backend) -> Bool) -> Backend? {
        guard !self.schedule.isEmpty else { return nil }
        let start = Int(self.ticket.next() % UInt64(self.schedule.count))
        // Walk on from the scheduled slot: unusable backends' turns go to the others in schedule order.
        let steps = min(self.schedule.count, self.backends.count * 4)
        for step in 0..<steps {
            let backend = self.backends[self.schedule[(start + step) % self.schedule.count]]
            if isUsable(backend) { return backend }
        }
        return self.backends.first(where: isUsable)
    }
}

func gcd(_ a: Int, _ b: Int) -> Int {
    var (a, b) = (a, b)
    while b != 0 { (a, b) = (b, a % b) }
    return a
}
