import CoreMetrics
import Logging
import NIOCore
import NIOPosix

/// Rooms and their local members on one chat node, linked to the other nodes through a ``Broker``.
///
/// A message broadcast on this node is delivered to its local members at once and published for the other
/// nodes; the broker's echo of it is ignored. Each envelope carries the origin's epoch and a per-room
/// sequence, so every member gets each message exactly once, in per-sender order, and a gap (a message the
/// broker lost) is counted as loss, never silent.
///
/// The actor is the control plane (join, leave, presence, sequences). Messages from other nodes never pass
/// through it: the broker hands them to the relay's data plane on an event loop (``eventLoop``), which frames
/// each message once and writes it to every local member, flushing each member once per read batch.
public actor Relay {
    /// Hands a message to one member. It must not block (write to a socket, queue, or drop), so that a slow
    /// member never delays the others.
    public typealias Delivery = @Sendable (ByteBuffer) -> Void

    public let node: String
    private let broker: any Broker
    private let logger: Logger
    let plane: RelayPlane
    /// Where the data plane runs: members on this loop are written to without a hop.
    public nonisolated var eventLoop: any EventLoop { self.plane.eventLoop }
    /// Every table keyed by room loses the room's entry when its last local member leaves (``leave(_:member:)``),
    /// so rooms that come and go (unique names, forever) do not grow this node's memory; `unjoinedSequences` is
    /// the one exception, and it is capped. The members themselves, and the sequences seen, are the plane's.
    private var members: [Room: Set<String>] = [:]
    /// The channel writers of members that joined as channels, with the number of rooms each is in.
    private var channels: [String: (writer: RelayMemberChannel, rooms: Int)] = [:]
    /// The epoch and last sequence this node published under, per room with local members.
    private var sequences: [Room: (epoch: UInt64, sequence: UInt64)] = [:]
    /// The same for rooms without local members that this node published into (a presence update after its
    /// last member left, a server-side announcer), so that receivers still see one sequence without gaps, and
    /// count real gaps. At most ``maxUnjoinedRooms``: past that the room remembered longest ago is forgotten,
    /// and its next message starts a fresh epoch (see `leave`).
    private var unjoinedSequences: [Room: (epoch: UInt64, sequence: UInt64, stamp: UInt64)] = [:]
    /// The rooms of `unjoinedSequences` in the order they came in, with the stamp of that entry: an entry whose
    /// room has since been joined (or forgotten and remembered again) is stale and skipped.
    private var unjoinedOrder = CircularBuffer<(room: Room, stamp: UInt64)>()
    private var unjoinedStamp: UInt64 = 0
    /// Messages other nodes sent that never arrived here.
    public var lost: Int {
        get async { (try? await self.plane.eventLoop.submit { self.plane.lost }.get()) ?? 0 }
    }
    /// Messages handed to local members (each member counted once).
    public var delivered: Int {
        get async { (try? await self.plane.eventLoop.submit { self.plane.delivered }.get()) ?? 0 }
    }

    /// Origins remembered per room at most (see ``RelayPlane/maxOriginsPerRoom``).
    static let maxOriginsPerRoom = RelayPlane.maxOriginsPerRoom
    /// Rooms without local members whose outgoing sequence is remembered, at most.
    static let maxUnjoinedRooms = 1_024

    private struct MemberRoom: Hashable {
        let member: String
        let room: Room
    }

    /// Per-member queues of members that joined with an async delivery.
    private var queues:
        [MemberRoom: (continuation: AsyncStream<ByteBuffer>.Continuation, consumer: Task<Void, Never>)] = [:]
    private let slowMemberDrops: SlowMemberDrops

    /// - Parameters:
    ///   - node: this node's id, unique in the cluster.
    ///   - broker: how envelopes reach the other nodes (``RedisBroker``, or ``InProcessBroker`` for one node).
    ///   - eventLoop: where the data plane runs (and the broker reads Redis); members on other loops get one hop
    ///     per loop per read batch. Default: one of `MultiThreadedEventLoopGroup.singleton`'s.
    ///   - logger: for loss reports.
    public init(
        node: String,
        broker: any Broker,
        eventLoop: (any EventLoop)? = nil,
        logger: Logger = Logger(label: "portico.relay")
    ) {
        self.node = node
        self.broker = broker
        self.logger = logger
        self.slowMemberDrops = SlowMemberDrops(node: node)
        let lostCounter = Counter(label: "portico_relay_lost_messages_total", dimensions: [("node", node)])
        lostCounter.increment(by: 0)  // exported at 0, not only after the first loss
        self.plane = RelayPlane(
            node: node,
            eventLoop: eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
        ) { origin, room, gap in
            lostCounter.increment(by: Int64(clamping: gap))
            logger.warning(
                "relay lost messages",
                metadata: ["portico.origin": "\(origin)", "portico.room": "\(room)", "portico.lost": "\(gap)"]
            )
        }
        broker.attach(InboundSink(plane: self.plane))
    }

    /// Adds `member` to `room`; the first local member subscribes this node to the room.
    ///
    /// - Parameters:
    ///   - room: the room to join.
    ///   - member: an id unique in the cluster (used by `except:`).
    ///   - deliver: called with every message for the room.
    /// - Throws: ``RelayError/envelopeFieldTooLong`` when the room's name is longer than an envelope can carry.
    public func join(_ room: Room, member: String, deliver: @escaping Delivery) async throws {
        try await self.join(room, member: member, as: .closure(deliver))
    }

    /// Adds a WebSocket `channel` (NIO-level entry): every message of `room` is written to it as one text frame,
    /// pre-encoded once per message for all members and written below the channel's `WebSocketFrameEncoder`
    /// (NIOWebSocket's, which must be in its pipeline), on the channel's event loop; the channel is flushed once
    /// per read batch. While the channel is not writable (its client does not read), messages for it are
    /// dropped and counted in ``droppedForSlowMembers``: a slow member never slows its room.
    ///
    /// - Parameters:
    ///   - room: the room to join.
    ///   - member: an id unique in the cluster; one channel is one member, in as many rooms as it joins.
    ///   - channel: the member's WebSocket channel.
    public func join(_ room: Room, member: String, channel: any Channel) async throws {
        guard !(self.members[room]?.contains(member) ?? false) else { return }
        let writer: RelayMemberChannel
        if let existing = self.channels[member] {
            writer = existing.writer
        } else {
            writer = try await RelayMemberChannel.make(channel, drops: self.slowMemberDrops)
        }
        try await self.join(room, member: member, as: .channel(writer))
        self.channels[member] = (writer, (self.channels[member]?.rooms ?? 0) + 1)
    }

    private func join(_ room: Room, member: String, as target: RelayPlane.Member) async throws {
        try Envelope.check(origin: self.node, room: room, except: [member], payloadLength: 0)
        let first = self.members[room]?.isEmpty ?? true
        self.members[room, default: []].insert(member)
        let plane = self.plane
        try await plane.eventLoop.submit { plane.add(target, id: member, to: room) }.get()
        if first, let sequence = self.unjoinedSequences.removeValue(forKey: room) {
            self.sequences[room] = (sequence.epoch, sequence.sequence)  // it goes on where it was: same epoch
        }
        if first { try await self.broker.subscribe(room) }
        await self.broker.setPresence(room, members: self.members[room]?.count ?? 0)
    }

    /// Adds a member whose delivery may be slow (it awaits, say, a socket write): messages for it wait in a
    /// queue of its own, so it never delays the other members. When its queue holds `bufferLimit` messages,
    /// the oldest is dropped to make room and counted in ``droppedForSlowMembers``.
    ///
    /// - Parameters:
    ///   - room: the room to join.
    ///   - member: an id unique in the cluster.
    ///   - bufferLimit: messages queued for this member at most. Default 1,000.
    ///   - deliver: called with each message, one at a time, in order.
    public func join(
        _ room: Room,
        member: String,
        bufferLimit: Int = 1_000,
        deliverAsync deliver: @escaping @Sendable (ByteBuffer) async -> Void
    ) async throws {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(bufferLimit))
        let consumer = Task {
            for await payload in stream { await deliver(payload) }
        }
        let drops = self.slowMemberDrops
        do {
            try await self.join(room, member: member) { payload in
                if case .dropped = continuation.yield(payload) { drops.add() }
            }
        } catch {
            continuation.finish()  // ends the consumer task: nothing will ever leave this room for it
            throw error
        }
        self.queues[MemberRoom(member: member, room: room)] = (continuation, consumer)
    }

    /// Messages dropped because a member's queue was full.
    public nonisolated var droppedForSlowMembers: Int { self.slowMemberDrops.count }

    /// Removes `member` from `room`; the last local member unsubscribes this node.
    public func leave(_ room: Room, member: String) async throws {
        guard self.members[room]?.remove(member) != nil else { return }
        let plane = self.plane
        try? await plane.eventLoop.submit { plane.remove(member, from: room) }.get()
        if let existing = self.channels[member] {
            self.channels[member] = existing.rooms > 1 ? (existing.writer, existing.rooms - 1) : nil
        }
        if let queue = self.queues.removeValue(forKey: MemberRoom(member: member, room: room)) {
            queue.continuation.finish()
        }
        let remaining = self.members[room]?.count ?? 0
        if remaining == 0 {
            // The room's state goes. Dropping the sequences received is safe: `receive` ignores the room until
            // a member joins again, and then the first message of each origin is a new baseline.
            // The sequence this node publishes under moves to the capped `unjoinedSequences`: a presence update
            // right after this, or a rejoin soon, goes on with the same epoch and sequence. Once it is evicted
            // from there, it goes with its epoch: the next message into the room starts a fresh epoch at
            // sequence 1, which receivers that kept members all along take as a new baseline, exactly as after
            // a node restart (a reused epoch from sequence 1 would have been dropped by them as duplicates).
            // What an epoch change gives up, here as at a restart: a message lost just before the first one of
            // the new epoch is not counted; and should the broker re-send, after a Redis reconnect, an
            // unconfirmed batch holding messages of both epochs, a receiver that already had some of them can
            // deliver those again, since it cannot tell which epoch is the older.
            self.members[room] = nil
            if let sequence = self.sequences.removeValue(forKey: room) {
                self.rememberUnjoined(sequence, for: room)
            }
            try await self.broker.unsubscribe(room)
        }
        await self.broker.setPresence(room, members: remaining)
    }

    /// Removes `member` from every room it is in (a socket that closed).
    public func leaveAll(member: String) async {
        for room in self.members.keys where self.members[room]?.contains(member) == true {
            try? await self.leave(room, member: member)
        }
    }

    /// Sends `payload` to every member of `room` on every node.
    ///
    /// - Parameters:
    ///   - payload: the message bytes, passed on without copies.
    ///   - room: where to.
    ///   - except: members that must not get it.
    ///   - localOnly: deliver on this node only.
    /// - Throws: ``RelayError/envelopeFieldTooLong`` (before delivering anything) when the room, this node's id
    ///   or a member in `except` is longer than an envelope can carry; the broker's errors.
    public func broadcast(
        _ payload: ByteBuffer,
        to room: Room,
        except: Set<String> = [],
        localOnly: Bool = false
    )
        async throws
    {
        try Envelope.check(origin: self.node, room: room, except: except, payloadLength: payload.readableBytes)
        // Backpressure before the sequence is taken: between taking it and publishing nothing suspends, so
        // envelopes reach the broker in sequence order however many broadcasts run at once.
        while !localOnly && self.broker.isBackedUp { await self.broker.waitForSpace() }
        let plane = self.plane
        let hasMembers = self.members[room] != nil
        let envelope = localOnly ? nil : self.envelope(payload, to: room, except: except)
        guard hasMembers || envelope != nil else { return }
        // One hop to the data plane: local delivery, then the publish, in order with everything else it does
        // (a broker that queues on this loop, as RedisBroker does, takes it there without another hop). The
        // caller does not wait for either; what can fail was checked above.
        let broker = self.broker
        let except = hasMembers ? Array(except) : []
        plane.eventLoop.execute {
            if hasMembers {
                plane.deliver(payload, to: room, except: except)
                plane.endOfBatch()
            }
            if let envelope { try? broker.publish(envelope) }
        }
    }

    /// Members of `room` across the cluster.
    public func memberCount(_ room: Room) async -> Int {
        await self.broker.presence(room)
    }

    /// Members of `room` on this node.
    public func localMemberCount(_ room: Room) -> Int {
        self.members[room]?.count ?? 0
    }

    public func liveNodes() async -> [String] {
        await self.broker.liveNodes()
    }

    /// Entries in the per-room tables (members, member queues, sequences sent and seen): 0 whenever no room has
    /// local members, however many rooms came and went.
    package var roomStateCount: Int {
        get async {
            let plane = self.plane
            let planeCount = (try? await plane.eventLoop.submit { plane.roomStateCount }.get()) ?? 0
            return self.members.count + self.queues.count + self.sequences.count + self.channels.count + planeCount
        }
    }

    /// Returns once the data plane has done everything handed to it so far (local deliveries, received
    /// envelopes): for tests and orderly shutdowns.
    package func settle() async {
        try? await self.plane.eventLoop.submit {}.get()
    }

    /// Rooms without local members whose outgoing sequence is remembered: at most ``maxUnjoinedRooms``.
    package var unjoinedSequenceCount: Int { self.unjoinedSequences.count }

    /// Hands `envelope` to the data plane as if the broker had received it, and waits until it was delivered.
    func receive(_ envelope: Envelope) async {
        let plane = self.plane
        try? await plane.eventLoop.submit {
            plane.receive(envelope)
            plane.endOfBatch()
        }.get()
    }

    /// The envelope of this node's next message into `room`.
    private func envelope(_ payload: ByteBuffer, to room: Room, except: Set<String>) -> Envelope {
        let (epoch, sequence) = self.nextSequence(in: room)
        return Envelope(
            origin: self.node,
            epoch: epoch,
            sequence: sequence,
            room: room,
            except: except.sorted(),
            payload: payload
        )
    }

    /// The epoch and sequence for this node's next message into `room`.
    private func nextSequence(in room: Room) -> (epoch: UInt64, sequence: UInt64) {
        if self.members[room] != nil {
            var entry = self.sequences[room] ?? (Self.newEpoch(), 0)
            entry.sequence += 1
            self.sequences[room] = entry
            return entry
        }
        if let entry = self.unjoinedSequences[room] {
            self.unjoinedSequences[room]?.sequence += 1
            return (entry.epoch, entry.sequence + 1)
        }
        let entry = (epoch: Self.newEpoch(), sequence: UInt64(1))
        self.rememberUnjoined(entry, for: room)
        return entry
    }

    /// Adds `room` (not in `unjoinedSequences` yet), forgetting the room remembered longest ago if full.
    private func rememberUnjoined(_ sequence: (epoch: UInt64, sequence: UInt64), for room: Room) {
        while self.unjoinedSequences.count >= Self.maxUnjoinedRooms, let oldest = self.unjoinedOrder.popFirst() {
            if self.unjoinedSequences[oldest.room]?.stamp == oldest.stamp {
                self.unjoinedSequences[oldest.room] = nil  // its next message starts a fresh epoch
            }
        }
        // Rooms joined again leave stale entries behind: sweep them before they outnumber the live ones.
        if self.unjoinedOrder.count >= 2 * Self.maxUnjoinedRooms {
            self.unjoinedOrder = CircularBuffer(
                self.unjoinedOrder.filter { self.unjoinedSequences[$0.room]?.stamp == $0.stamp }
            )
        }
        self.unjoinedStamp += 1
        self.unjoinedSequences[room] = (sequence.epoch, sequence.sequence, self.unjoinedStamp)
        self.unjoinedOrder.append((room, self.unjoinedStamp))
    }

    /// Random, so that a restarted node or a room rejoined is not mistaken for loss or duplicates.
    private static func newEpoch() -> UInt64 {
        UInt64.random(in: 1...UInt64.max)
    }
}
