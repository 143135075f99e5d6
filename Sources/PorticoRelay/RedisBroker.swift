import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PorticoRESP
import ServiceLifecycle

/// A ``Broker`` over Redis pub/sub: one channel per room (docs/relay-protocol.md), a subscriber connection
/// that follows local membership, and a publisher connection that pipelines.
///
/// A `Service`: `run()` owns both connections, reconnects with backoff and jitter, resubscribes every room,
/// flushes publishes buffered meanwhile (bounded, oldest dropped first, every drop counted), keeps the node's
/// heartbeat, presence and announcement keys fresh, and sends itself a probe through Redis every heartbeat:
/// if probes stop coming back (a subscriber Redis cut off, a hung Redis), it reconnects and reports itself
/// unhealthy until they flow again.
public actor RedisBroker: Broker, Service {
    public struct Configuration: Sendable {
        public var url: RedisURL
        public var node: String
        /// With `advertise`: announce this node for the balancer's Redis discovery under this service.
        public var service: String?
        /// The `host:port` the balancer should connect to.
        public var advertise: String?
        /// Publishes kept while Redis is unreachable. Default 10,000.
        public var publishBufferLimit: Int = 10_000
        /// Heartbeat and probe period. Default 1 s.
        public var heartbeat: Duration = .seconds(1)
        /// Lifetime of heartbeat, presence and announcement keys. Default 3 s.
        public var ttl: Duration = .seconds(3)
        /// No probe back for this long means the subscription is dead. Default 3 s.
        public var probeTimeout: Duration = .seconds(3)

        public init(url: RedisURL, node: String, service: String? = nil, advertise: String? = nil) {
            self.url = url
            self.node = node
            self.service = service
            self.advertise = advertise
        }
    }

    /// Where the connection to Redis stands.
    public enum State: Sendable, Equatable {
        case connecting
        case connected
        /// Reconnecting after `reason`.
        case disconnected(String)
    }

    public nonisolated let inbound: AsyncStream<Envelope>
    /// Every state change, for health checks and metrics.
    public nonisolated let states: AsyncStream<State>
    private let inboundContinuation: AsyncStream<Envelope>.Continuation
    private let stateContinuation: AsyncStream<State>.Continuation
    private let configuration: Configuration
    private let logger: Logger
    private let probes = ProbeClock()

    private var publisher: RedisConnection?
    private var subscriber: RedisSubscriber?
    private var rooms: Set<Room> = []
    private var localPresence: [Room: Int] = [:]
    private var outbox = CircularBuffer<ByteBuffer>()
    private var outboxRooms = CircularBuffer<Room>()
    private var pumping = false
    /// The outbox holds publishes from an outage: before flushing them, give the other nodes time to
    /// resubscribe (pub/sub keeps nothing for absent subscribers).
    private var outboxFromOutage = false
    /// Publishers waiting for room in the outbox.
    private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    public private(set) var state: State = .connecting
    /// Publishes dropped because the buffer was full while Redis was away.
    public private(set) var dropped = 0
    /// Times the relay reconnected.
    public private(set) var reconnects = 0

    public init(configuration: Configuration, logger: Logger = Logger(label: "portico.relay.redis")) {
        self.configuration = configuration
        self.logger = logger
        (self.inbound, self.inboundContinuation) = AsyncStream.makeStream()
        (self.states, self.stateContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(16))
    }

    /// Connected, and probes through Redis come back: the node can serve (its `/healthz` says so).
    public var isHealthy: Bool {
        self.state == .connected && ContinuousClock.now - self.probes.last < self.configuration.probeTimeout
    }

    // MARK: Channel and key names (docs/relay-protocol.md)

    static func redisChannel(for room: Room) -> String { "portico:v1:room:\(room.name)" }
    private var probeChannel: String { "portico:v1:probe:\(self.configuration.node)" }
    private var aliveKey: String { "portico:v1:alive:\(self.configuration.node)" }
    private static func presenceKey(_ room: Room) -> String { "portico:v1:presence:\(room.name)" }

    // MARK: Broker

    public func publish(_ envelope: Envelope) async throws {
        // Connected: a full outbox makes the publisher wait (backpressure). Only while Redis is away does a
        // full buffer drop, oldest first.
        while self.outbox.count >= self.configuration.publishBufferLimit, self.publisher?.isActive == true {
            await withCheckedContinuation { self.spaceWaiters.append($0) }
        }
        if self.outbox.count >= self.configuration.publishBufferLimit {
            self.outbox.removeFirst()
            self.outboxRooms.removeFirst()
            self.dropped += 1
            Counter(label: "portico_relay_dropped_publishes_total", dimensions: [("node", self.configuration.node)])
                .increment()
            if self.dropped == 1 || self.dropped % 1000 == 0 {
                self.logger.warning(
                    "relay publish buffer full: dropping oldest",
                    metadata: ["portico.dropped": "\(self.dropped)"]
                )
            }
        }
        if self.publisher?.isActive != true { self.outboxFromOutage = true }
        self.outbox.append(envelope.encoded())
        self.outboxRooms.append(envelope.room)
        self.startPump()
    }

    public func subscribe(_ room: Room) async throws {
        guard self.rooms.insert(room).inserted else { return }
        try? await self.subscriber?.subscribe([Self.redisChannel(for: room)])
    }

    public func unsubscribe(_ room: Room) async throws {
        guard self.rooms.remove(room) != nil else { return }
        try? await self.subscriber?.unsubscribe([Self.redisChannel(for: room)])
    }

    public func setPresence(_ room: Room, members: Int) async {
        self.localPresence[room] = members > 0 ? members : nil
        guard let publisher = self.publisher else { return }
        if members > 0 {
            _ = try? await publisher.send(["HSET", Self.presenceKey(room), self.configuration.node, "\(members)"])
        } else {
            _ = try? await publisher.send(["HDEL", Self.presenceKey(room), self.configuration.node])
        }
    }

    public func presence(_ room: Room) async -> Int {
        let own = self.localPresence[room] ?? 0
        guard let publisher = self.publisher,
            case .array(let fields?) = try? await publisher.send(["HGETALL", Self.presenceKey(room)])
        else { return own }
        var counts: [(node: String, count: Int)] = []
        var index = 0
        while index + 1 < fields.count {
            if case .bulkString(let node?) = fields[index], case .bulkString(let count?) = fields[index + 1] {
                let name = String(buffer: node)
                if name != self.configuration.node { counts.append((name, Int(String(buffer: count)) ?? 0)) }
            }
            index += 2
        }
        guard !counts.isEmpty else { return own }
        // Only nodes whose heartbeat is alive count: a dead node's members disappear with its TTL.
        guard
            case .array(let alive?) = try? await publisher.send(["MGET"] + counts.map { "portico:v1:alive:\($0.node)" })
        else { return own }
        var total = own
        for (entry, flag) in zip(counts, alive) {
            if case .bulkString(.some) = flag { total += entry.count }
        }
        return total
    }

    public func liveNodes() async -> [String] {
        guard let publisher = self.publisher else { return [self.configuration.node] }
        var nodes: [String] = []
        var cursor = "0"
        repeat {
            guard
                case .array(let parts?)? = try? await publisher.send([
                    "SCAN", cursor, "MATCH", "portico:v1:alive:*", "COUNT", "1000",
                ]),
                parts.count == 2, case .bulkString(let next?) = parts[0], case .array(let keys?) = parts[1]
            else { break }
            cursor = String(buffer: next)
            for case .bulkString(let key?) in keys {
                nodes.append(String(String(buffer: key).dropFirst("portico:v1:alive:".count)))
            }
        } while cursor != "0"
        return nodes.sorted()
    }

    // MARK: Connection lifecycle

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.connectionLoop()
        }
        await self.leave()
    }

    private func connectionLoop() async {
        var attempt = 0
        while !Task.isCancelled {
            self.setState(.connecting)
            do {
                try await self.connect()
                attempt = 0
                self.setState(.connected)
                try await self.supervise()
            } catch {
                if Task.isCancelled { break }
                self.setState(.disconnected("\(error)"))
                self.logger.warning("relay lost Redis; reconnecting", metadata: ["portico.error": "\(error)"])
            }
            await self.disconnect()
            attempt += 1
            self.reconnects += 1
            Counter(label: "portico_relay_reconnects_total", dimensions: [("node", self.configuration.node)])
                .increment()
            // Exponential backoff with full jitter: 100 ms doubling to 5 s.
            let ceiling = min(5_000, 100 * (1 << min(attempt, 6)))
            try? await Task.sleep(for: .milliseconds(Int.random(in: ceiling / 2...ceiling)))
        }
    }

    private func connect() async throws {
        let node = self.configuration.node
        let continuation = self.inboundContinuation
        let probes = self.probes
        let probeChannel = self.probeChannel
        let subscriber = try await RedisSubscriber.connect(to: self.configuration.url) { channel, payload in
            if channel == probeChannel {
                probes.record()
            } else if let envelope = Envelope(decoding: payload), envelope.origin != node {
                continuation.yield(envelope)
            }
        }
        let publisher: RedisConnection
        do {
            publisher = try await RedisConnection.connect(to: self.configuration.url)
        } catch {
            await subscriber.close()
            throw error
        }
        self.subscriber = subscriber
        self.publisher = publisher
        try await subscriber.subscribe([probeChannel] + self.rooms.map { Self.redisChannel(for: $0) })
        self.probes.record()
        try await self.heartbeat()
        self.startPump()
    }

    /// Heartbeats and probes until a connection fails or probes stop coming back.
    private func supervise() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: self.configuration.heartbeat)
            guard let publisher = self.publisher, publisher.isActive, self.subscriber?.isActive == true else {
                throw RedisConnection.ConnectionError(message: "connection closed")
            }
            try await self.heartbeat()
            _ = publisher.enqueue(["PUBLISH", self.probeChannel, "probe"].map { ByteBuffer(string: $0) })
            if ContinuousClock.now - self.probes.last > self.configuration.probeTimeout {
                throw RedisConnection.ConnectionError(message: "probes through Redis stopped coming back")
            }
        }
    }

    private func heartbeat() async throws {
        guard let publisher = self.publisher else { return }
        let ttl = "\(max(1, self.configuration.ttl.components.seconds))"
        var commands: [EventLoopFuture<RESPValue>] = [
            publisher.enqueue(["SET", self.aliveKey, "1", "EX", ttl].map { ByteBuffer(string: $0) })
        ]
        if let service = self.configuration.service, let advertise = self.configuration.advertise {
            let key = "portico:v1:node:\(service):\(self.configuration.node)"
            commands.append(publisher.enqueue(["SET", key, advertise, "EX", ttl].map { ByteBuffer(string: $0) }))
        }
        for (room, members) in self.localPresence {
            let arguments = ["HSET", Self.presenceKey(room), self.configuration.node, "\(members)"]
            commands.append(publisher.enqueue(arguments.map { ByteBuffer(string: $0) }))
        }
        for command in commands { _ = try await command.get() }
    }

    private func wakePublishers() {
        let waiters = self.spaceWaiters
        self.spaceWaiters = []
        for waiter in waiters { waiter.resume() }
    }

    private func disconnect() async {
        self.wakePublishers()  // they re-check: with Redis away, the outbox buffers (and drops when full)
        await self.subscriber?.close()
        await self.publisher?.close()
        self.subscriber = nil
        self.publisher = nil
    }

    /// An orderly shutdown: the announcement and presence go at once, not after the TTL.
    private func leave() async {
        self.setState(.disconnected("stopped"))
        guard let connection = try? await RedisConnection.connect(to: self.configuration.url) else { return }
        var keys = [self.aliveKey]
        if let service = self.configuration.service {
            keys.append("portico:v1:node:\(service):\(self.configuration.node)")
        }
        _ = try? await connection.send(["DEL"] + keys)
        for room in self.localPresence.keys {
            _ = try? await connection.send(["HDEL", Self.presenceKey(room), self.configuration.node])
        }
        await connection.close()
        await self.disconnect()
        self.inboundContinuation.finish()
    }

    private func setState(_ state: State) {
        guard state != self.state else { return }
        self.state = state
        Gauge(label: "portico_relay_connected", dimensions: [("node", self.configuration.node)])
            .record(state == .connected ? 1 : 0)
        self.stateContinuation.yield(state)
    }

    // MARK: Publishing

    private func startPump() {
        guard !self.pumping, self.publisher != nil, !self.outbox.isEmpty else { return }
        self.pumping = true
        Task { await self.pump() }
    }

    /// Sends the outbox in order, pipelined in batches; on failure the unconfirmed rest stays for the next
    /// connection (a re-sent message is dropped by receivers as a duplicate: sequences make it exactly once).
    private func pump() async {
        defer {
            self.pumping = false
            self.wakePublishers()
        }
        if self.outboxFromOutage {
            self.outboxFromOutage = false
            await self.waitForSubscribers(of: Set(self.outboxRooms), upTo: .seconds(5))
        }
        while let publisher = self.publisher, publisher.isActive, !self.outbox.isEmpty {
            let count = min(256, self.outbox.count)
            var replies: [EventLoopFuture<RESPValue>] = []
            replies.reserveCapacity(count)
            for index in 0..<count {
                let channel = ByteBuffer(string: Self.redisChannel(for: self.outboxRooms[offset: index]))
                replies.append(publisher.enqueue([ByteBuffer(string: "PUBLISH"), channel, self.outbox[offset: index]]))
            }
            do {
                for reply in replies { _ = try await reply.get() }
            } catch {
                return
            }
            self.outbox.removeFirst(count)
            self.outboxRooms.removeFirst(count)
            self.wakePublishers()
        }
    }
}

extension RedisBroker {
    /// Waits until every live node with members in `rooms` is subscribed to them again (PUBSUB NUMSUB against
    /// the presence hash), or until `limit`.
    fileprivate func waitForSubscribers(of rooms: Set<Room>, upTo limit: Duration) async {
        let started = ContinuousClock.now
        let deadline = started + limit
        // Other nodes reconnect on their own backoff and announce themselves with their next heartbeat: give
        // them two heartbeats before trusting the presence hash (a restarted Redis starts empty).
        let settle = started + self.configuration.heartbeat * 2
        for room in rooms {
            while ContinuousClock.now < deadline, let publisher = self.publisher {
                let expected = await self.nodesWithMembers(in: room, using: publisher)
                let channel = Self.redisChannel(for: room)
                guard case .array(let reply?)? = try? await publisher.send(["PUBSUB", "NUMSUB", channel]),
                    reply.count == 2, case .integer(let subscribed) = reply[1]
                else { break }
                if subscribed >= expected && ContinuousClock.now >= settle { break }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func nodesWithMembers(in room: Room, using publisher: RedisConnection) async -> Int {
        guard case .array(let fields?)? = try? await publisher.send(["HKEYS", Self.presenceKey(room)]) else { return 0 }
        let nodes = fields.compactMap { value -> String? in
            if case .bulkString(let node?) = value { return String(buffer: node) }
            return nil
        }
        guard !nodes.isEmpty,
            case .array(let alive?)? = try? await publisher.send(["MGET"] + nodes.map { "portico:v1:alive:\($0)" })
        else { return 0 }
        return alive.filter { if case .bulkString(.some) = $0 { true } else { false } }.count
    }
}

/// When this node last heard its own probe back; written on the subscriber's event loop.
final class ProbeClock: Sendable {
    private let instant = NIOLockedValueBox(ContinuousClock.now)

    func record() {
        self.instant.withLockedValue { $0 = .now }
    }

    var last: ContinuousClock.Instant { self.instant.withLockedValue { $0 } }
}
