import CoreMetrics
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Rooms and their local members on one chat node, linked to the other nodes through a ``Broker``.
///
/// A message broadcast on this node is delivered to its local members at once and published for the other
/// nodes; the broker's echo of it is ignored. Each envelope carries the origin's epoch and a per-room
/// sequence, so every member gets each message exactly once, in per-sender order, and a gap (a message the
/// broker lost) is counted as loss, never silent.
///
/// The actor is the control plane (join, leave, presence). Messages never pass through it: the broker hands
/// what other nodes send to the relay's data plane on an event loop (``eventLoop``), which checks sequences,
/// frames each message once and writes it to every local member, flushing each member once per read batch;
/// ``broadcast(_:to:except:localOnly:)`` is one hop to that loop, where the message is delivered locally,
/// takes its room's next sequence and is queued for the broker (``broadcastOnEventLoop(_:to:except:localOnly:)``
/// is no hop, for handlers already there).
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
    /// Member ids per room, for the control plane's decisions (subscribe, unsubscribe, presence). Every table
    /// keyed by room, here and on the plane, loses the room's entry when its last local member leaves
    /// (``leave(_:member:)``), so rooms that come and go do not grow this node's memory; the outgoing
    /// sequences of member-less rooms are the one exception, and they are capped (``OutgoingSequences``).
    private var members: [Room: Set<String>] = [:]
    /// The channel writers of members that joined as channels, with the number of rooms each is in.
    private var channels: [String: (writer: RelayMemberChannel, rooms: Int)] = [:]
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
    static let maxUnjoinedRooms = OutgoingSequences.maxUnjoinedRooms

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
            eventLoop: eventLoop ?? MultiThreadedEventLoopGroup.singleton.next(),
            broker: broker
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
        var writer = self.channels[member]?.writer
        if writer == nil { writer = try await RelayMemberChannel.make(channel, drops: self.slowMemberDrops) }
        // After that await: joined meanwhile, or the member's writer made meanwhile by a concurrent join.
        guard !(self.members[room]?.contains(member) ?? false), let made = writer else { return }
        let entry = (writer: self.channels[member]?.writer ?? made, rooms: (self.channels[member]?.rooms ?? 0) + 1)
        self.channels[member] = entry  // counted before the join's awaits, so that a leave meanwhile finds it
        do {
            try await self.join(room, member: member, as: .channel(entry.writer))
        } catch {
            if let current = self.channels[member] {
                self.channels[member] = current.rooms > 1 ? (current.writer, current.rooms - 1) : nil
            }
            throw error
        }
    }

    private func join(_ room: Room, member: String, as target: RelayPlane.Member) async throws {
        try Envelope.check(origin: self.node, room: room, except: [member], payloadLength: 0)
        let first = self.members[room]?.isEmpty ?? true
        self.members[room, default: []].insert(member)
        let plane = self.plane
        try await plane.eventLoop.submit { plane.add(target, id: member, to: room) }.get()
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
            // The room's state goes (the plane dropped what it kept when its last member left there).
            self.members[room] = nil
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
    public nonisolated func broadcast(
        _ payload: ByteBuffer,
        to room: Room,
        except: Set<String> = [],
        localOnly: Bool = false
    )
        async throws
    {
        try Envelope.check(origin: self.node, room: room, except: except, payloadLength: payload.readableBytes)
        // Not through the actor: the data plane takes the sequence, so envelopes reach the broker in sequence
        // order. Backpressure (a full queue while Redis is reachable) is waited for here, before the hop.
        while !localOnly && self.broker.isBackedUp { await self.broker.waitForSpace() }
        let plane = self.plane
        if plane.pendingBroadcasts.load(ordering: .relaxed) >= RelayPlane.maxPendingBroadcasts {
            try? await plane.eventLoop.submit {}.get()  // the loop is behind: wait until it caught up to here
        }
        // One hop to the data plane: local delivery, the sequence, the publish, in order with everything else
        // it does (a broker that queues on that loop, as RedisBroker does, takes it without another hop).
        Self.hand(payload, to: room, except: Array(except), localOnly: localOnly, over: plane)
    }

    /// Hands a broadcast to the data plane from another thread: one `execute`, counted in `pendingBroadcasts`
    /// until it runs.
    private static func hand(
        _ payload: ByteBuffer,
        to room: Room,
        except: [String],
        localOnly: Bool,
        over plane: RelayPlane
    ) {
        plane.pendingBroadcasts.add(1, ordering: .relaxed)
        plane.eventLoop.execute {
            plane.pendingBroadcasts.subtract(1, ordering: .relaxed)
            plane.broadcast(payload, to: room, except: except, localOnly: localOnly)
            plane.scheduleEndOfBatch()
        }
    }

    /// Sends `payload` to every member of `room` on every node, from a handler already on ``eventLoop`` (the
    /// NIO-level entry): no hop at all; members written to are flushed once at the end of this loop tick.
    /// It never waits: check ``isBackedUp`` and stop reading while it is true (the async
    /// ``broadcast(_:to:except:localOnly:)`` waits by itself).
    ///
    /// - Throws: ``RelayError/envelopeFieldTooLong`` as ``broadcast(_:to:except:localOnly:)`` does.
    public nonisolated func broadcastOnEventLoop(
        _ payload: ByteBuffer,
        to room: Room,
        except: [String] = [],
        localOnly: Bool = false
    ) throws {
        self.plane.eventLoop.preconditionInEventLoop()
        try Envelope.check(origin: self.node, room: room, except: except, payloadLength: payload.readableBytes)
        self.plane.broadcast(payload, to: room, except: except, localOnly: localOnly)
        self.plane.scheduleEndOfBatch()
    }

    /// Sends `payload` to every member of `room` on every node from any event loop, without waiting: inline on
    /// ``eventLoop``, one hop from another loop. Returns false, having done nothing, when the caller should take
    /// the waiting path instead (``broadcast(_:to:except:localOnly:)``): the broker is backed up, or too many
    /// broadcasts are already on their way to the data plane.
    ///
    /// - Throws: ``RelayError/envelopeFieldTooLong`` as ``broadcast(_:to:except:localOnly:)`` does.
    public nonisolated func tryBroadcast(_ payload: ByteBuffer, to room: Room) throws -> Bool {
        let plane = self.plane
        guard !self.broker.isBackedUp,
            plane.pendingBroadcasts.load(ordering: .relaxed) < RelayPlane.maxPendingBroadcasts
        else { return false }
        if plane.eventLoop.inEventLoop {
            try self.broadcastOnEventLoop(payload, to: room)
        } else {
            try Envelope.check(origin: self.node, room: room, except: [String](), payloadLength: payload.readableBytes)
            Self.hand(payload, to: room, except: [], localOnly: false, over: plane)
        }
        return true
    }

    /// The broker's queue is full while it can send: publishers should wait (the async entry does).
    public nonisolated var isBackedUp: Bool { self.broker.isBackedUp }

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

    /// Entries in the per-room tables (members, member queues, channel writers, and the plane's): 0 whenever no
    /// room has local members, however many rooms came and went.
    package var roomStateCount: Int {
        get async {
            let plane = self.plane
            let planeCount = (try? await plane.eventLoop.submit { plane.roomStateCount }.get()) ?? 0
            return self.members.count + self.queues.count + self.channels.count + planeCount
        }
    }

    /// Returns once the data plane has done everything handed to it so far (local deliveries, received
    /// envelopes): for tests and orderly shutdowns.
    package func settle() async {
        try? await self.plane.eventLoop.submit {}.get()
    }

    /// Rooms without local members whose outgoing sequence is remembered: at most ``maxUnjoinedRooms``.
    package var unjoinedSequenceCount: Int {
        get async {
            let plane = self.plane
            return (try? await plane.eventLoop.submit { plane.unjoinedSequenceCount }.get()) ?? 0
        }
    }

    /// Hands `envelope` to the data plane as if the broker had received it, and waits until it was delivered.
    func receive(_ envelope: Envelope) async {
        let plane = self.plane
        try? await plane.eventLoop.submit {
            plane.receive(envelope)
            plane.endOfBatch()
        }.get()
    }
}
