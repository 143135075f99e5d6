import NIOCore
import PorticoTestSupport
import Testing

@testable import PorticoRelay

/// The receiving side's sequence bookkeeping, fed envelopes directly.
@Suite struct SequenceTests {
    static func envelope(_ sequence: UInt64, room: String = "r", origin: String = "other") -> Envelope {
        Envelope(
            origin: origin,
            epoch: 1,
            sequence: sequence,
            room: Room(room),
            except: [],
            payload: ByteBuffer(string: "\(sequence)")
        )
    }

    @Test func gapsAreCountedAndDuplicatesDropped() async throws {
        let relay = Relay(node: "me", broker: InProcessHub().broker(node: "me"))
        let inboxes = Inboxes()
        try await relay.join(Room("r"), member: "m", deliver: inboxes.deliver(to: "m"))
        for sequence: UInt64 in [5, 6, 6, 9, 8, 10] { await relay.receive(Self.envelope(sequence)) }
        #expect(inboxes.messages("m") == ["5", "6", "9", "10"])  // the first seen is the baseline
        #expect(await relay.lost == 2)  // 7 and 8 (8 came after 9: too late, a duplicate by then)
    }

    @Test func messagesInFlightAfterTheLastMemberLeftAreNotMistakenForLossLater() async throws {
        let relay = Relay(node: "me", broker: InProcessHub().broker(node: "me"))
        let inboxes = Inboxes()
        try await relay.join(Room("r"), member: "m", deliver: inboxes.deliver(to: "m"))
        await relay.receive(Self.envelope(1))
        try await relay.leave(Room("r"), member: "m")
        // Still in the inbound stream when the room was left; then the origin goes on without us.
        await relay.receive(Self.envelope(2))
        try await relay.join(Room("r"), member: "m2", deliver: inboxes.deliver(to: "m2"))
        await relay.receive(Self.envelope(9))
        #expect(inboxes.messages("m2") == ["9"])
        #expect(await relay.lost == 0)
    }

    /// The NIO-level entry: a handler on the relay's own loop broadcasts with no hop; local members and the
    /// other node get every message once, in order.
    @Test func broadcastsFromTheRelaysOwnLoopReachEveryoneInOrder() async throws {
        let hub = InProcessHub()
        let a = Relay(node: "a", broker: hub.broker(node: "a"))
        let b = Relay(node: "b", broker: hub.broker(node: "b"))
        let inboxes = Inboxes()
        try await b.join(Room("r"), member: "b1", deliver: inboxes.deliver(to: "b1"))
        try await a.join(Room("r"), member: "a1", deliver: inboxes.deliver(to: "a1"))
        try await a.eventLoop.submit {
            for index in 0..<100 { try a.broadcastOnEventLoop(ByteBuffer(string: "\(index)"), to: Room("r")) }
        }.get()
        let expected = (0..<100).map { "\($0)" }
        #expect(await eventually { inboxes.messages("b1").count == expected.count })
        #expect(inboxes.messages("b1") == expected)
        #expect(inboxes.messages("a1") == expected)
        #expect(await b.lost == 0)
        #expect(!a.isBackedUp)
    }
}
