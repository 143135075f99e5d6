import NIOCore
import PorticoRESP
import PorticoTestSupport
import Testing

@testable import PorticoRelay

/// Per-room state goes with a room's last local member, so rooms that come and go do not grow a node's memory,
/// and the exactly-once and per-sender-order guarantees hold across a leave and a rejoin.
@Suite(.serialized) struct RoomStateTests {
    @Test func tenThousandUniqueRoomsJoinedAndLeftLeaveNoState() async throws {
        let hub = InProcessHub()
        let (brokerA, brokerB) = (hub.broker(node: "a"), hub.broker(node: "b"))
        let (a, b) = (Relay(node: "a", broker: brokerA), Relay(node: "b", broker: brokerB))
        let inboxes = Inboxes()
        for index in 0..<10_000 {
            let room = Room("room-\(index)")
            // Every table gets an entry: members on both nodes, a sequence sent by each, a sequence seen by each.
            try await a.join(room, member: "a1", deliver: inboxes.deliver(to: "a1"))
            try await b.join(room, member: "b1", bufferLimit: 4) { _ in }
            try await a.broadcast(ByteBuffer(string: "from a"), to: room)
            try await b.broadcast(ByteBuffer(string: "from b"), to: room)
            await a.receive(Envelope(origin: "b", epoch: 1, sequence: 1, room: room, payload: ByteBuffer()))
            await b.receive(Envelope(origin: "a", epoch: 1, sequence: 1, room: room, payload: ByteBuffer()))
            try await a.leave(room, member: "a1")
            try await b.leave(room, member: "b1")
            // A presence update after the last member left is still published, and still leaves nothing behind.
            try await a.broadcast(ByteBuffer(string: "presence"), to: room)
            await b.receive(Envelope(origin: "a", epoch: 2, sequence: 1, room: room, payload: ByteBuffer()))
        }
        #expect(await a.roomStateCount == 0)
        #expect(await b.roomStateCount == 0)
        // What is left: the outgoing sequences of rooms without local members, capped (receivers' loss
        // detection for a node that publishes into a room it has no members in depends on them).
        #expect(await a.unjoinedSequenceCount == Relay.maxUnjoinedRooms)
        #expect(await b.unjoinedSequenceCount == Relay.maxUnjoinedRooms)
        #expect(brokerA.roomStateCount == 0)
        #expect(brokerB.roomStateCount == 0)
        // Its own, b's through the hub, and the envelope handed in above (another epoch of b: a new baseline).
        #expect(inboxes.messages("a1").count == 30_000)
        #expect(await a.lost == 0)
        #expect(await b.lost == 0)
    }

    /// A publisher whose last member left and who joins again, with its old sequence remembered or (after
    /// publishing into more rooms than are remembered) under a new epoch: a member elsewhere that stayed all
    /// along gets every message once, in order, and counts nothing as lost.
    @Test(arguments: [false, true])
    func aRejoinedPublisherIsNeitherADuplicateNorAGap(forgetting: Bool) async throws {
        let hub = InProcessHub()
        let (a, b) = (Relay(node: "a", broker: hub.broker(node: "a")), Relay(node: "b", broker: hub.broker(node: "b")))
        let inboxes = Inboxes()
        try await b.join(Room("r"), member: "stays", deliver: inboxes.deliver(to: "stays"))
        for round in 0..<3 {
            try await a.join(Room("r"), member: "comes-and-goes", deliver: { _ in })
            for index in 0..<5 { try await a.broadcast(ByteBuffer(string: "\(round)-\(index)"), to: Room("r")) }
            try await a.leave(Room("r"), member: "comes-and-goes")
            try await a.broadcast(ByteBuffer(string: "\(round)-left"), to: Room("r"))  // no local members now
            if forgetting {
                for other in 0...Relay.maxUnjoinedRooms {
                    try await a.broadcast(ByteBuffer(string: "elsewhere"), to: Room("other-\(other)"))
                }
            }
        }
        let expected = (0..<3).flatMap { round in (0..<5).map { "\(round)-\($0)" } + ["\(round)-left"] }
        #expect(await eventually { inboxes.messages("stays").count >= expected.count })
        #expect(inboxes.messages("stays") == expected)
        #expect(await b.lost == 0)
        #expect(await a.roomStateCount == 0)
        #expect(await a.unjoinedSequenceCount <= Relay.maxUnjoinedRooms)
    }

    /// The same over Redis: the broker's room tables (subscriptions, presence) empty out too.
    @Test func roomsComingAndGoingOverRedisLeaveNoState() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let pair = RelayPair(a: .init(url: redis.url, node: "a"), b: .init(url: redis.url, node: "b"))
        defer { pair.stop() }
        #expect(await eventually { await pair.bothHealthy() })
        let inboxes = Inboxes()
        let deadline = ContinuousClock.now + .seconds(60)
        for index in 0..<300 {
            let room = Room("unique-\(index)")
            try await pair.relayA.join(room, member: "a1", deliver: inboxes.deliver(to: "a1"))
            try await pair.relayB.join(room, member: "b1", deliver: inboxes.deliver(to: "b1"))
            try await pair.relayA.broadcast(ByteBuffer(string: "\(index)"), to: room)
            // Arrived before b leaves (`eventually` polls every 20 ms: too slow for 300 rounds).
            while inboxes.messages("b1").count <= index, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(1))
            }
            try await pair.relayB.leave(room, member: "b1")
            try await pair.relayA.leave(room, member: "a1")
        }
        #expect(inboxes.messages("b1") == (0..<300).map { "\($0)" })
        #expect(await pair.relayA.roomStateCount == 0)
        #expect(await pair.relayB.roomStateCount == 0)
        #expect(await pair.a.roomStateCount == 0)
        #expect(await pair.b.roomStateCount == 0)
        #expect(await pair.relayB.lost == 0)
    }
}

/// Names longer than an envelope carries are errors, and nothing a publisher sends through Redis traps.
@Suite struct EnvelopeLimitsTests {
    @Test func overLongNamesAreErrorsNotCrashes() async throws {
        let relay = Relay(node: "me", broker: InProcessHub().broker(node: "me"))
        let long = String(repeating: "é", count: Envelope.maxFieldLength)  // 2 bytes each
        await #expect(throws: RelayError.envelopeFieldTooLong) {
            try await relay.join(Room(long), member: "m", deliver: { _ in })
        }
        await #expect(throws: RelayError.envelopeFieldTooLong) {
            try await relay.broadcast(ByteBuffer(string: "x"), to: Room(long))
        }
        try await relay.join(Room("r"), member: "m", deliver: { _ in })
        await #expect(throws: RelayError.envelopeFieldTooLong) {
            try await relay.broadcast(ByteBuffer(string: "x"), to: Room("r"), except: [long])
        }
        let farAway = Relay(node: String(repeating: "n", count: 70_000), broker: InProcessHub().broker(node: "x"))
        await #expect(throws: RelayError.envelopeFieldTooLong) {
            try await farAway.broadcast(ByteBuffer(string: "x"), to: Room("r"))
        }
        #expect(await relay.roomStateCount == 2)  // only "r" with its one member, in the control and data planes
    }

    @Test func encodingCutsWhatDoesNotFitInsteadOfTrapping() throws {
        let envelope = Envelope(
            origin: String(repeating: "o", count: 70_000),
            room: Room("ab" + String(repeating: "é", count: 40_000)),  // byte 65,535 is inside an "é"
            except: Array(repeating: "m", count: 70_000),
            payload: ByteBuffer(string: "payload")
        )
        #expect(throws: RelayError.envelopeFieldTooLong) { try envelope.checkEncodable() }
        let decoded = try #require(Envelope(decoding: envelope.encoded()))
        #expect(decoded.origin.utf8.count == Envelope.maxFieldLength)
        #expect(decoded.room.name.utf8.count == Envelope.maxFieldLength - 1)  // 2 + 2 × 32,766
        #expect(decoded.room.name.unicodeScalars.allSatisfy { $0 != "\u{FFFD}" })
        #expect(decoded.except.count == Envelope.maxExceptCount)
        #expect(decoded.payload == ByteBuffer(string: "payload"))
    }

    @Test func arbitraryBytesNeverTrapTheDecoder() {
        var generator = SystemRandomNumberGenerator()
        let valid = Envelope(origin: "o", room: Room("r"), except: ["x"], payload: ByteBuffer(string: "p")).encoded()
        for round in 0..<20_000 {
            var bytes: ByteBuffer
            if round % 2 == 0 {
                let length = Int.random(in: 0..<64, using: &generator)
                bytes = ByteBuffer(bytes: (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
            } else {  // a valid envelope with one byte changed: lengths that point past the end, and so on
                bytes = valid
                let offset = Int.random(in: 0..<bytes.readableBytes, using: &generator)
                bytes.setInteger(UInt8.random(in: 0...255, using: &generator), at: offset)
            }
            _ = Envelope(decoding: bytes)
        }
    }

    /// A sequence jump as large as the wire allows is counted (saturating), not a trap.
    @Test func hugeSequenceGapsAreCountedWithoutOverflow() async throws {
        let relay = Relay(node: "me", broker: InProcessHub().broker(node: "me"))
        try await relay.join(Room("r"), member: "m", deliver: { _ in })
        for sequence: UInt64 in [1, .max / 2, .max] {
            let envelope = Envelope(origin: "x", epoch: 1, sequence: sequence, room: Room("r"), payload: ByteBuffer())
            await relay.receive(envelope)
        }
        #expect(await relay.lost == .max)
    }
}
