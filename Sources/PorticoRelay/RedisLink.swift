import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PorticoRESP

/// What a ``RedisBroker`` talks through: the connections to one Redis, or to the shards of a Redis Cluster.
/// The broker's logic (outbox, presence, heartbeats, reconnects) is the same over both.
/// Also where the broker's ``PublishQueue`` sends its batches (``PublishTarget``).
protocol RedisLink: PublishTarget {
    /// Every connection is open.
    var isActive: Bool { get async }
    /// Sends commands pipelined, each routed by its key; returns the replies in order (errors as values).
    func send(_ commands: [(arguments: [String], key: String)]) async throws -> [RESPValue]
    /// Where keys are read (every master, in a cluster).
    var keyspace: RedisKeyspace { get }
    func subscribe(_ channels: [String]) async throws
    func unsubscribe(_ channels: [String]) async throws
    /// Subscribers of `channel` (on the shard that owns it, in a cluster).
    func subscribers(of channel: String) async throws -> Int
    /// Publishes a probe through every subscriber connection, to this node itself.
    func sendProbes() async throws
    /// When the probe heard back longest ago came back.
    var oldestProbe: ContinuousClock.Instant { get async }
    func close() async
}

extension RedisLink {
    /// Which of `keys` exist.
    func exist(_ keys: [String]) async throws -> [Bool] {
        try await self.keyspace.values(of: keys).map { if case .bulkString(.some) = $0 { true } else { false } }
    }

    func send(_ arguments: [String], key: String) async throws -> RESPValue {
        let reply = try await self.send([(arguments, key)])[0]
        if case .error(let message) = reply { throw RedisConnection.ServerError(message: message) }
        return reply
    }
}

/// What a link does with what its subscriber connections read.
struct Inbound: Sendable {
    /// Where to connect the subscriber connections (the relay's data plane), or nil for any loop.
    let eventLoop: (any EventLoop)?
    /// A message of a room's channel, on the subscriber's event loop.
    let message: RedisSubscriber.MessageHandler
    /// The end of a subscriber's read batch.
    let endOfBatch: @Sendable () -> Void
    /// A Redis Cluster's slot map, whenever it changes (the publish lanes follow it).
    var slotMap: @Sendable ([RedisClusterClient.NodeAddress?]) -> Void = { _ in }
}

/// One Redis: a pipelined connection for commands and publishes, a SUBSCRIBE connection for rooms and probes.
final class StandaloneRedisLink: RedisLink {
    private let connection: RedisConnection
    private let subscriber: RedisSubscriber
    private let probeChannel: String
    private let probes: ProbeClock

    static func connect(url: RedisURL, node: String, _ inbound: Inbound) async throws -> StandaloneRedisLink {
        let probes = ProbeClock()
        let probeChannel = "portico:v1:probe:\(node)"
        let probeBytes = ByteBuffer(string: probeChannel)
        let subscriber = try await RedisSubscriber.connect(
            to: url,
            group: inbound.eventLoop ?? MultiThreadedEventLoopGroup.singleton,
            onReadComplete: inbound.endOfBatch
        ) { channel, payload in
            if channel == probeBytes { probes.record() } else { inbound.message(channel, payload) }
        }
        let connection: RedisConnection
        do {
            // On the relay's loop too: a batch's write and its confirmation cost no hop.
            connection = try await RedisConnection.connect(
                to: url,
                group: inbound.eventLoop ?? MultiThreadedEventLoopGroup.singleton
            )
            try await subscriber.subscribe([probeChannel])
        } catch {
            await subscriber.close()
            throw error
        }
        return StandaloneRedisLink(
            connection: connection,
            subscriber: subscriber,
            probeChannel: probeChannel,
            probes: probes
        )
    }

    private init(connection: RedisConnection, subscriber: RedisSubscriber, probeChannel: String, probes: ProbeClock) {
        self.connection = connection
        self.subscriber = subscriber
        self.probeChannel = probeChannel
        self.probes = probes
    }

    var isActive: Bool { self.connection.isActive && self.subscriber.isActive }

    func send(_ commands: [(arguments: [String], key: String)]) async throws -> [RESPValue] {
        let futures = commands.map { self.connection.enqueue($0.arguments.map { ByteBuffer(string: $0) }) }
        var replies: [RESPValue] = []
        replies.reserveCapacity(futures.count)
        for future in futures { replies.append(try await future.get()) }
        return replies
    }

    /// One pipelined connection: batches arrive and complete in order.
    var keepsOrder: Bool { true }

    func publish(
        _ batch: [(channel: ByteBuffer, payload: ByteBuffer)],
        on eventLoop: any EventLoop
    )
        -> EventLoopFuture<Void>
    {
        self.connection.publish(batch)
    }

    var keyspace: RedisKeyspace { .single(self.connection) }

    func subscribe(_ channels: [String]) async throws { try await self.subscriber.subscribe(channels) }

    func unsubscribe(_ channels: [String]) async throws { try await self.subscriber.unsubscribe(channels) }

    func subscribers(of channel: String) async throws -> Int {
        guard case .array(let reply?) = try await self.connection.send(["PUBSUB", "NUMSUB", channel]), reply.count == 2,
            case .integer(let count) = reply[1]
        else { return 0 }
        return Int(count)
    }

    func sendProbes() async throws {
        _ = self.connection.enqueue(["PUBLISH", self.probeChannel, "probe"].map { ByteBuffer(string: $0) })
    }

    var oldestProbe: ContinuousClock.Instant { self.probes.last }

    func close() async {
        await self.subscriber.close()
        await self.connection.close()
    }
}

/// A Redis Cluster: commands and SPUBLISH go to the owner of their slot (``RedisClusterClient``); rooms are
/// shard channels, SSUBSCRIBEd on one subscriber connection per master that has rooms. Each such connection
/// has its own probe channel (one whose slot that master owns), so a dead shard subscription is noticed.
///
/// A fault stays on its shard: a master that dies, hangs or stops echoing probes loses only its own
/// subscriber, whose rooms are placed again (on whichever master the slot map names by then) with their own
/// backoff, while the other shards' rooms go on; the slot map is read from any master that answers; probes go
/// to every shard on their own, never behind a reply from another. When a master loses a channel's slot,
/// Redis ends the subscription and the link moves it to the new owner.
///
/// An actor, so every `await` below may let another call in: after each one, what was read before is read
/// again (is the link closed, is the shard still the one subscribed on, is the room still wanted).
actor ClusterRedisLink: RedisLink {
    private struct Shard {
        let subscriber: RedisSubscriber
        let probes: ProbeClock
        var probeChannel: String
        var channels: Set<String> = []
    }

    /// Placing a channel failed; `owner` (if known) is the master that did not take it.
    private struct PlacementFailed: Error {
        let owner: RedisClusterClient.NodeAddress?
    }

    private let client: RedisClusterClient
    private let node: String
    private let inbound: Inbound
    private let probeTimeout: Duration
    private let logger: Logger
    private var shards: [RedisClusterClient.NodeAddress: Shard] = [:]
    /// The channels the broker wants subscribed (changed at once by subscribe and unsubscribe, so that a
    /// placement that finishes later is checked against it).
    private var wanted: Set<String> = []
    /// The master each subscribed channel is subscribed on.
    private var placed: [String: RedisClusterClient.NodeAddress] = [:]
    /// Channels being placed right now.
    private var placing: Set<String> = []
    /// Wanted channels that could not be placed (their master is down), waiting for ``recover()``; their number
    /// is `portico_relay_cluster_rooms_unplaced` (the node stays healthy while other shards serve).
    private var orphans: Set<String> = [] {
        didSet { if self.orphans.count != oldValue.count { self.unplaced.record(self.orphans.count) } }
    }
    private let unplaced: Gauge
    private var recovery: Task<Void, Never>?
    /// When the last shard with rooms was lost, while none is left (health reads it).
    private var allLostSince: ContinuousClock.Instant?
    /// When the cluster last answered a command (health, for a node that has no rooms to probe).
    private var lastAnswer = ContinuousClock.now
    private var closed = false

    /// Each batch is a task of its own (SPUBLISH routed by slot may refresh the slot map first): two in flight
    /// could reach the shards in either order, so a lane sends one at a time.
    nonisolated var keepsOrder: Bool { false }

    nonisolated func publish(
        _ batch: [(channel: ByteBuffer, payload: ByteBuffer)],
        on eventLoop: any EventLoop
    )
        -> EventLoopFuture<Void>
    {
        let promise = eventLoop.makePromise(of: Void.self)
        promise.completeWithTask { try await self.publish(batch) }
        return promise.futureResult
    }

    static func connect(
        seeds: [RedisURL],
        node: String,
        probeTimeout: Duration,
        logger: Logger,
        _ inbound: Inbound
    ) async throws -> ClusterRedisLink {
        let client = try await RedisClusterClient.connect(seeds: seeds)
        await client.observeSlotMap(inbound.slotMap)
        return ClusterRedisLink(client: client, node: node, probeTimeout: probeTimeout, logger: logger, inbound)
    }

    private init(
        client: RedisClusterClient,
        node: String,
        probeTimeout: Duration,
        logger: Logger,
        _ inbound: Inbound
    ) {
        self.client = client
        self.node = node
        self.probeTimeout = probeTimeout
        self.logger = logger
        self.inbound = inbound
        self.unplaced = Gauge(label: "portico_relay_cluster_rooms_unplaced", dimensions: [("node", node)])
        self.unplaced.record(0)
    }

    /// Open until closed: a master that is down is this link's to recover, shard by shard, not a reason to
    /// drop every connection.
    var isActive: Bool { !self.closed }

    func send(_ commands: [(arguments: [String], key: String)]) async throws -> [RESPValue] {
        let replies = try await self.client.sendBatch(
            commands.map { ($0.arguments.map { ByteBuffer(string: $0) }, RedisClusterSlot.of($0.key)) }
        )
        if replies.contains(where: { if case .error = $0 { false } else { true } }) { self.lastAnswer = .now }
        return replies
    }

    private func publish(_ batch: [(channel: ByteBuffer, payload: ByteBuffer)]) async throws {
        let command = ByteBuffer(string: "SPUBLISH")
        let replies = try await self.client.sendBatch(
            batch.map { message in
                let slot = message.channel.withUnsafeReadableBytes {
                    RedisClusterSlot.of(bytes: $0.bindMemory(to: UInt8.self))
                }
                return ([command, message.channel, message.payload], slot)
            }
        )
        for case .error(let message) in replies { throw RedisConnection.ServerError(message: message) }
    }

    nonisolated var keyspace: RedisKeyspace { .cluster(self.client) }

    func subscribe(_ channels: [String]) async throws {
        var failed: Set<RedisClusterClient.NodeAddress> = []
        for channel in channels {
            self.wanted.insert(channel)
            guard self.placed[channel] == nil, !self.placing.contains(channel), !self.orphans.contains(channel) else {
                continue
            }
            await self.placeOrOrphan(channel, skipping: &failed)
        }
    }

    func unsubscribe(_ channels: [String]) async throws {
        for channel in channels {
            self.wanted.remove(channel)
            self.orphans.remove(channel)
            // Being placed right now: the placement sees it is not wanted any more and releases it.
            await self.release(channel)
        }
    }

    func subscribers(of channel: String) async throws -> Int {
        let slot = RedisClusterSlot.of(channel)
        let reply = try await self.client.send(
            ["PUBSUB", "SHARDNUMSUB", channel].map { ByteBuffer(string: $0) },
            slot: slot
        )
        guard case .array(let parts?) = reply, parts.count == 2, case .integer(let count) = parts[1] else { return 0 }
        return Int(count)
    }

    /// A shard whose probe has not come back for `probeTimeout` is lost (its master hangs or its subscription
    /// is dead) and recovered on its own; then every shard is probed, each on its own: a probe waits for no
    /// reply, and a master that takes long to connect holds up no other shard's probe.
    func sendProbes() async throws {
        let now = ContinuousClock.now
        for (owner, shard) in self.shards where now - shard.probes.last >= self.probeTimeout {
            await self.lose(owner, because: "probes stopped coming back")
        }
        let client = self.client
        let command = ByteBuffer(string: "SPUBLISH")
        for shard in self.shards.values {
            let arguments = [command, ByteBuffer(string: shard.probeChannel), ByteBuffer(string: "probe")]
            let slot = RedisClusterSlot.of(shard.probeChannel)
            Task { _ = try? await client.enqueue(arguments, slot: slot) }
        }
    }

    /// What health is judged by: the freshest shard's probe (the node serves the rooms of every master that
    /// works); with rooms but no shard left, the moment the last one was lost; with no rooms at all, the last
    /// time the cluster answered a command (the heartbeat, every second).
    var oldestProbe: ContinuousClock.Instant {
        if let freshest = self.shards.values.map({ $0.probes.last }).max() { return freshest }
        if !self.orphans.isEmpty { return self.allLostSince ?? self.lastAnswer }
        return self.lastAnswer
    }

    func close() async {
        self.closed = true
        self.recovery?.cancel()
        self.recovery = nil
        self.wanted = []
        self.orphans = []
        self.placed = [:]
        let shards = self.shards.values
        self.shards = [:]
        for shard in shards { await shard.subscriber.close() }
        await self.client.close()
    }

    // MARK: Placing channels

    /// Places `channel`, or leaves it to ``recover()``. A master in `failed` already did not answer in this
    /// round: its channels wait without trying (a hung master costs one deadline per round, not one per room).
    private func placeOrOrphan(_ channel: String, skipping failed: inout Set<RedisClusterClient.NodeAddress>) async {
        if let owner = await self.client.owner(ofSlot: RedisClusterSlot.of(channel)), failed.contains(owner) {
            self.orphan(channel)
            return
        }
        self.placing.insert(channel)
        do {
            _ = try await self.place(channel)
            self.placing.remove(channel)
            if !self.wanted.contains(channel) { await self.release(channel) }  // left while it was being placed
        } catch {
            self.placing.remove(channel)
            if let owner = (error as? PlacementFailed)?.owner { failed.insert(owner) }
            self.orphan(channel)
        }
    }

    /// SSUBSCRIBEs `channel` on the subscriber of its slot's master, opening that subscriber if needed; a MOVED
    /// answer refreshes the slot map and tries again. Returns the master it is subscribed on.
    private func place(_ channel: String) async throws -> RedisClusterClient.NodeAddress {
        let slot = RedisClusterSlot.of(channel)
        var lastOwner: RedisClusterClient.NodeAddress?
        for attempt in 0..<3 {
            if attempt > 0 { try? await self.client.refreshSlots() }
            guard !self.closed else { throw PlacementFailed(owner: nil) }
            guard let owner = await self.client.owner(ofSlot: slot) else { continue }
            lastOwner = owner
            let subscriber: RedisSubscriber
            do {
                subscriber = try await self.shard(owner).subscriber
                try await subscriber.ssubscribe([channel])
            } catch let error as RedisConnection.ServerError where error.isRedirection {
                await self.closeIfEmpty(owner)
                continue
            } catch {
                throw PlacementFailed(owner: owner)
            }
            // The shard may have been lost, or replaced, while this waited: then the channel is not placed.
            guard !self.closed, self.shards[owner]?.subscriber === subscriber else {
                throw PlacementFailed(owner: owner)
            }
            self.placed[channel] = owner
            self.shards[owner]?.channels.insert(channel)
            self.allLostSince = nil
            return owner
        }
        throw PlacementFailed(owner: lastOwner)
    }

    /// Unsubscribes `channel` where it is placed; a shard left without channels closes.
    private func release(_ channel: String) async {
        guard let owner = self.placed.removeValue(forKey: channel), let shard = self.shards[owner] else { return }
        self.shards[owner]?.channels.remove(channel)
        if self.shards[owner]?.channels.isEmpty == true {
            // One subscriber per master that has rooms: the last room gone, the connection goes too.
            self.shards[owner] = nil
            await shard.subscriber.close()
        } else {
            try? await shard.subscriber.sunsubscribe([channel])
        }
    }

    /// Closes `owner`'s subscriber if it serves no channel (left by a placement that was redirected elsewhere).
    private func closeIfEmpty(_ owner: RedisClusterClient.NodeAddress) async {
        guard let shard = self.shards[owner], shard.channels.isEmpty else { return }
        self.shards[owner] = nil
        await shard.subscriber.close()
    }

    /// The subscriber for `owner`, connected with its probe channel subscribed.
    private func shard(_ owner: RedisClusterClient.NodeAddress) async throws -> Shard {
        if let shard = self.shards[owner] { return shard }
        let probes = ProbeClock()
        let probeChannel = try await self.probeChannel(on: owner)
        let inbound = self.inbound
        let subscriber = try await RedisSubscriber.connect(
            to: await self.client.url(of: owner),
            group: inbound.eventLoop ?? MultiThreadedEventLoopGroup.singleton,
            onUnsubscribed: { [weak self] channel in
                guard let self else { return }
                Task { await self.lost(channel, on: owner) }
            },
            onReadComplete: inbound.endOfBatch,
            onMessage: { channel, payload in
                if channel.readableBytesView.starts(with: probePrefix) {
                    probes.record()
                } else {
                    inbound.message(channel, payload)
                }
            }
        )
        do {
            try await subscriber.ssubscribe([probeChannel])
        } catch {
            await subscriber.close()
            throw error
        }
        if self.closed {
            await subscriber.close()
            throw RedisConnection.ConnectionError(message: "link closed")
        }
        if let raced = self.shards[owner] {
            await subscriber.close()
            return raced
        }
        subscriber.closeFuture.whenComplete { [weak self] _ in
            guard let self else { return }
            Task { await self.closed(subscriber, on: owner) }
        }
        let shard = Shard(subscriber: subscriber, probes: probes, probeChannel: probeChannel)
        self.shards[owner] = shard
        return shard
    }

    /// A probe channel for this node whose slot `owner` serves: `portico:v1:probe:{node:N}` for the first N
    /// that lands there.
    private func probeChannel(on owner: RedisClusterClient.NodeAddress) async throws -> String {
        for index in 0..<100_000 {
            let channel = "portico:v1:probe:{\(self.node):\(index)}"
            if await self.client.owner(ofSlot: RedisClusterSlot.of(channel)) == owner { return channel }
        }
        throw RedisConnection.ConnectionError(message: "no probe channel lands on \(owner)")
    }

    // MARK: Faults

    /// Redis ended the subscription of `channel` on `owner`: its slot moved. Subscribe where it lives now.
    private func lost(_ channel: String, on owner: RedisClusterClient.NodeAddress) async {
        guard !self.closed, let shard = self.shards[owner] else { return }
        if shard.probeChannel == channel {
            let subscriber = shard.subscriber
            try? await self.client.refreshSlots()
            let replacement = try? await self.probeChannel(on: owner)
            guard !self.closed, self.shards[owner]?.subscriber === subscriber else { return }  // lost meanwhile
            guard let replacement else {
                await self.lose(owner, because: "it serves no slot any more")
                return
            }
            self.shards[owner]?.probeChannel = replacement
            try? await subscriber.ssubscribe([replacement])
            return
        }
        guard self.placed[channel] == owner else { return }  // unsubscribed meanwhile, or placed elsewhere
        self.placed[channel] = nil
        self.shards[owner]?.channels.remove(channel)
        await self.closeIfEmpty(owner)
        guard self.wanted.contains(channel), !self.placing.contains(channel) else { return }
        var failed: Set<RedisClusterClient.NodeAddress> = []
        await self.placeOrOrphan(channel, skipping: &failed)
    }

    private func closed(_ subscriber: RedisSubscriber, on owner: RedisClusterClient.NodeAddress) async {
        guard let shard = self.shards[owner], shard.subscriber === subscriber else { return }
        await self.lose(owner, because: "its connection closed")
    }

    /// Gives up `owner`'s subscriber: its rooms wait in `orphans` until ``recover()`` places them again.
    private func lose(_ owner: RedisClusterClient.NodeAddress, because reason: String) async {
        guard !self.closed, let shard = self.shards.removeValue(forKey: owner) else { return }
        self.logger.warning(
            "relay lost a Redis Cluster shard; its rooms are placed again, the others go on",
            metadata: [
                "portico.shard": "\(owner)", "portico.reason": "\(reason)", "portico.rooms": "\(shard.channels.count)",
            ]
        )
        for channel in shard.channels where self.placed[channel] == owner {
            self.placed[channel] = nil
            if self.wanted.contains(channel) { self.orphans.insert(channel) }
        }
        if self.shards.isEmpty, !self.orphans.isEmpty { self.allLostSince = self.allLostSince ?? shard.probes.last }
        self.startRecovery()
        await shard.subscriber.close()
    }

    /// `channel` is wanted and could not be placed: recovery places it.
    private func orphan(_ channel: String) {
        guard self.wanted.contains(channel), self.placed[channel] == nil, !self.closed else { return }
        self.orphans.insert(channel)
        if self.shards.isEmpty { self.allLostSince = self.allLostSince ?? .now }
        self.startRecovery()
    }

    private func startRecovery() {
        guard self.recovery == nil, !self.closed, !self.orphans.isEmpty else { return }
        self.recovery = Task { await self.recover() }
    }

    /// Places orphaned rooms again until none is left: rereads the slot map from any master that answers
    /// (a replica may have taken over), then subscribes each where its slot lives, trying each master once per
    /// round; backoff with jitter, 100 ms doubling to 2 s, between rounds.
    private func recover() async {
        var attempt = 0
        while !self.closed, !Task.isCancelled, !self.orphans.isEmpty {
            try? await self.client.refreshSlots()
            var failed: Set<RedisClusterClient.NodeAddress> = []
            for channel in self.orphans.sorted() {
                guard !self.closed else { break }
                // Placed, or left, meanwhile: nothing to do.
                guard self.orphans.remove(channel) != nil, self.wanted.contains(channel), self.placed[channel] == nil,
                    !self.placing.contains(channel)
                else { continue }
                await self.placeOrOrphan(channel, skipping: &failed)
            }
            if self.orphans.isEmpty {
                self.logger.info("relay placed every room of the lost shard again")
                break
            }
            attempt += 1
            let ceiling = min(2_000, 100 * (1 << min(attempt, 5)))
            try? await Task.sleep(for: .milliseconds(Int.random(in: ceiling / 2...ceiling)))
        }
        self.recovery = nil
        self.startRecovery()  // orphaned after the loop ended (none, unless a shard was lost just now)
    }
}

/// The channels of probes (`portico:v1:probe:…`), as bytes.
private let probePrefix = Array("portico:v1:probe:".utf8)

/// When a subscriber connection last heard its own probe back; written on the subscriber's event loop.
final class ProbeClock: Sendable {
    private let instant = NIOLockedValueBox(ContinuousClock.now)

    func record() {
        self.instant.withLockedValue { $0 = .now }
    }

    var last: ContinuousClock.Instant { self.instant.withLockedValue { $0 } }
}
