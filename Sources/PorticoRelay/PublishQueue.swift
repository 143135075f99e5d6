import Logging
import NIOCore
import Synchronization

/// Where a ``PublishQueue`` sends its batches: the publisher connection(s) of the current Redis link.
protocol PublishTarget: Sendable {
    /// Batches sent back to back reach Redis, and complete, in the order they were sent (one pipelined
    /// connection). When false, the queue sends one batch at a time.
    var keepsOrder: Bool { get }

    /// Publishes `batch` pipelined, in order; the future succeeds once Redis took every message.
    func publish(
        _ batch: [(channel: ByteBuffer, payload: ByteBuffer)],
        on eventLoop: any EventLoop
    )
        -> EventLoopFuture<Void>
}

/// A ``RedisBroker``'s outgoing messages, on the relay's event loop: envelopes are queued as they are
/// published, written in one batch per loop tick (one write, one promise per batch: the replies are counted),
/// and kept until Redis confirmed them, so that the unconfirmed rest goes again over the next connection
/// (receivers drop what they already had by its sequence). While Redis is away the queue buffers, bounded:
/// the oldest is dropped, and counted, to make room. While connected, a full queue makes publishers wait.
///
/// `@unchecked Sendable`: every stored `var` is read and written only on `eventLoop` (every method but the
/// `nonisolated`-style readers of the atomics asserts it); the atomics are the only state read elsewhere.
///
/// Stored `var`s are `@exclusivity(unchecked)`: only its event loop touches them, and never two accesses to one at
/// once (the tests ran with the runtime's checks on first); those checks were about 13% of the relay's CPU (perf,
/// BENCHMARKS.md).
final class PublishQueue: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let limit: Int
    private let logger: Logger
    private let onDrop: @Sendable () -> Void
    /// Told, on the loop, whenever ``isFull`` turns true or false (``PublishLanes`` counts its full lanes).
    private let onFullChange: @Sendable (Bool) -> Void
    @exclusivity(unchecked) private var reportedFull = false

    /// Queued envelopes with their room (for the resubscription wait after an outage) and its channel.
    @exclusivity(unchecked)
    private var pending = CircularBuffer<(room: Room, channel: ByteBuffer, envelope: ByteBuffer)>()
    /// A room's Redis channel name, as bytes.
    private let channelName: @Sendable (Room) -> ByteBuffer
    /// The last room published into and its channel: a busy room's name is built once, not per message.
    @exclusivity(unchecked) private var lastChannel: (room: Room, name: ByteBuffer)?
    /// Entries at the front of `pending` written to the current target and not confirmed yet.
    @exclusivity(unchecked) private var inFlight = 0
    /// The batches in flight, oldest first: how many entries each holds and whether Redis confirmed it. Entries
    /// leave `pending` only when every batch before theirs is confirmed too.
    @exclusivity(unchecked) private var batches = CircularBuffer<(count: Int, confirmed: Bool)>()
    /// The number of batches confirmed and gone from `batches` in this generation: a batch's id minus this is
    /// its position in `batches`.
    @exclusivity(unchecked) private var batchBase = 0
    @exclusivity(unchecked) private var target: (any PublishTarget)?
    /// Bumped whenever the target changes: completions of batches sent to an older one are ignored.
    @exclusivity(unchecked) private var generation = 0
    @exclusivity(unchecked) private var flushScheduled = false
    /// A batch failed: nothing is sent until the pause after it is over (new messages do not cut it short).
    @exclusivity(unchecked) private var pausedAfterFailure = false
    @exclusivity(unchecked) private var spaceWaiters: [EventLoopPromise<Void>] = []

    /// Queued messages, for publishers on other threads deciding whether to wait.
    private let depth = Atomic<Int>(0)
    /// Connected (also while a reconnect waits for the other nodes to resubscribe): a full queue waits.
    private let connected = Atomic<Bool>(false)
    private let droppedCount = Atomic<Int>(0)

    /// The most messages in one batch.
    static let batchLimit = 1_024

    init(
        eventLoop: any EventLoop,
        limit: Int,
        logger: Logger,
        channelName: @escaping @Sendable (Room) -> ByteBuffer,
        onDrop: @escaping @Sendable () -> Void,
        onFullChange: @escaping @Sendable (Bool) -> Void = { _ in }
    ) {
        self.eventLoop = eventLoop
        self.limit = limit
        self.logger = logger
        self.channelName = channelName
        self.onDrop = onDrop
        self.onFullChange = onFullChange
    }

    /// Messages dropped because the queue was full while Redis was away.
    var dropped: Int { self.droppedCount.load(ordering: .relaxed) }

    /// Whether a publisher should wait before queueing more (any thread).
    var isFull: Bool {
        self.connected.load(ordering: .relaxed) && self.depth.load(ordering: .relaxed) >= self.limit
    }

    /// Waits until the queue has room or Redis is away (any thread; the slow path only).
    func waitForSpace() async {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.eventLoop.execute {
            if self.isFull { self.spaceWaiters.append(promise) } else { promise.succeed() }
        }
        try? await promise.futureResult.get()
    }

    // MARK: On the event loop

    /// Queues an encoded envelope for `room`'s channel.
    func enqueue(envelope: ByteBuffer, room: Room) {
        self.eventLoop.assertInEventLoop()
        if self.pending.count >= self.limit && self.inFlight < self.pending.count && !self.connectedNow {
            // Only while Redis is away: the oldest unsent message goes to make room (never one in flight).
            self.pending.remove(at: self.pending.index(self.pending.startIndex, offsetBy: self.inFlight))
            let dropped = self.droppedCount.add(1, ordering: .relaxed).newValue
            self.onDrop()
            if dropped == 1 || dropped % 1000 == 0 {
                self.logger.warning(
                    "relay publish buffer full: dropping oldest",
                    metadata: ["portico.dropped": "\(dropped)"]
                )
            }
        }
        if self.lastChannel?.room != room { self.lastChannel = (room, self.channelName(room)) }
        self.pending.append((room, self.lastChannel!.name, envelope))
        self.storeDepth()
        self.scheduleFlush()
    }

    private var connectedNow: Bool { self.connected.load(ordering: .relaxed) }

    private func storeDepth() {
        self.depth.store(self.pending.count, ordering: .relaxed)
        self.reportFullness()
    }

    private func storeConnected(_ connected: Bool) {
        self.connected.store(connected, ordering: .relaxed)
        self.reportFullness()
    }

    private func reportFullness() {
        let full = self.isFull
        guard full != self.reportedFull else { return }
        self.reportedFull = full
        self.onFullChange(full)
    }

    /// Rooms with messages waiting (for the resubscription wait).
    func roomsPending() -> Set<Room> {
        self.eventLoop.assertInEventLoop()
        return Set(self.pending.lazy.map(\.room))
    }

    /// Redis is reachable again, but the queue holds on until ``attach(_:ifStill:)`` (publishers still wait
    /// when full). Returns the token that attach must present: a ``detach()`` in between makes it stale.
    func markConnected() -> Int {
        self.eventLoop.assertInEventLoop()
        self.storeConnected(true)
        return self.generation
    }

    /// Sends through `target` from now on, starting with whatever is unconfirmed; not if `token` (from
    /// ``markConnected()``) is stale, i.e. the connection was lost meanwhile.
    func attach(_ target: any PublishTarget, ifStill token: Int? = nil) {
        self.eventLoop.assertInEventLoop()
        if let token, token != self.generation { return }
        self.restart()
        self.target = target
        self.storeConnected(true)
        self.scheduleFlush()
    }

    /// Redis is away: what was in flight is unconfirmed and goes again after the next ``attach(_:ifStill:)``.
    func detach() {
        self.eventLoop.assertInEventLoop()
        self.restart()
        self.target = nil
        self.storeConnected(false)
        self.wakeWaiters()  // they queue now, and drop the oldest when full
    }

    /// Forgets what is in flight (it is unconfirmed, and goes again); completions from before are ignored.
    private func restart() {
        self.generation += 1
        self.pausedAfterFailure = false
        self.inFlight = 0
        self.batches.removeAll()
        self.batchBase = 0
    }

    private func scheduleFlush() {
        guard !self.flushScheduled, !self.pausedAfterFailure, self.target != nil, self.inFlight < self.pending.count
        else { return }
        self.flushScheduled = true
        // After everything else this tick has to do: what it publishes goes in the same batch.
        self.eventLoop.execute { self.flush() }
    }

    private func flush() {
        self.flushScheduled = false
        guard let target = self.target else { return }
        while self.inFlight < self.pending.count, target.keepsOrder || self.batches.isEmpty {
            let count = min(Self.batchLimit, self.pending.count - self.inFlight)
            var batch: [(channel: ByteBuffer, payload: ByteBuffer)] = []
            batch.reserveCapacity(count)
            for offset in self.inFlight..<(self.inFlight + count) {
                let entry = self.pending[offset: offset]
                batch.append((entry.channel, entry.envelope))
            }
            self.inFlight += count
            let generation = self.generation
            let id = self.batchBase + self.batches.count
            self.batches.append((count, false))
            target.publish(batch, on: self.eventLoop).hop(to: self.eventLoop).whenComplete { result in
                self.confirm(id, generation: generation, result: result)
            }
        }
    }

    private func confirm(_ id: Int, generation: Int, result: Result<Void, any Error>) {
        guard generation == self.generation else { return }  // sent before a restart: it goes again anyway
        switch result {
        case .success:
            self.batches[self.batches.index(self.batches.startIndex, offsetBy: id - self.batchBase)].confirmed = true
            // Entries go in order: only once every batch before is confirmed too.
            while let first = self.batches.first, first.confirmed {
                self.batches.removeFirst()
                self.batchBase += 1
                self.pending.removeFirst(first.count)
                self.inFlight -= first.count
            }
            self.storeDepth()
            // A batch went through: Redis takes publishes (again), and a full queue makes publishers wait.
            if !self.connectedNow { self.storeConnected(true) }
            if self.pending.count < self.limit { self.wakeWaiters() }
            self.scheduleFlush()  // a target that takes one batch at a time is free again
        case .failure:
            // An error reply, or the connection failed. Everything unconfirmed goes again (receivers drop what
            // they already had by its sequence): over this target after a pause, unless the broker replaces it
            // meanwhile (a lost connection makes it reconnect, and detach and attach). Until a batch goes
            // through, Redis counts as away: publishers do not wait on it, the oldest is dropped when full.
            self.restart()
            self.storeConnected(false)
            self.wakeWaiters()
            self.pausedAfterFailure = true
            let token = self.generation
            self.eventLoop.scheduleTask(in: .milliseconds(100)) {
                guard token == self.generation else { return }
                self.pausedAfterFailure = false
                self.scheduleFlush()
            }
        }
    }

    private func wakeWaiters() {
        let waiters = self.spaceWaiters
        self.spaceWaiters = []
        for waiter in waiters { waiter.succeed() }
    }

    /// Messages queued or unconfirmed (tests).
    var count: Int { self.depth.load(ordering: .relaxed) }
}
