import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Rooms and their local members on one chat node, linked to the other nodes through a ``Broker``.
///
/// A message broadcast on this node is delivered to its local members at once and published for the other
/// nodes; the broker's echo of it is ignored. Each envelope carries the origin's epoch and a per-room
/// sequence, so every member gets each message exactly once, in per-sender order, and a gap (a message the
/// broker lost) is counted as loss, never silent.
public actor Relay {
    /// Hands a message to one member. It must not block (write to a socket, queue, or drop), so that a slow
    /// member never delays the others.
    public typealias Delivery = @Sendable (ByteBuffer) -> Void

    public let node: String
    private let broker: any Broker
    private let logger: Logger
    /// Every table keyed by room loses the room's entry when its last local member leaves (``leave(_:member:)``),
    /// so rooms that come and go (unique names, forever) do not grow this node's memory; `unjoinedSequences` is
    /// the one exception, and it is capped.
    private var members: [Room: [String: Delivery]] = [:]
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
    /// Last sequence seen per room and origin node, with the origin's epoch for that room.
    private var seen: [Room: [String: (epoch: UInt64, sequence: UInt64)]] = [:]
    /// Messages other nodes sent that never arrived here.
    public private(set) var lost = 0
    /// Messages delivered to local members (each member counted once).
    public private(set) var delivered = 0

    /// Origins remembered per room at most: a legitimate cluster has a few nodes, but anyone who can publish to
    /// Redis could invent a new origin per message. Past the limit an arbitrary origin is forgotten; its next
    /// message then only starts a new baseline (neither delivered twice nor counted as loss in the normal case).
    static let maxOriginsPerRoom = 1_024
    /// Rooms without local members whose outgoing sequence is remembered, at most.
    static let maxUnjoinedRooms = 1_024

    private struct MemberRoom: Hashable {
        let member: String
        let room: Room
    }

    /// Per-member queues of members that joined with an async delivery.
    private var queues:
        [MemberRoom: (continuation: AsyncStream<ByteBuffer>.Continuation, consumer: Task<Void, Never>)] = [:]
    private let slowMemberDrops = DropCounter()
    private let lostCounter: Counter

    /// - Parameters:
    ///   - node: this node's id, unique in the cluster.
    ///   - broker: how envelopes reach the other nodes (``RedisBroker``, or ``InProcessBroker`` for one node).
    ///   - logger: for loss reports.
    public init(node: String, broker: any Broker, logger: Logger = Logger(label: "portico.relay")) {
        self.node = node
        self.broker = broker
        self.logger = logger
        self.lostCounter = Counter(label: "portico_relay_lost_messages_total", dimensions: [("node", node)])
    }

    /// Adds `member` to `room`; the first local member subscribes this node to the room.
    ///
    /// - Parameters:
    ///   - room: the room to join.
    ///   - member: an id unique in the cluster (used by `except:`).
    ///   - deliver: called with every message for the room.
    /// - Throws: ``RelayError/envelopeFieldTooLong`` when the room's name is longer than an envelope can carry.
    public func join(_ room: Room, member: String, deliver: @escaping Delivery) async throws {
        try Envelope.check(origin: self.node, room: room, except: [member], payloadLength: 0)
        let first = self.members[room]?.isEmpty ?? true
        self.members[room, default: [:]][member] = deliver
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
                if case .dropped = continuation.yield(payload) {
                    drops.add()
                    Counter(label: "portico_relay_slow_member_drops_total").increment()
                }
            }
        } catch {
            continuation.finish()  // ends the consumer task: nothing will ever leave this room for it
            throw error
        }
        self.queues[MemberRoom(member: member, room: room)] = (continuation, consumer)
    }

    /// Messages dropped because a member's queue was full.
    public var droppedForSlowMembers: Int { self.slowMemberDrops.count }

    /// Removes `member` from `room`; the last local member unsubscribes this node.
    public func leave(_ room: Room, member: String) async throws {
        guard self.members[room]?.removeValue(forKey: member) != nil else { return }
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
            self.seen[room] = nil
            if let sequence = self.sequences.removeValue(forKey: room) {
                self.rememberUnjoined(sequence, for: room)
            }
            try await self.broker.unsubscribe(room)
        }
        await self.broker.setPresence(room, members: remaining)
    }

    /// Removes `member` from every room it is in (a socket that closed).
    public func leaveAll(member: String) async {
        for room in self.members.keys where self.members[room]?[member] != nil {
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
        self.deliverLocally(payload, room: room, except: except)
        guard !localOnly else { return }
        let (epoch, sequence) = self.nextSequence(in: room)
        let envelope = Envelope(
            origin: self.node,
            epoch: epoch,
            sequence: sequence,
            room: room,
            except: except.sorted(),
            payload: payload
        )
        try await self.broker.publish(envelope)
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
        self.members.count + self.queues.count + self.sequences.count + self.seen.count
    }

    /// Rooms without local members whose outgoing sequence is remembered: at most ``maxUnjoinedRooms``.
    package var unjoinedSequenceCount: Int { self.unjoinedSequences.count }

    /// Delivers what other nodes publish; runs until the broker's inbound stream ends.
    public func run() async {
        for await envelope in self.broker.inbound {
            self.receive(envelope)
        }
    }

    func receive(_ envelope: Envelope) {
        guard envelope.origin != self.node else { return }  // our own echo: delivered at publish time
        // No local members: a message that was in flight when the room was left. Recording its sequence
        // would make the next join see a "gap" of messages that were never meant for this node.
        guard self.members[envelope.room] != nil else { return }
        guard let gap = Self.record(envelope, in: &self.seen[envelope.room, default: [:]]) else {
            return  // a duplicate: exactly once
        }
        if gap > 0 {
            // Sequences come off the wire: a broken or hostile publisher can make the gap as large as UInt64 allows.
            let (sum, overflow) = self.lost.addingReportingOverflow(Int(clamping: gap))
            self.lost = overflow ? .max : sum
            self.lostCounter.increment(by: Int64(clamping: gap))
            self.logger.warning(
                "relay lost messages",
                metadata: [
                    "portico.origin": "\(envelope.origin)", "portico.room": "\(envelope.room)",
                    "portico.lost": "\(gap)",
                ]
            )
        }
        self.deliverLocally(envelope.payload, room: envelope.room, except: Set(envelope.except))
    }

    /// Records `envelope` in its room's table of origins; returns the messages missing before it, or nil for
    /// a duplicate. The first message of an origin, or of a new epoch, is a baseline: no gap.
    private static func record(
        _ envelope: Envelope,
        in origins: inout [String: (epoch: UInt64, sequence: UInt64)]
    ) -> UInt64? {
        var gap: UInt64 = 0
        if let last = origins[envelope.origin] {
            if last.epoch == envelope.epoch {
                if envelope.sequence <= last.sequence { return nil }
                gap = envelope.sequence - last.sequence - 1  // no underflow: sequence > last.sequence
            }
        } else if origins.count >= Self.maxOriginsPerRoom, let any = origins.keys.first {
            origins[any] = nil
        }
        origins[envelope.origin] = (envelope.epoch, envelope.sequence)
        return gap
    }

    private func deliverLocally(_ payload: ByteBuffer, room: Room, except: Set<String>) {
        guard let members = self.members[room] else { return }
        for (member, deliver) in members where !except.contains(member) {
            deliver(payload)
            self.delivered += 1
        }
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

/// Counts drops from delivery closures, which run synchronously inside the relay.
final class DropCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func add() { self.value.withLockedValue { $0 += 1 } }
    var count: Int { self.value.withLockedValue { $0 } }
}
