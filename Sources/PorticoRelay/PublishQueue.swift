import Logging
import NIOCore
import Synchronization

/// Where a ``PublishQueue`` sends its batches: the publisher connection(s) of the current Redis link.
protocol PublishTarget: Sendable {
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
final class PublishQueue: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let limit: Int
    private let logger: Logger
    private let onDrop: @Sendable () -> Void

    private var pending = CircularBuffer<(channel: ByteBuffer, envelope: ByteBuffer)>()
    /// Rooms of `pending`, for the resubscription wait after an outage.
    private var pendingRooms = CircularBuffer<Room>()
    /// Entries at the front of `pending` written to the current target and not confirmed yet.
    private var inFlight = 0
    private var target: (any PublishTarget)?
    /// Bumped whenever the target changes: completions of batches sent to an older one are ignored.
    private var generation = 0
    private var flushScheduled = false
    private var spaceWaiters: [EventLoopPromise<Void>] = []

    /// Queued messages, for publishers on other threads deciding whether to wait.
    private let depth = Atomic<Int>(0)
    /// Connected (also while a reconnect waits for the other nodes to resubscribe): a full queue waits.
    private let connected = Atomic<Bool>(false)
    private let droppedCount = Atomic<Int>(0)

    /// The most messages in one batch.
    static let batchLimit = 1_024

    init(eventLoop: any EventLoop, limit: Int, logger: Logger, onDrop: @escaping @Sendable () -> Void) {
        self.eventLoop = eventLoop
        self.limit = limit
        self.logger = logger
        self.onDrop = onDrop
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

    /// Queues an encoded envelope for `channel`.
    func enqueue(channel: ByteBuffer, envelope: ByteBuffer, room: Room) {
        self.eventLoop.assertInEventLoop()
        if self.pending.count >= self.limit && self.inFlight < self.pending.count && !self.connectedNow {
            // Only while Redis is away: the oldest unsent message goes to make room (never one in flight).
            self.pending.remove(at: self.pending.index(self.pending.startIndex, offsetBy: self.inFlight))
            self.pendingRooms.remove(at: self.pendingRooms.index(self.pendingRooms.startIndex, offsetBy: self.inFlight))
            let dropped = self.droppedCount.add(1, ordering: .relaxed).newValue
            self.onDrop()
            if dropped == 1 || dropped % 1000 == 0 {
                self.logger.warning(
                    "relay publish buffer full: dropping oldest",
                    metadata: ["portico.dropped": "\(dropped)"]
                )
            }
        }
        self.pending.append((channel, envelope))
        self.pendingRooms.append(room)
        self.depth.store(self.pending.count, ordering: .relaxed)
        self.scheduleFlush()
    }

    private var connectedNow: Bool { self.connected.load(ordering: .relaxed) }

    /// Rooms with messages waiting (for the resubscription wait).
    func roomsPending() -> Set<Room> {
        self.eventLoop.assertInEventLoop()
        return Set(self.pendingRooms)
    }

    /// Redis is reachable again, but the queue holds on until ``attach(_:)`` (publishers still wait when full).
    func markConnected() {
        self.eventLoop.assertInEventLoop()
        self.connected.store(true, ordering: .relaxed)
    }

    /// Sends through `target` from now on, starting with whatever is unconfirmed.
    func attach(_ target: any PublishTarget) {
        self.eventLoop.assertInEventLoop()
        self.generation += 1
        self.target = target
        self.inFlight = 0
        self.connected.store(true, ordering: .relaxed)
        self.scheduleFlush()
    }

    /// Redis is away: what was in flight is unconfirmed and goes again after the next ``attach(_:)``.
    func detach() {
        self.eventLoop.assertInEventLoop()
        self.generation += 1
        self.target = nil
        self.inFlight = 0
        self.connected.store(false, ordering: .relaxed)
        self.wakeWaiters()  // they queue now, and drop the oldest when full
    }

    private func scheduleFlush() {
        guard !self.flushScheduled, self.target != nil, self.inFlight < self.pending.count else { return }
        self.flushScheduled = true
        // After everything else this tick has to do: what it publishes goes in the same batch.
        self.eventLoop.execute { self.flush() }
    }

    private func flush() {
        self.flushScheduled = false
        guard let target = self.target else { return }
        while self.inFlight < self.pending.count {
            let count = min(Self.batchLimit, self.pending.count - self.inFlight)
            var batch: [(channel: ByteBuffer, payload: ByteBuffer)] = []
            batch.reserveCapacity(count)
            for offset in self.inFlight..<(self.inFlight + count) {
                let entry = self.pending[offset: offset]
                batch.append((entry.channel, entry.envelope))
            }
            self.inFlight += count
            let generation = self.generation
            target.publish(batch, on: self.eventLoop).hop(to: self.eventLoop).whenComplete { result in
                self.confirm(count, generation: generation, result: result)
            }
        }
    }

    private func confirm(_ count: Int, generation: Int, result: Result<Void, any Error>) {
        guard generation == self.generation else { return }  // sent to a connection since replaced
        switch result {
        case .success:
            self.pending.removeFirst(count)
            self.pendingRooms.removeFirst(count)
            self.inFlight -= count
            self.depth.store(self.pending.count, ordering: .relaxed)
            if self.pending.count < self.limit { self.wakeWaiters() }
        case .failure:
            // The connection failed: everything unconfirmed waits for the next one (the broker reconnects).
            self.generation += 1
            self.target = nil
            self.inFlight = 0
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
