/// Consistent hashing on a ring, optionally with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018).
///
/// Each backend owns `pointsPerWeight × weight` points placed by ``StableHash`` of its id, so every process
/// builds the same ring. When a backend leaves, only the keys it owned move; when it returns, they come back.
/// With `boundedLoad: c`, a backend already holding more than c × the average load is passed over and the key
/// goes on clockwise to the next backend, deterministically.
public struct ConsistentHash: BalancingPolicy {
    public let pointsPerWeight: Int
    public let boundedLoad: Double?

    /// - Parameters:
    ///   - pointsPerWeight: ring points per unit of weight (weights reduced by their gcd first). 500 keeps every
    ///     backend's share within about 1/15 of its fair share; the ring is capped at 200,000 points.
    ///   - boundedLoad: the factor c > 1, or `nil` for pure consistent hashing.
    public init(pointsPerWeight: Int = 500, boundedLoad: Double? = nil) {
        self.pointsPerWeight = max(1, pointsPerWeight)
        self.boundedLoad = boundedLoad
    }

    public func makeSelector(for backends: [Backend], load: BackendLoad) -> any BackendSelector {
        let divisor = max(1, backends.reduce(0) { gcd($0, $1.weight) })
        let totalWeight = backends.reduce(0) { $0 + $1.weight / divisor }
        let perWeight = max(1, min(self.pointsPerWeight, 200_000 / max(totalWeight, 1)))
        var points: [(hash: UInt64, backend: Int)] = []
        points.reserveCapacity(totalWeight * perWeight)
        for (index, backend) in backends.enumerated() {
            for replica in 0..<(backend.weight / divisor * perWeight) {
                points.append((StableHash.hash("\(backend.id)#\(replica)"), index))
            }
        }
        // Ties (vanishingly rare) are broken by id so that the ring never depends on list order.
        points.sort { $0.hash != $1.hash ? $0.hash < $1.hash : backends[$0.backend].id < backends[$1.backend].id }
        return ConsistentHashSelector(
            backends: backends,
            ring: points.map(\.hash),
            owners: points.map { Int32($0.backend) },
            load: load,
            boundedLoad: self.boundedLoad
        )
    }
}

struct ConsistentHashSelector: BackendSelector {
    let backends: [Backend]
    let ring: [UInt64]
    let owners: [Int32]
    let load: BackendLoad
    let boundedLoad: Double?
    let fallback = Ticket()

    /// Hash of every ring point and its owner's id, in ring order: 12 hex digits.
    var fingerprint: String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(self.ring.count * 12)
        for (point, owner) in zip(self.ring, self.owners) {
            withUnsafeBytes(of: point.littleEndian) { bytes += $0 }
            bytes += self.backends[Int(owner)].id.utf8
        }
        if let bound = self.boundedLoad { bytes += "\(bound)".utf8 }
        let text = String(StableHash.hash(bytes), radix: 16)
        return String((String(repeating: "0", count: 16 - text.count) + text).prefix(12))
    }

    func select(key: UInt64?, where isUsable: (Backend) -> Bool) -> Backend? {
        guard !self.ring.isEmpty else { return nil }
        // No key (the request carries none of the hash_key sources): spread by rotation instead.
        let point = key ?? mix64(self.fallback.next())
        var low = 0
        var high = self.ring.count
        while low < high {
            let middle = (low + high) / 2
            if self.ring[middle] < point { low = middle + 1 } else { high = middle }
        }
        let capacity = self.capacity(isUsable: isUsable)
        // The common case, the key's owner can take it, allocates nothing.
        let owner = self.backends[Int(self.owners[low % self.ring.count])]
        if isUsable(owner), capacity.map({ Double(self.load.active(owner)) < $0 * Double(owner.weight) }) ?? true {
            return owner
        }
        var firstUsable: Backend?
        var seen = Set<Int32>()
        for step in 0..<self.ring.count {
            let owner = self.owners[(low + step) % self.ring.count]
            guard seen.insert(owner).inserted else { continue }
            let backend = self.backends[Int(owner)]
            if isUsable(backend) {
                guard let capacity else { return backend }
                if Double(self.load.active(backend)) < capacity * Double(backend.weight) { return backend }
                if firstUsable == nil { firstUsable = backend }
            }
            if seen.count == self.backends.count { break }
        }
        return firstUsable
    }

    /// Per unit of weight: c × (live work + this request) / total usable weight.
    private func capacity(isUsable: (Backend) -> Bool) -> Double? {
        guard let factor = self.boundedLoad else { return nil }
        var weight = 0
        var active = 0
        for index in self.backends.indices where isUsable(self.backends[index]) {
            weight += self.backends[index].weight
            active += self.load.active(at: index)
        }
        guard weight > 0 else { return nil }
        return factor * Double(active + 1) / Double(weight)
    }
}
