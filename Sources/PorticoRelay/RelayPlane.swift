import CoreMetrics
import NIOCore
import NIOWebSocket
import Synchronization

/// The relay's data plane: the members of every room this node has, and the sequences seen per room and origin,
/// confined to one event loop. Envelopes from the broker arrive here on that loop in read batches, without a
/// task, an actor or a stream in between; a message is framed once and written to every member, and each
/// member touched by a batch is flushed once at its end. Members on other event loops get one hop per loop per
/// batch. The ``Relay`` actor (the control plane) changes membership here between batches.
///
/// `@unchecked Sendable`: every stored `var` is read and written only on `eventLoop` (each entry point below
/// runs there, checked by `assertInEventLoop`); the `let`s are immutable and Sendable.
///
/// Stored `var`s are `@exclusivity(unchecked)`: only its event loop touches them, and never two accesses to one at
/// once (the tests ran with the runtime's checks on first); those checks were about 13% of the relay's CPU (perf,
/// BENCHMARKS.md).
final class RelayPlane: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let node: String
    /// Where this node's messages go to the other nodes.
    private let broker: any Broker
    /// Called on the plane's loop with each gap: origin, room and how many messages went missing.
    private let onLoss: @Sendable (String, Room, UInt64) -> Void

    private struct RoomState {
        var members: [String: Member] = [:]
        /// Last sequence seen per origin node, with the origin's epoch for this room.
        var seen: [String: (epoch: UInt64, sequence: UInt64)] = [:]
    }

    enum Member {
        /// A closure that takes the payload (it must not block).
        case closure(Relay.Delivery)
        /// A WebSocket channel that gets each payload as one text frame.
        case channel(RelayMemberChannel)
    }

    @exclusivity(unchecked) private var rooms: [Room: RoomState] = [:]
    /// Broadcasts handed to this loop from elsewhere and not run yet (any thread): publishers wait past
    /// ``maxPendingBroadcasts``, so a flood cannot queue up on a busy loop without bound.
    let pendingBroadcasts = Atomic<Int>(0)
    static let maxPendingBroadcasts = 4_096
    /// The epoch and sequence this node publishes under, per room.
    @exclusivity(unchecked) private var sequences = OutgoingSequences()
    @exclusivity(unchecked) private var endOfBatchScheduled = false
    /// Messages other nodes sent that never arrived here.
    @exclusivity(unchecked) private(set) var lost = 0
    /// Messages handed to local members (each member counted once).
    @exclusivity(unchecked) private(set) var delivered = 0

    /// Members on this loop written to in the current batch, to be flushed at its end.
    @exclusivity(unchecked) private var touched: [RelayMemberChannel] = []
    /// Writes for members on other loops, one entry per loop, sent at the end of the batch.
    @exclusivity(unchecked)
    private var remote: [ObjectIdentifier: (loop: any EventLoop, writes: [(RelayMemberChannel, ByteBuffer)])] = [:]

    /// Origins remembered per room at most: a legitimate cluster has a few nodes, but anyone who can publish to
    /// Redis could invent a new origin per message. Past the limit an arbitrary origin is forgotten; its next
    /// message then only starts a new baseline (neither delivered twice nor counted as loss in the normal case).
    static let maxOriginsPerRoom = 1_024

    init(
        node: String,
        eventLoop: any EventLoop,
        broker: any Broker,
        onLoss: @escaping @Sendable (String, Room, UInt64) -> Void
    ) {
        self.node = node
        self.eventLoop = eventLoop
        self.broker = broker
        self.onLoss = onLoss
    }

    // MARK: Membership (the control plane calls these between batches)

    func add(_ member: Member, id: String, to room: Room) {
        self.eventLoop.assertInEventLoop()
        if self.rooms[room] == nil { self.sequences.roomJoined(room) }
        self.rooms[room, default: RoomState()].members[id] = member
    }

    /// Removes a member; the room's state (its sequences seen, too) goes with its last member.
    func remove(_ id: String, from room: Room) {
        self.eventLoop.assertInEventLoop()
        guard self.rooms[room]?.members.removeValue(forKey: id) != nil else { return }
        if self.rooms[room]?.members.isEmpty == true {
            // Safe to forget what was seen: `receive` ignores the room until a member joins again, and then the
            // first message of each origin is a new baseline. The sequence this node publishes under is kept a
            // while (see OutgoingSequences).
            self.rooms[room] = nil
            self.sequences.roomLeft(room)
        }
    }

    /// Entries in the per-room tables (rooms, sequences seen, sequences of rooms with members).
    var roomStateCount: Int {
        self.eventLoop.assertInEventLoop()
        return self.rooms.count + self.rooms.values.reduce(0) { $0 + ($1.seen.isEmpty ? 0 : 1) }
            + self.sequences.joinedCount
    }

    /// Rooms without local members whose outgoing sequence is remembered.
    var unjoinedSequenceCount: Int {
        self.eventLoop.assertInEventLoop()
        return self.sequences.unjoinedCount
    }

    // MARK: Data plane

    /// An envelope from another node; call ``endOfBatch()`` after the last of a read.
    func receive(_ envelope: Envelope) {
        self.eventLoop.assertInEventLoop()
        guard envelope.origin != self.node else { return }  // our own echo: delivered at publish time
        // No local members: a message that was in flight when the room was left. Recording its sequence
        // would make the next join see a "gap" of messages that were never meant for this node.
        guard self.rooms[envelope.room] != nil else { return }
        guard let gap = Self.record(envelope, in: &self.rooms[envelope.room]!.seen) else {
            return  // a duplicate: exactly once
        }
        if gap > 0 {
            // Sequences come off the wire: a broken or hostile publisher can make the gap as large as UInt64 allows.
            let (sum, overflow) = self.lost.addingReportingOverflow(Int(clamping: gap))
            self.lost = overflow ? .max : sum
            self.onLoss(envelope.origin, envelope.room, gap)
        }
        self.deliver(envelope.payload, to: envelope.room, except: envelope.except)
    }

    /// This node's message: delivered to the local members of `room` but those in `except`, then (unless
    /// `localOnly`) published under the room's next sequence. Call ``endOfBatch()`` (or schedule it) after.
    func broadcast(_ payload: ByteBuffer, to room: Room, except: [String], localOnly: Bool) {
        self.eventLoop.assertInEventLoop()
        let hasMembers = self.rooms[room] != nil
        if hasMembers { self.deliver(payload, to: room, except: except) }
        guard !localOnly else { return }
        let (epoch, sequence) = self.sequences.next(in: room, hasMembers: hasMembers)
        let envelope = Envelope(
            origin: self.node,
            epoch: epoch,
            sequence: sequence,
            room: room,
            except: except.sorted(),
            payload: payload
        )
        try? self.broker.publish(envelope)  // the envelope was checked by the caller: nothing left to fail
    }

    /// Ends the batch once this loop tick's other work is done (for callers outside a read batch).
    func scheduleEndOfBatch() {
        self.eventLoop.assertInEventLoop()
        guard !self.endOfBatchScheduled else { return }
        self.endOfBatchScheduled = true
        self.eventLoop.execute {
            self.endOfBatchScheduled = false
            self.endOfBatch()
        }
    }

    /// Hands `payload` to every local member of `room` but those in `except`; call ``endOfBatch()`` after.
    func deliver(_ payload: ByteBuffer, to room: Room, except: [String]) {
        self.eventLoop.assertInEventLoop()
        guard let members = self.rooms[room]?.members else { return }
        // `except` comes off the wire too (up to 65,535 ids): past a few, look them up in a set, not a scan
        // per member.
        let excluded = except.count > 8 ? Set(except) : nil
        var frame: ByteBuffer?
        for (id, member) in members
        where except.isEmpty || !(excluded.map { $0.contains(id) } ?? except.contains(id)) {
            self.delivered += 1
            switch member {
            case .closure(let deliver):
                deliver(payload)
            case .channel(let target):
                if frame == nil { frame = Self.textFrame(payload) }
                self.write(frame!, to: target)
            }
        }
    }

    private func write(_ frame: ByteBuffer, to target: RelayMemberChannel) {
        if target.eventLoop === self.eventLoop {
            if target.write(frame) { self.touched.append(target) }
            return
        }
        let key = ObjectIdentifier(target.eventLoop)
        if self.remote[key] == nil {
            self.remote[key] = (target.eventLoop, [(target, frame)])
        } else {
            self.remote[key]!.writes.append((target, frame))
        }
    }

    /// Flushes every member written to since the last call, and sends other loops their writes, one hop each.
    func endOfBatch() {
        self.eventLoop.assertInEventLoop()
        for target in self.touched { target.flush() }
        self.touched.removeAll(keepingCapacity: true)
        guard !self.remote.isEmpty else { return }
        for (_, batch) in self.remote {
            let writes = batch.writes
            batch.loop.execute {
                var touched: [RelayMemberChannel] = []
                for (target, frame) in writes where target.write(frame) { touched.append(target) }
                for target in touched { target.flush() }
            }
        }
        self.remote.removeAll(keepingCapacity: true)
    }

    /// Records `envelope` in its room's table of origins; returns the messages missing before it, or nil for
    /// a duplicate. The first message of an origin, or of a new epoch, is a baseline: no gap.
    static func record(
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

    /// One unmasked, final WebSocket text frame carrying `payload` (RFC 6455 §5.2): the bytes every member gets.
    static func textFrame(_ payload: ByteBuffer) -> ByteBuffer {
        let length = payload.readableBytes
        var frame = ByteBuffer()
        frame.reserveCapacity(length + 10)
        frame.writeInteger(UInt8(0x81))  // FIN, text
        if length < 126 {
            frame.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(length))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(length))
        }
        var payload = payload
        frame.writeBuffer(&payload)
        return frame
    }
}

/// A member's WebSocket channel as the relay writes to it: pre-encoded frames go in below the channel's
/// `WebSocketFrameEncoder`, so the frame a room's message becomes is built once for all its members.
///
/// `@unchecked Sendable`: `context` and `pendingFlush` are used only on `eventLoop`, the channel's own (every
/// method asserts it); the rest is immutable.
public final class RelayMemberChannel: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let context: ChannelHandlerContext
    private let drops: SlowMemberDrops
    @exclusivity(unchecked) private var pendingFlush = false

    private init(eventLoop: any EventLoop, context: ChannelHandlerContext, drops: SlowMemberDrops) {
        self.eventLoop = eventLoop
        self.context = context
        self.drops = drops
    }

    /// The writer for `channel`, whose pipeline must hold NIOWebSocket's `WebSocketFrameEncoder`.
    static func make(_ channel: any Channel, drops: SlowMemberDrops) async throws -> RelayMemberChannel {
        try await channel.eventLoop.submit { try Self.make(onItsLoop: channel, drops: drops) }.get()
    }

    /// The same, on `channel`'s event loop.
    static func make(onItsLoop channel: any Channel, drops: SlowMemberDrops) throws -> RelayMemberChannel {
        let context = try channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        return RelayMemberChannel(eventLoop: channel.eventLoop, context: context, drops: drops)
    }

    /// Writes one frame unless the client does not read what it is sent (then the message is dropped and
    /// counted: a slow member never slows its room). True when a flush is now due.
    func write(_ frame: ByteBuffer) -> Bool {
        self.eventLoop.assertInEventLoop()
        guard self.context.channel.isActive else { return false }  // closed: its leave is on the way
        if !self.context.channel.isWritable && self.pendingFlush {
            // What made it unwritable may be this batch's own frames, not yet flushed (NIO counts them toward
            // the high watermark): flush them, and see whether the socket takes them, before calling the
            // client slow. A busy room's batch must not cost a member that keeps up its messages.
            self.flush()
        }
        guard self.context.channel.isWritable else {
            self.drops.add()
            return false
        }
        self.context.write(NIOAny(frame), promise: nil)
        guard !self.pendingFlush else { return false }
        self.pendingFlush = true
        return true
    }

    func flush() {
        self.eventLoop.assertInEventLoop()
        self.pendingFlush = false
        self.context.flush()
    }
}

/// Messages dropped for members that could not keep up, from every loop (`portico_relay_slow_member_drops_total`).
final class SlowMemberDrops: Sendable {
    private let value = Atomic<Int>(0)
    private let counter: Counter

    init(node: String) {
        self.counter = Counter(label: "portico_relay_slow_member_drops_total", dimensions: [("node", node)])
        self.counter.increment(by: 0)  // exported at 0, not only after the first drop
    }

    /// The slow path only: a drop.
    func add() {
        self.value.add(1, ordering: .relaxed)
        self.counter.increment()
    }

    var count: Int { self.value.load(ordering: .relaxed) }
}
