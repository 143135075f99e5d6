import Logging
import NIOCore
import PorticoRESP
import Synchronization

/// A ``RedisBroker``'s outgoing messages as lanes of ``PublishQueue``, on the relay's event loop: one lane for
/// one Redis, one lane per master over a Redis Cluster, so that a master that is down (its batches failing,
/// its lane buffering and dropping the oldest) never holds up rooms whose slots other masters serve.
///
/// A room's messages all go through one lane, so they keep their order: when the slot map changes (a failover,
/// a slot moved), a room stays on the lane that still holds messages of it until that lane has sent them all,
/// and only then follows its slot to its new master's lane. (Which master a batch reaches is the slot map's
/// business either way: a lane only orders and isolates.)
///
/// Backpressure is for all rooms at once (``isFull``: one lane at its limit while its master takes publishes);
/// a lane whose batches fail counts as away and drops instead, so a dead master holds publishers up for at most
/// one command deadline.
///
/// `@unchecked Sendable`: every stored `var` is read and written only on `eventLoop` (every method
/// but the atomics' readers asserts it); the atomics are the only state read elsewhere.
///
/// Stored `var`s are `@exclusivity(unchecked)`: only its event loop touches them, and never two accesses to one at
/// once (the tests ran with the runtime's checks on first); those checks were about 13% of the relay's CPU (perf,
/// BENCHMARKS.md).
final class PublishLanes: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let limit: Int
    private let logger: Logger
    private let channelName: @Sendable (Room) -> ByteBuffer
    private let onDrop: @Sendable () -> Void
    /// Whether lanes follow a cluster's slot map; otherwise everything goes through one lane.
    private let sharded: Bool

    /// The lanes by master (nil: the only lane of one Redis, or rooms whose slot has no known owner yet).
    @exclusivity(unchecked) private var lanes: [RedisClusterClient.NodeAddress?: PublishQueue] = [:]
    /// The owner of each slot, as the cluster link last read it (empty until it did).
    @exclusivity(unchecked) private var owners: [RedisClusterClient.NodeAddress?] = []
    /// The last room published into and its lane: a busy room's slot is hashed once, not per message.
    @exclusivity(unchecked) private var last: (room: Room, lane: PublishQueue)?
    /// Rooms that had messages queued when the slot map last changed, with their lane then: they stay on it
    /// while it holds anything (so nothing of theirs overtakes what is queued).
    @exclusivity(unchecked) private var stay: [Room: PublishQueue] = [:]
    @exclusivity(unchecked) private var target: (any PublishTarget)?
    @exclusivity(unchecked) private var connectedToken = 0
    /// Between ``markConnected()`` and ``attach(_:ifStill:)``: lanes made meanwhile are held like the rest.
    @exclusivity(unchecked) private var marked = false

    private let fullLanes = Atomic<Int>(0)
    private let droppedCount = Atomic<Int>(0)

    init(
        eventLoop: any EventLoop,
        limit: Int,
        sharded: Bool,
        logger: Logger,
        channelName: @escaping @Sendable (Room) -> ByteBuffer,
        onDrop: @escaping @Sendable () -> Void
    ) {
        self.eventLoop = eventLoop
        self.limit = limit
        self.sharded = sharded
        self.logger = logger
        self.channelName = channelName
        self.onDrop = onDrop
    }

    /// Messages dropped because a lane was full while its Redis was away (any thread).
    var dropped: Int { self.droppedCount.load(ordering: .relaxed) }

    /// Whether publishers should wait: a lane whose Redis takes publishes is full (any thread).
    var isFull: Bool { self.fullLanes.load(ordering: .relaxed) > 0 }

    /// Waits until no lane is full (any thread; the slow path only).
    func waitForSpace() async {
        while self.isFull {
            let full = try? await self.eventLoop.submit { self.lanes.values.filter(\.isFull) }.get()
            for lane in full ?? [] { await lane.waitForSpace() }
        }
    }

    // MARK: On the event loop

    /// Queues an encoded envelope for `room` in its lane.
    func enqueue(envelope: ByteBuffer, room: Room) {
        self.eventLoop.assertInEventLoop()
        if let last = self.last, last.room == room {
            last.lane.enqueue(envelope: envelope, room: room)
            return
        }
        let lane = self.lane(for: room)
        self.last = (room, lane)
        lane.enqueue(envelope: envelope, room: room)
    }

    /// A cluster link read the slot map: rooms published from now on go to the lane of their slot's owner.
    func setOwners(_ owners: [RedisClusterClient.NodeAddress?]) {
        self.eventLoop.assertInEventLoop()
        self.owners = owners
        self.last = nil
        self.stay = [:]
        for lane in self.lanes.values {
            for room in lane.roomsPending() { self.stay[room] = lane }
        }
    }

    /// Rooms with messages waiting, in any lane (for the resubscription wait after an outage).
    func roomsPending() -> Set<Room> {
        self.eventLoop.assertInEventLoop()
        return self.lanes.values.reduce(into: []) { $0.formUnion($1.roomsPending()) }
    }

    /// See ``PublishQueue/markConnected()``: every lane holds on until ``attach(_:ifStill:)`` with this token.
    func markConnected() -> Int {
        self.eventLoop.assertInEventLoop()
        self.marked = true
        for lane in self.lanes.values { _ = lane.markConnected() }
        return self.connectedToken
    }

    /// Every lane sends through `target` from now on (a cluster link routes each batch by slot); not if
    /// `token` is stale.
    func attach(_ target: any PublishTarget, ifStill token: Int? = nil) {
        self.eventLoop.assertInEventLoop()
        if let token, token != self.connectedToken { return }
        self.marked = false
        self.target = target
        for lane in self.lanes.values { lane.attach(target) }
    }

    /// Redis is away: every lane buffers; what was in flight goes again after the next attach.
    func detach() {
        self.eventLoop.assertInEventLoop()
        self.connectedToken += 1
        self.marked = false
        self.target = nil
        for lane in self.lanes.values { lane.detach() }
    }

    /// Messages queued or unconfirmed in every lane (tests).
    var count: Int {
        self.eventLoop.assertInEventLoop()
        return self.lanes.values.reduce(0) { $0 + $1.count }
    }

    private func lane(for room: Room) -> PublishQueue {
        if !self.stay.isEmpty, let lane = self.stay[room] {
            if lane.count > 0 { return lane }
            self.stay[room] = nil  // sent: the room follows its slot from now on
        }
        var owner: RedisClusterClient.NodeAddress?
        if self.sharded, !self.owners.isEmpty {
            let channel = self.channelName(room)
            let slot = channel.withUnsafeReadableBytes { RedisClusterSlot.of(bytes: $0.bindMemory(to: UInt8.self)) }
            owner = self.owners[slot]
        }
        if let lane = self.lanes[owner] { return lane }
        // Weak: a lane's last completions may come after this is gone.
        let lane = PublishQueue(
            eventLoop: self.eventLoop,
            limit: self.limit,
            logger: self.logger,
            channelName: self.channelName,
            onDrop: { [weak self] in
                guard let self else { return }
                self.droppedCount.add(1, ordering: .relaxed)
                self.onDrop()
            },
            onFullChange: { [weak self] full in self?.fullLanes.add(full ? 1 : -1, ordering: .relaxed) }
        )
        // A lane made while connected starts connected; one made during a reconnect's wait, held like the rest.
        if let target = self.target {
            lane.attach(target)
        } else if self.marked {
            _ = lane.markConnected()
        }
        self.lanes[owner] = lane
        return lane
    }
}
