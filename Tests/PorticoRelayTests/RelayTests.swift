import NIOConcurrencyHelpers
import NIOCore
import PorticoRESP
import PorticoRelay
import PorticoTestSupport
import Testing

/// Collects what members receive.
final class Inboxes: Sendable {
    private let box = NIOLockedValueBox<[String: [String]]>([:])

    func deliver(to member: String) -> Relay.Delivery {
        { payload in self.box.withLockedValue { $0[member, default: []].append(String(buffer: payload)) } }
    }

    func messages(_ member: String) -> [String] { self.box.withLockedValue { $0[member] ?? [] } }
}

/// Two relays, "a" and "b", each over a RedisBroker of its own, running until ``stop()``.
struct RelayPair {
    let a: RedisBroker
    let b: RedisBroker
    let relayA: Relay
    let relayB: Relay
    private let tasks: [Task<Void, Never>]

    init(a: RedisBroker.Configuration, b: RedisBroker.Configuration) {
        let brokerA = RedisBroker(configuration: a)
        let brokerB = RedisBroker(configuration: b)
        let relayA = Relay(node: a.node, broker: brokerA)
        let relayB = Relay(node: b.node, broker: brokerB)
        (self.a, self.b, self.relayA, self.relayB) = (brokerA, brokerB, relayA, relayB)
        self.tasks = [Task { try? await brokerA.run() }, Task { try? await brokerB.run() }]
    }

    /// Both brokers are connected and hear their own probes.
    func bothHealthy() async -> Bool {
        let first = await self.a.isHealthy
        let second = await self.b.isHealthy
        return first && second
    }

    func stop() {
        for task in self.tasks { task.cancel() }
    }
}

/// The same behaviour from every Broker: the relay on top must not care which one it has.
@Suite(.serialized) struct BrokerConformanceTests {
    enum Kind: String, CaseIterable { case inProcess, redis }

    @Test(arguments: Kind.allCases)
    func everyMemberGetsEveryMessageOnceInOrder(kind: Kind) async throws {
        let redis = kind == .redis ? try await RedisServer.start() : nil
        defer { redis?.stop() }
        let hub = InProcessHub()
        var brokers: [any Broker] = []
        var tasks: [Task<Void, Never>] = []
        for index in 1...3 {
            if let redis {
                let broker = RedisBroker(configuration: .init(url: redis.url, node: "node-\(index)"))
                brokers.append(broker)
                tasks.append(Task { try? await broker.run() })
            } else {
                brokers.append(hub.broker(node: "node-\(index)"))
            }
        }
        let relays = (0..<3).map { Relay(node: "node-\($0 + 1)", broker: brokers[$0]) }
        if kind == .redis {
            for broker in brokers { #expect(await eventually { await (broker as! RedisBroker).isHealthy }) }
        }
        let inboxes = Inboxes()
        // Two members per node in "lobby", one per node in "other".
        for (index, relay) in relays.enumerated() {
            for member in 0..<2 {
                try await relay.join(
                    Room("lobby"),
                    member: "n\(index)-m\(member)",
                    deliver: inboxes.deliver(to: "n\(index)-m\(member)")
                )
            }
            try await relay.join(Room("other"), member: "n\(index)-o", deliver: inboxes.deliver(to: "n\(index)-o"))
        }
        if let redis {
            let admin = try await RedisConnection.connect(to: redis.url)
            let channels = try await admin.send(["PUBSUB", "CHANNELS", "portico:v1:room:*"])
            guard case .array(let list?) = channels else {
                Issue.record("no channels")
                return
            }
            #expect(
                Set(list.compactMap { if case .bulkString(let b?) = $0 { String(buffer: b) } else { nil } }) == [
                    "portico:v1:room:lobby", "portico:v1:room:other",
                ]
            )
            await admin.close()
        }
        for sequence in 0..<50 {
            for (index, relay) in relays.enumerated() {
                try await relay.broadcast(ByteBuffer(string: "from-\(index)-\(sequence)"), to: Room("lobby"))
            }
        }
        try await relays[0].broadcast(ByteBuffer(string: "not-for-m1"), to: Room("lobby"), except: ["n1-m1"])
        let allMembers = (0..<3).flatMap { node in (0..<2).map { "n\(node)-m\($0)" } }
        #expect(await eventually { allMembers.allSatisfy { inboxes.messages($0).count >= 150 } })
        try await Task.sleep(for: .milliseconds(200))
        for member in allMembers {
            let messages = inboxes.messages(member)
            #expect(messages.count == (member == "n1-m1" ? 150 : 151), "\(member) got \(messages.count)")
            for origin in 0..<3 {
                let fromOrigin = messages.filter { $0.hasPrefix("from-\(origin)-") }
                #expect(fromOrigin == (0..<50).map { "from-\(origin)-\($0)" }, "\(member) order from \(origin)")
            }
        }
        for node in 0..<3 { #expect(inboxes.messages("n\(node)-o").isEmpty) }  // nothing from other rooms
        #expect(await relays[0].memberCount(Room("lobby")) == 6)
        #expect(await relays[1].liveNodes().count == 3)
        for relay in relays { #expect(await relay.lost == 0) }
        // Leaving: the last local member unsubscribes the node.
        try await relays[2].leave(Room("other"), member: "n2-o")
        if let redis {
            let admin = try await RedisConnection.connect(to: redis.url)
            #expect(
                try await admin.send(["PUBSUB", "NUMSUB", "portico:v1:room:other"])
                    == .array([.bulkString(ByteBuffer(string: "portico:v1:room:other")), .integer(2)])
            )
            await admin.close()
        }
        for task in tasks { task.cancel() }
    }
}

@Suite(.serialized) struct RedisRelayFaultTests {
    @Test func aFullOutboxMakesPublishersWaitWhileConnected() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        var small = RedisBroker.Configuration(url: redis.url, node: "a")
        small.publishBufferLimit = 10
        let pair = RelayPair(a: small, b: .init(url: redis.url, node: "b"))
        defer { pair.stop() }
        let (a, relayA, relayB) = (pair.a, pair.relayA, pair.relayB)
        let inboxes = Inboxes()
        try await relayB.join(Room("r"), member: "b1", deliver: inboxes.deliver(to: "b1"))
        #expect(await eventually { await pair.bothHealthy() })
        for index in 0..<2_000 { try await relayA.broadcast(ByteBuffer(string: "\(index)"), to: Room("r")) }
        #expect(await eventually { inboxes.messages("b1").count == 2_000 })
        #expect(a.dropped == 0)  // backpressure, not loss
        #expect(await relayB.lost == 0)
    }

    @Test func redisRestartMidStreamResumesAndFlushesBufferedPublishes() async throws {
        let redis = try await RedisServer.start()
        let port = redis.port
        let pair = RelayPair(a: .init(url: redis.url, node: "a"), b: .init(url: redis.url, node: "b"))
        defer { pair.stop() }
        let (a, relayA, relayB) = (pair.a, pair.relayA, pair.relayB)
        // The connection state is an observable stream.
        let observed = NIOLockedValueBox<[RedisBroker.State]>([])
        let watcher = Task { for await state in a.states { observed.withLockedValue { $0.append(state) } } }
        defer { watcher.cancel() }
        let inboxes = Inboxes()
        try await relayB.join(Room("r"), member: "b1", deliver: inboxes.deliver(to: "b1"))
        try await relayA.join(Room("r"), member: "a1", deliver: inboxes.deliver(to: "a1"))
        #expect(await eventually { await pair.bothHealthy() })
        for index in 0..<10 { try await relayA.broadcast(ByteBuffer(string: "before-\(index)"), to: Room("r")) }
        #expect(await eventually { inboxes.messages("b1").count == 10 })
        redis.stop()
        #expect(await eventually { await a.state != .connected })
        // Published while Redis is away: buffered, then flushed in order once it is back.
        for index in 0..<10 { try await relayA.broadcast(ByteBuffer(string: "during-\(index)"), to: Room("r")) }
        let restarted = try await RedisServer.start(port: port)
        defer { restarted.stop() }
        #expect(await eventually(timeout: .seconds(10)) { inboxes.messages("b1").count == 20 })
        #expect(inboxes.messages("b1") == (0..<10).map { "before-\($0)" } + (0..<10).map { "during-\($0)" })
        #expect(await relayB.lost == 0)
        #expect(await a.reconnects >= 1)
        // connected → disconnected(why) → connecting … → connected.
        let states = observed.withLockedValue { $0 }
        let firstLoss = states.firstIndex { if case .disconnected = $0 { true } else { false } }
        #expect(firstLoss != nil && states.prefix(firstLoss ?? 0).contains(.connected), "\(states)")
        #expect(states.last == .connected, "\(states)")
    }

    @Test func aHungRedisIsDetectedAndTheFlowResumesWhenItWakes() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        var configuration = RedisBroker.Configuration(url: redis.url, node: "a")
        configuration.heartbeat = .milliseconds(200)
        configuration.probeTimeout = .milliseconds(800)
        let configurationA = configuration
        configuration.node = "b"
        let pair = RelayPair(a: configurationA, b: configuration)
        defer { pair.stop() }
        let (a, b, relayA, relayB) = (pair.a, pair.b, pair.relayA, pair.relayB)
        let inboxes = Inboxes()
        try await relayB.join(Room("r"), member: "b1", deliver: inboxes.deliver(to: "b1"))
        #expect(await eventually { await pair.bothHealthy() })
        // SIGSTOP: the sockets stay open but nothing answers. Probes stop: unhealthy, and treated like a lost
        // connection while Redis still hangs (not only once its replies flow again).
        redis.pause()
        #expect(
            await eventually(timeout: .seconds(5)) {
                let (healthyA, healthyB) = (await a.isHealthy, await b.isHealthy)
                let (reconnectsA, reconnectsB) = (await a.reconnects, await b.reconnects)
                return !healthyA && !healthyB && reconnectsA >= 1 && reconnectsB >= 1
            }
        )
        for index in 0..<5 { try await relayA.broadcast(ByteBuffer(string: "while-hung-\(index)"), to: Room("r")) }
        redis.resume()
        #expect(
            await eventually(timeout: .seconds(10)) {
                let first = await a.isHealthy
                let second = await b.isHealthy
                return first && second
            }
        )
        try await relayA.broadcast(ByteBuffer(string: "awake"), to: Room("r"))
        #expect(await eventually(timeout: .seconds(10)) { inboxes.messages("b1").last == "awake" })
        // What was published during the hang arrives in order, or is counted as lost (a may flush before b has
        // resubscribed): never silent.
        let delivered = inboxes.messages("b1").filter { $0.hasPrefix("while-hung-") }
        let order = (0..<5).map { "while-hung-\($0)" }
        #expect(delivered == order.filter { delivered.contains($0) }, "\(delivered)")
        let lost = await relayB.lost
        #expect(delivered.count + lost == 5)
    }

    @Test func aKilledSubscriberIsNoticedAndHealed() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        var configuration = RedisBroker.Configuration(url: redis.url, node: "a")
        configuration.heartbeat = .milliseconds(200)
        configuration.probeTimeout = .milliseconds(800)
        let pair = RelayPair(a: configuration, b: .init(url: redis.url, node: "b"))
        defer { pair.stop() }
        let (a, relayA, relayB) = (pair.a, pair.relayA, pair.relayB)
        let inboxes = Inboxes()
        try await relayA.join(Room("r"), member: "a1", deliver: inboxes.deliver(to: "a1"))
        try await relayB.join(Room("r"), member: "b1", deliver: inboxes.deliver(to: "b1"))
        #expect(await eventually { await pair.bothHealthy() })
        try await relayB.broadcast(ByteBuffer(string: "before-cut"), to: Room("r"))
        #expect(await eventually { inboxes.messages("a1").contains("before-cut") })
        // Redis cuts every pub/sub client, as it does to a subscriber over its output buffer limit.
        let admin = try await RedisConnection.connect(to: redis.url)
        _ = try await admin.send(["CLIENT", "KILL", "TYPE", "pubsub"])
        try await relayB.broadcast(ByteBuffer(string: "while-cut"), to: Room("r"))
        #expect(
            await eventually(timeout: .seconds(5)) {
                let reconnected = await a.reconnects >= 1
                let healthy = await a.isHealthy
                return reconnected && healthy
            }
        )
        try await relayB.broadcast(ByteBuffer(string: "after-heal"), to: Room("r"))
        #expect(await eventually { inboxes.messages("a1").contains("after-heal") })
        // The message sent while a's subscription was dead is either delivered or counted as lost.
        let got = inboxes.messages("a1").contains("while-cut")
        let lost = await relayA.lost
        #expect(got || lost == 1)
        await admin.close()
    }

    @Test func aSubscriberOverItsOutputBufferLimitIsNoticedAndHealedWithTheLossCounted() async throws {
        // A tiny pub/sub output buffer: Redis closes any subscriber that would have to hold more than 64 KiB.
        let redis = try await RedisServer.start(extraArguments: ["--client-output-buffer-limit", "pubsub 64kb 0 0"])
        defer { redis.stop() }
        var configuration = RedisBroker.Configuration(url: redis.url, node: "b")
        configuration.heartbeat = .milliseconds(200)
        configuration.probeTimeout = .milliseconds(800)
        let pair = RelayPair(a: .init(url: redis.url, node: "a"), b: configuration)
        defer { pair.stop() }
        let (b, relayA, relayB) = (pair.b, pair.relayA, pair.relayB)
        let inboxes = Inboxes()
        try await relayB.join(Room("r"), member: "b1", deliver: inboxes.deliver(to: "b1"))
        #expect(await eventually { await pair.bothHealthy() })
        try await relayA.broadcast(ByteBuffer(string: "small"), to: Room("r"))
        #expect(await eventually { inboxes.messages("b1") == ["small"] })
        // One message of 1 MiB cannot fit: Redis cuts b's subscriber connection instead of delivering it.
        try await relayA.broadcast(ByteBuffer(repeating: UInt8(ascii: "x"), count: 1 << 20), to: Room("r"))
        #expect(
            await eventually(timeout: .seconds(5)) {
                let reconnected = await b.reconnects >= 1
                let healthy = await b.isHealthy
                return reconnected && healthy
            }
        )
        try await relayA.broadcast(ByteBuffer(string: "after-heal"), to: Room("r"))
        #expect(await eventually { inboxes.messages("b1").last == "after-heal" })
        #expect(inboxes.messages("b1") == ["small", "after-heal"])
        #expect(await relayB.lost == 1)  // the big message: detected by the sequence gap, not silent
    }

    @Test func presenceFollowsLeavesAndExpiresWithTheHeartbeat() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let leaving = RedisBroker(configuration: .init(url: redis.url, node: "leaves"))
        let staying = RedisBroker(configuration: .init(url: redis.url, node: "stays"))
        let leavingTask = Task { try? await leaving.run() }
        let stayingTask = Task { try? await staying.run() }
        let relayLeaving = Relay(node: "leaves", broker: leaving)
        let relayStaying = Relay(node: "stays", broker: staying)
        #expect(
            await eventually {
                let first = await leaving.isHealthy
                let second = await staying.isHealthy
                return first && second
            }
        )
        for member in 0..<3 { try await relayLeaving.join(Room("lobby"), member: "l\(member)") { _ in } }
        try await relayStaying.join(Room("lobby"), member: "s0") { _ in }
        #expect(await eventually { await relayStaying.memberCount(Room("lobby")) == 4 })
        // An orderly shutdown removes the node's presence at once.
        leavingTask.cancel()
        #expect(await eventually(timeout: .seconds(2)) { await relayStaying.memberCount(Room("lobby")) == 1 })
        // A node that dies leaves its presence entry behind, but its heartbeat key expires: it stops counting.
        let ghost = try await RedisConnection.connect(to: redis.url)
        _ = try await ghost.send(["HSET", "portico:v1:presence:lobby", "ghost", "5"])
        _ = try await ghost.send(["SET", "portico:v1:alive:ghost", "1", "PX", "700"])
        #expect(await relayStaying.memberCount(Room("lobby")) == 6)
        #expect(await eventually(timeout: .seconds(2)) { await relayStaying.memberCount(Room("lobby")) == 1 })
        await ghost.close()
        stayingTask.cancel()
    }
}

@Suite struct SlowMemberTests {
    @Test func aSlowMemberDoesNotStallTheOthers() async throws {
        let hub = InProcessHub()
        let sender = Relay(node: "a", broker: hub.broker(node: "a"))
        let broker = hub.broker(node: "b")
        let receiver = Relay(node: "b", broker: broker)
        let inboxes = Inboxes()
        let slowSeen = Inboxes()
        try await receiver.join(Room("r"), member: "fast", deliver: inboxes.deliver(to: "fast"))
        try await receiver.join(Room("r"), member: "slow", bufferLimit: 10) { payload in
            try? await Task.sleep(for: .milliseconds(100))  // a client that reads slowly
            slowSeen.deliver(to: "slow")(payload)
        }
        let started = ContinuousClock.now
        for index in 0..<200 { try await sender.broadcast(ByteBuffer(string: "m\(index)"), to: Room("r")) }
        #expect(await eventually { inboxes.messages("fast").count == 200 })
        #expect(ContinuousClock.now - started < .seconds(2))  // far less than 200 × 100 ms
        #expect(inboxes.messages("fast") == (0..<200).map { "m\($0)" })
        // The slow member's queue overflowed: the oldest were dropped, and counted.
        #expect(receiver.droppedForSlowMembers >= 150)
        try await Task.sleep(for: .milliseconds(300))
        let slow = slowSeen.messages("slow")
        #expect(!slow.isEmpty && slow.last.map { $0.hasPrefix("m1") } == true)
        try await receiver.leave(Room("r"), member: "slow")
    }
}
