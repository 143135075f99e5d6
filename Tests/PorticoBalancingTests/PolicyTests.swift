import PorticoBalancing
import Testing

func makeBackends(_ weights: [Int]) -> [Backend] {
    weights.enumerated().map { index, weight in
        Backend(id: "b\(index)", host: "127.0.0.1", port: 9000 + index, weight: weight, index: index)
    }
}

@Suite struct RoundRobinTests {
    @Test func smoothWeightedOrderMatchesNginx() {
        let backends = makeBackends([5, 1, 1])
        let selector = RoundRobin().makeSelector(for: backends, load: BackendLoad(count: 3))
        let order = (0..<7).map { _ in selector.select()!.id }
        #expect(order == ["b0", "b0", "b1", "b0", "b2", "b0", "b0"])
    }

    @Test func weightsHoldOverManyRequests() {
        let backends = makeBackends([3, 1, 2])
        let selector = RoundRobin().makeSelector(for: backends, load: BackendLoad(count: 3))
        var counts = [String: Int]()
        for _ in 0..<6000 { counts[selector.select()!.id, default: 0] += 1 }
        #expect(counts == ["b0": 3000, "b1": 1000, "b2": 2000])
    }

    @Test func skipsUnusableBackends() {
        let backends = makeBackends([1, 1, 1])
        let selector = RoundRobin().makeSelector(for: backends, load: BackendLoad(count: 3))
        var counts = [String: Int]()
        for _ in 0..<100 { counts[selector.select(key: nil) { $0.id != "b1" }!.id, default: 0] += 1 }
        #expect(counts["b1"] == nil)
        #expect(counts["b0"]! + counts["b2"]! == 100)
        #expect(abs(counts["b0"]! - counts["b2"]!) <= 34)
        #expect(selector.select(key: nil) { _ in false } == nil)
    }
}

@Suite struct LeastConnectionsTests {
    @Test func picksTheLeastLoadedPerWeight() {
        let backends = makeBackends([1, 2, 1])
        let load = BackendLoad(count: 3)
        let selector = LeastConnections().makeSelector(for: backends, load: load)
        load.begin(backends[0])
        load.begin(backends[0])
        load.begin(backends[1])
        load.begin(backends[1])
        load.begin(backends[2])
        // loads per weight: b0 = 2, b1 = 1, b2 = 1 → b1 or b2, never b0
        for _ in 0..<20 { #expect(selector.select()!.id != "b0") }
        load.begin(backends[2])  // b2 = 2 now, b1 = 1
        for _ in 0..<20 { #expect(selector.select()!.id == "b1") }
    }

    @Test func spreadsEvenlyWhenEveryRequestStaysOpen() {
        let backends = makeBackends([1, 1, 1, 1])
        let load = BackendLoad(count: 4)
        let selector = LeastConnections().makeSelector(for: backends, load: load)
        for _ in 0..<40 { load.begin(selector.select()!) }
        #expect(backends.allSatisfy { load.active($0) == 10 })
    }
}

@Suite struct RandomTwoTests {
    @Test func spreadsByWeightOnAnIdlePool() {
        let backends = makeBackends([1, 1, 2])
        let selector = RandomTwo(seed: 42).makeSelector(for: backends, load: BackendLoad(count: 3))
        var counts = [String: Int]()
        for _ in 0..<40_000 { counts[selector.select()!.id, default: 0] += 1 }
        #expect(counts["b2"]! > counts["b0"]! && counts["b2"]! > counts["b1"]!)
        #expect(abs(counts["b0"]! - counts["b1"]!) < 2000)
    }

    @Test func avoidsTheLoadedBackend() {
        let backends = makeBackends([1, 1, 1])
        let load = BackendLoad(count: 3)
        for _ in 0..<100 { load.begin(backends[0]) }
        let selector = RandomTwo(seed: 7).makeSelector(for: backends, load: load)
        var counts = [String: Int]()
        for _ in 0..<3000 { counts[selector.select()!.id, default: 0] += 1 }
        // b0 is only chosen when both draws... never: each pair with b0 has a less loaded partner.
        #expect(counts["b0"] == nil)
    }

    @Test func keepsLoadBalancedUnderOpenConnections() {
        let backends = makeBackends([1, 1, 1, 1, 1])
        let load = BackendLoad(count: 5)
        let selector = RandomTwo(seed: 1).makeSelector(for: backends, load: load)
        for _ in 0..<1000 { load.begin(selector.select()!) }
        let actives = backends.map { load.active($0) }
        #expect(actives.max()! - actives.min()! <= 3)
    }
}

@Suite struct ConsistentHashTests {
    @Test func stableHashIsPinned() {
        // Golden values (computed independently, FNV-1a 64 then SplitMix64's finaliser): changing them moves
        // every key of every running cluster, so they must never change by accident.
        #expect(StableHash.hash("") == mix64(0xcbf2_9ce4_8422_2325))
        #expect(StableHash.hash("lobby") == 0x9180_b3b4_fa31_e5d0)
        #expect(StableHash.hash("chat-1#0") == 0x1bdd_01cd_c514_e476)
        #expect(StableHash.hash("lobby") == StableHash.hash(Array("lobby".utf8)))
    }

    @Test func sameRingInEveryInstance() {
        let backends = makeBackends([1, 1, 1, 1])
        let a = ConsistentHash().makeSelector(for: backends, load: BackendLoad(count: 4))
        let b = ConsistentHash().makeSelector(
            for: backends.reversed().enumerated().map { _, backend in backend },
            load: BackendLoad(count: 4)
        )
        for key in 0..<1000 {
            let hashed = StableHash.hash("user-\(key)")
            #expect(a.select(key: hashed) { _ in true }?.id == b.select(key: hashed) { _ in true }?.id)
        }
    }

    @Test func onlyTheLeavingBackendsKeysMove() {
        let backends = makeBackends(Array(repeating: 1, count: 10))
        let selector = ConsistentHash().makeSelector(for: backends, load: BackendLoad(count: 10))
        let keys = (0..<100_000).map { StableHash.hash("key-\($0)") }
        let before = keys.map { selector.select(key: $0) { _ in true }!.id }
        for leaving in backends.map(\.id) {
            let during = keys.map { key in selector.select(key: key) { $0.id != leaving }!.id }
            var moved = 0
            var movedOthers = 0
            for index in keys.indices where before[index] != during[index] {
                moved += 1
                if before[index] != leaving { movedOthers += 1 }
            }
            #expect(movedOthers == 0, "keys of backends other than \(leaving) moved")
            #expect(Double(moved) <= 0.11 * Double(keys.count), "\(leaving) left and \(moved) keys moved")
            #expect(moved == before.filter { $0 == leaving }.count)
        }
        let after = keys.map { selector.select(key: $0) { _ in true }!.id }
        #expect(after == before)  // and they come back
    }

    @Test func weightsShareTheRing() {
        let backends = makeBackends([1, 3])
        let selector = ConsistentHash().makeSelector(for: backends, load: BackendLoad(count: 2))
        var counts = [String: Int]()
        for key in 0..<40_000 {
            counts[selector.select(key: StableHash.hash("k\(key)")) { _ in true }!.id, default: 0] += 1
        }
        let share = Double(counts["b1"]!) / 40_000
        #expect(share > 0.70 && share < 0.80)
    }

    @Test func boundedLoadCapsEveryBackend() {
        let backends = makeBackends(Array(repeating: 1, count: 5))
        let load = BackendLoad(count: 5)
        let selector = ConsistentHash(boundedLoad: 1.25).makeSelector(for: backends, load: load)
        // Every connection carries the same key: pure hashing would put all 100 on one backend.
        for _ in 0..<100 { load.begin(selector.select(key: StableHash.hash("hot-room")) { _ in true }!) }
        for backend in backends { #expect(load.active(backend) <= 25) }  // ceil(1.25 × 100 / 5)
    }
}
