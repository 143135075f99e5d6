import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PorticoRESP
import ServiceLifecycle
import Synchronization

/// A ``Broker`` over Redis pub/sub: one channel per room (docs/relay-protocol.md), a subscriber connection
/// that follows local membership, and a publisher connection that pipelines. Over a Redis Cluster
/// (``Configuration/Mode/cluster``) rooms are shard channels (SSUBSCRIBE/SPUBLISH routed by slot), with one
/// subscriber connection per master that has rooms.
///
/// A `Service`: `run()` connects once a ``Relay`` is attached (it reads Redis on the relay's event loop), owns
/// both connections, reconnects with backoff and jitter, resubscribes every room, flushes publishes buffered
/// meanwhile (bounded, oldest dropped first, every drop counted), keeps the node's
/// heartbeat, presence and announcement keys fresh, and sends itself a probe through Redis every heartbeat:
/// if probes stop coming back (a subscriber Redis cut off, a hung Redis), it reconnects and reports itself
/// unhealthy until they flow again.
public actor RedisBroker: Broker, Service {
    public struct Configuration: Sendable {
        /// How the relay uses Redis.
        public enum Mode: Sendable, Equatable {
            /// One Redis (or a replica set behind one address): SUBSCRIBE and PUBLISH.
            case standalone
            /// A Redis Cluster, `url` one of its nodes (`seeds` more): sharded pub/sub.
            case cluster(seeds: [RedisURL] = [])
        }

        /// Redis, or with ``Mode/cluster(seeds:)`` the first node to ask for the cluster's slot map.
        public var url: RedisURL
        public var mode: Mode = .standalone
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

    /// The relay's data plane: its loop reads Redis, and envelopes go to it without a hop.
    private nonisolated let sink = NIOLockedValueBox<InboundSink?>(nil)
    /// Every state change, for health checks and metrics.
    public nonisolated let states: AsyncStream<State>
    private let stateContinuation: AsyncStream<State>.Continuation
    private let configuration: Configuration
    private let logger: Logger

    private var link: (any RedisLink)?
    private var rooms: Set<Room> = []
    private var localPresence: [Room: Int] = [:]
    /// `portico_relay_dropped_publishes_total`.
    private nonisolated let droppedCounter: Counter
    /// Outgoing envelopes, on the relay's event loop (one lane per cluster master); made when the relay attaches.
    private nonisolated let queue = AtomicLazyReference<PublishLanes>()
    public private(set) var state: State = .connecting
    /// Publishes dropped because the buffer was full while Redis was away.
    public nonisolated var dropped: Int { self.queue.load()?.dropped ?? 0 }
    /// Times the relay reconnected.
    public private(set) var reconnects = 0

    public init(configuration: Configuration, logger: Logger = Logger(label: "portico.relay.redis")) {
        self.configuration = configuration
        self.logger = logger
        (self.states, self.stateContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(16))
        self.droppedCounter = Counter(
            label: "portico_relay_dropped_publishes_total",
            dimensions: [("node", configuration.node)]
        )
        self.droppedCounter.increment(by: 0)  // exported at 0 from the start, not only once something was dropped
    }

    /// Connected, and probes through Redis come back: the node can serve (its `/healthz` says so).
    public var isHealthy: Bool {
        get async {
            guard self.state == .connected, let link = self.link else { return false }
            return await ContinuousClock.now - link.oldestProbe < self.configuration.probeTimeout
        }
    }

    // MARK: Channel and key names (docs/relay-protocol.md)

    static func redisChannel(for room: Room) -> String { "portico:v1:room:\(room.name)" }
    private var aliveKey: String { "portico:v1:alive:\(self.configuration.node)" }
    private static func presenceKey(_ room: Room) -> String { "portico:v1:presence:\(room.name)" }

    // MARK: Broker

    public nonisolated func attach(_ sink: InboundSink) {
        let dropped = self.droppedCounter
        // The queue first: connect() waits for the sink, and then finds the queue there (to follow the slot map).
        _ = self.queue.storeIfNil(
            PublishLanes(
                eventLoop: sink.eventLoop,
                limit: self.configuration.publishBufferLimit,
                sharded: self.isCluster,
                logger: self.logger,
                channelName: { ByteBuffer(string: Self.redisChannel(for: $0)) },
                onDrop: { dropped.increment() }
            )
        )
        self.sink.withLockedValue { $0 = sink }
    }

    /// Queues `envelope` on the relay's event loop; it goes out with everything else published in the same
    /// loop tick, as one write. While Redis is away it is buffered (bounded, oldest dropped and counted).
    public nonisolated func publish(_ envelope: Envelope) throws {
        try envelope.checkEncodable()
        guard let queue = self.queue.load() else {
            throw RedisConnection.ConnectionError(message: "no relay attached to this broker")
        }
        let encoded = envelope.encoded()
        let room = envelope.room
        if queue.eventLoop.inEventLoop {
            queue.enqueue(envelope: encoded, room: room)
        } else {
            queue.eventLoop.execute { queue.enqueue(envelope: encoded, room: room) }
        }
    }

    /// The queue is full while Redis is reachable: publishers wait (backpressure). While it is away, it buffers.
    public nonisolated var isBackedUp: Bool { self.queue.load()?.isFull ?? false }

    public nonisolated func waitForSpace() async {
        await self.queue.load()?.waitForSpace()
    }

    public func subscribe(_ room: Room) async throws {
        guard self.rooms.insert(room).inserted else { return }
        try? await self.link?.subscribe([Self.redisChannel(for: room)])
    }

    public func unsubscribe(_ room: Room) async throws {
        guard self.rooms.remove(room) != nil else { return }
        try? await self.link?.unsubscribe([Self.redisChannel(for: room)])
    }

    public func setPresence(_ room: Room, members: Int) async {
        self.localPresence[room] = members > 0 ? members : nil
        guard let link = self.link else { return }
        let key = Self.presenceKey(room)
        if members > 0 {
            _ = try? await link.send(["HSET", key, self.configuration.node, "\(members)"], key: key)
        } else {
            _ = try? await link.send(["HDEL", key, self.configuration.node], key: key)
        }
    }

    public func presence(_ room: Room) async -> Int {
        let own = self.localPresence[room] ?? 0
        let key = Self.presenceKey(room)
        guard let link = self.link, case .array(let fields?) = try? await link.send(["HGETALL", key], key: key) else {
            return own
        }
        var counts: [(node: String, count: Int)] = []
        var index = 0
        while index + 1 < fields.count {
            if case .bulkString(let node?) = fields[index], case .bulkString(let count?) = fields[index + 1] {
                let name = String(buffer: node)
                // Other nodes' numbers, from Redis: read as 0 unless a count ≥ 0 (summed without overflow below).
                let members = max(0, Int(String(buffer: count)) ?? 0)
                if name != self.configuration.node { counts.append((name, members)) }
            }
            index += 2
        }
        guard !counts.isEmpty else { return own }
        // Only nodes whose heartbeat is alive count: a dead node's members disappear with its TTL.
        guard let alive = try? await link.exist(counts.map { "portico:v1:alive:\($0.node)" }) else { return own }
        var total = own
        for (entry, isAlive) in zip(counts, alive) where isAlive {
            let (sum, overflow) = total.addingReportingOverflow(entry.count)
            total = overflow ? .max : sum
        }
        return total
    }

    /// Entries in the per-room tables (rooms subscribed, local presence): 0 once no room has local members.
    package var roomStateCount: Int { self.rooms.count + self.localPresence.count }

    public func liveNodes() async -> [String] {
        guard let link = self.link, let keys = try? await link.keyspace.scanKeys(matching: "portico:v1:alive:*") else {
            return [self.configuration.node]
        }
        return keys.map { String($0.dropFirst("portico:v1:alive:".count)) }.sorted()
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
        // Connected before a relay is attached, the subscriber would read for nobody: wait for it (startup).
        var attached = self.sink.withLockedValue { $0 }
        while attached == nil {
            try await Task.sleep(for: .milliseconds(10))
            attached = self.sink.withLockedValue { $0 }
        }
        guard let sink = attached else { return }
        // On the subscriber's event loop, the plane's when a relay is attached: no hop per message.
        var inbound = Inbound(
            eventLoop: sink.eventLoop,
            message: { _, payload in
                if let envelope = Envelope(decoding: payload), envelope.origin != node { sink.receive(envelope) }
            },
            endOfBatch: { sink.endOfBatch() }
        )
        if let lanes = self.queue.load() {
            inbound.slotMap = { owners in lanes.eventLoop.execute { lanes.setOwners(owners) } }
        }
        let link = try await self.makeLink(inbound)
        self.link = link
        try await link.subscribe(self.rooms.map { Self.redisChannel(for: $0) })
        try await self.heartbeat()
        guard let queue = self.queue.load() else { return }
        if self.reconnects == 0 {
            try await queue.eventLoop.submit { queue.attach(link) }.get()
            return
        }
        // After an outage, publishes buffered meanwhile or left unconfirmed wait for the other nodes to
        // resubscribe too (they lost their subscriptions in the same outage; pub/sub keeps nothing for absent
        // subscribers). Publishers keep queueing meanwhile, and wait when the queue is full.
        let (token, rooms) = try await queue.eventLoop.submit { (queue.markConnected(), queue.roomsPending()) }.get()
        Task {
            if !rooms.isEmpty { await self.waitForSubscribers(of: rooms, upTo: .seconds(5)) }
            // Not if this connection was lost meanwhile (the token is stale then): the next one attaches.
            queue.eventLoop.execute { queue.attach(link, ifStill: token) }
        }
    }

    /// Heartbeats and probes until a connection fails or probes stop coming back. The watchdog acts the moment
    /// the oldest probe is older than `probeTimeout` (when ``isHealthy`` turns false), not at the next
    /// heartbeat: that one may be waiting on the very Redis that hangs, and replies flowing again after a hang
    /// must not hide it. A hung Redis is treated like a lost connection: closed, reconnected, resubscribed.
    private func supervise() async throws {
        guard let link = self.link else { throw RedisConnection.ConnectionError(message: "connection closed") }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.keepAlive(link) }
            // Probes on their own cadence: a heartbeat waiting on one hung master must not age every shard's probe.
            group.addTask { try await Self.probe(link, every: self.configuration.heartbeat) }
            group.addTask { try await Self.watchProbes(of: link, timeout: self.configuration.probeTimeout) }
            try await group.next()
            group.cancelAll()
        }
    }

    private func keepAlive(_ link: any RedisLink) async throws {
        var last = ContinuousClock.now
        while !Task.isCancelled {
            // A period after the last one began, not after it ended: a heartbeat held up by one cluster master's
            // command deadline (2 s) must not let the keys on the other masters (TTL 3 s) expire.
            try await Task.sleep(until: last + self.configuration.heartbeat, clock: .continuous)
            last = .now
            guard await link.isActive else { throw RedisConnection.ConnectionError(message: "connection closed") }
            try await self.heartbeat()
        }
    }

    /// Sends a probe through every subscriber connection each `period`; what comes back is the probe clock.
    private static func probe(_ link: any RedisLink, every period: Duration) async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: period)
            guard await link.isActive else { throw RedisConnection.ConnectionError(message: "connection closed") }
            try await link.sendProbes()
        }
    }

    private static func watchProbes(of link: any RedisLink, timeout: Duration) async throws {
        while true {
            try await Task.sleep(until: await link.oldestProbe + timeout, clock: .continuous)
            if await ContinuousClock.now - link.oldestProbe >= timeout {
                await link.close()  // fails whatever waits on it now, instead of after the command timeout
                throw RedisConnection.ConnectionError(message: "probes through Redis stopped coming back")
            }
        }
    }

    private func heartbeat() async throws {
        guard let link = self.link else { return }
        let ttl = "\(max(1, self.configuration.ttl.components.seconds))"
        var commands: [(arguments: [String], key: String)] = [(["SET", self.aliveKey, "1", "EX", ttl], self.aliveKey)]
        if let service = self.configuration.service, let advertise = self.configuration.advertise {
            let key = "portico:v1:node:\(service):\(self.configuration.node)"
            commands.append((["SET", key, advertise, "EX", ttl], key))
        }
        for (room, members) in self.localPresence {
            let key = Self.presenceKey(room)
            commands.append((["HSET", key, self.configuration.node, "\(members)"], key))
        }
        let replies: [RESPValue]
        do {
            replies = try await link.send(commands)
        } catch  where self.isCluster {
            self.logger.warning("relay heartbeat failed", metadata: ["portico.error": "\(error)"])
            return
        }
        let errors = replies.compactMap { if case .error(let message) = $0 { message } else { nil } }
        guard let first = errors.first else { return }
        guard self.isCluster else { throw RedisConnection.ServerError(message: first) }
        // One master down fails only the keys it serves (one line per heartbeat, not one per room's presence key):
        // the cluster link recovers its shard on its own.
        self.logger.warning(
            "relay heartbeat: keys on an unreachable master were not refreshed",
            metadata: ["portico.keys": "\(errors.count)", "portico.error": "\(first)"]
        )
    }

    private nonisolated var isCluster: Bool { if case .cluster = self.configuration.mode { true } else { false } }

    private func disconnect() async {
        if let queue = self.queue.load() {
            // What was in flight is unconfirmed: it goes again over the next connection. Publishers waiting
            // for room go on: with Redis away, the queue buffers (and drops the oldest when full).
            try? await queue.eventLoop.submit { queue.detach() }.get()
        }
        await self.link?.close()
        self.link = nil
    }

    /// Connects the link the configured mode calls for.
    private func makeLink(_ inbound: Inbound) async throws -> any RedisLink {
        switch self.configuration.mode {
        case .standalone:
            try await StandaloneRedisLink.connect(url: self.configuration.url, node: self.configuration.node, inbound)
        case .cluster(let seeds):
            try await ClusterRedisLink.connect(
                seeds: [self.configuration.url] + seeds,
                node: self.configuration.node,
                probeTimeout: self.configuration.probeTimeout,
                logger: self.logger,
                inbound
            )
        }
    }

    /// An orderly shutdown: the announcement and presence go at once, not after the TTL.
    private func leave() async {
        self.setState(.disconnected("stopped"))
        await self.disconnect()
        guard let link = try? await self.makeLink(Inbound(eventLoop: nil, message: { _, _ in }, endOfBatch: {})) else {
            return
        }
        var commands: [(arguments: [String], key: String)] = [(["DEL", self.aliveKey], self.aliveKey)]
        if let service = self.configuration.service {
            let key = "portico:v1:node:\(service):\(self.configuration.node)"
            commands.append((["DEL", key], key))
        }
        for room in self.localPresence.keys {
            let key = Self.presenceKey(room)
            commands.append((["HDEL", key, self.configuration.node], key))
        }
        _ = try? await link.send(commands)
        await link.close()
    }

    private func setState(_ state: State) {
        guard state != self.state else { return }
        self.state = state
        Gauge(label: "portico_relay_connected", dimensions: [("node", self.configuration.node)])
            .record(state == .connected ? 1 : 0)
        self.stateContinuation.yield(state)
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
            while ContinuousClock.now < deadline, let link = self.link {
                let expected = await self.nodesWithMembers(in: room, using: link)
                guard let subscribed = try? await link.subscribers(of: Self.redisChannel(for: room)) else { break }
                if subscribed >= expected && ContinuousClock.now >= settle { break }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func nodesWithMembers(in room: Room, using link: any RedisLink) async -> Int {
        let key = Self.presenceKey(room)
        guard case .array(let fields?)? = try? await link.send(["HKEYS", key], key: key) else { return 0 }
        let nodes = fields.compactMap { value -> String? in
            if case .bulkString(let node?) = value { return String(buffer: node) }
            return nil
        }
        guard let alive = try? await link.exist(nodes.map { "portico:v1:alive:\($0)" }) else { return 0 }
        return alive.filter { $0 }.count
    }
}
