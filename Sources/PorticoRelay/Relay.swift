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
    private let epoch: UInt64
    private let logger: Logger
    private var sequences: [Room: UInt64] = [:]
    private var members: [Room: [String: Delivery]] = [:]
    /// Last sequence seen per origin node and room, with the origin's epoch.
    private var seen: [OriginRoom: (epoch: UInt64, sequence: UInt64)] = [:]
    /// Messages other nodes sent that never arrived here.
    public private(set) var lost = 0
    /// Messages delivered to local members (each member counted once).
    public private(set) var delivered = 0

    private struct OriginRoom: Hashable {
        let origin: String
        let room: Room
    }

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
        self.epoch = UInt64.random(in: 1...UInt64.max)
        self.lostCounter = Counter(label: "portico_relay_lost_messages_total", dimensions: [("node", node)])
    }

    /// Adds `member` to `room`; the first local member subscribes this node to the room.
    ///
    /// - Parameters:
    ///   - room: the room to join.
    ///   - member: an id unique in the cluster (used by `except:`).
    ///   - deliver: called with every message for the room.
    public func join(_ room: Room, member: String, deliver: @escaping Delivery) async throws {
        let first = self.members[room]?.isEmpty ?? true
        self.members[room, default: [:]][member] = deliver
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
        try await self.join(room, member: member) { payload in
            if case .dropped = continuation.yield(payload) {
                drops.add()
                Counter(label: "portico_relay_slow_member_drops_total").increment()
            }
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
            self.members[room] = nil
            self.forgetSequences(of: room)
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
    public func broadcast(
        _ payload: ByteBuffer,
        to room: Room,
        except: Set<String> = [],
        localOnly: Bool = false
    )
        async throws
    {
        self.deliverLocally(payload, room: room, except: except)
        guard !localOnly else { return }
        let sequence = (self.sequences[room] ?? 0) + 1
        self.sequences[room] = sequence
        let envelope = Envelope(
            origin: self.node,
            epoch: self.epoch,
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
        let key = OriginRoom(origin: envelope.origin, room: envelope.room)
        if let last = self.seen[key], last.epoch == envelope.epoch {
            if envelope.sequence <= last.sequence { return }  // a duplicate: exactly once
            let gap = envelope.sequence - last.sequence - 1
            if gap > 0 {
                self.lost += Int(gap)
                self.lostCounter.increment(by: Int64(gap))
                self.logger.warning(
                    "relay lost messages",
                    metadata: [
                        "portico.origin": "\(envelope.origin)", "portico.room": "\(envelope.room)",
                        "portico.lost": "\(gap)",
                    ]
                )
            }
        }
        self.seen[key] = (envelope.epoch, envelope.sequence)
        self.deliverLocally(envelope.payload, room: envelope.room, except: Set(envelope.except))
    }

    private func deliverLocally(_ payload: ByteBuffer, room: Room, except: Set<String>) {
        guard let members = self.members[room] else { return }
        for (member, deliver) in members where !except.contains(member) {
            deliver(payload)
            self.delivered += 1
        }
    }

    private func forgetSequences(of room: Room) {
        self.seen = self.seen.filter { $0.key.room != room }
    }
}

/// Counts drops from delivery closures, which run synchronously inside the relay.
final class DropCounter: Sendable {
    private let value = NIOLockedValueBox(0)
    func add() { self.value.withLockedValue { $0 += 1 } }
    var count: Int { self.value.withLockedValue { $0 } }
}
