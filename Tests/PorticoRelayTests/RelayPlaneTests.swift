import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import PorticoRelay

/// The data plane driven directly on an embedded event loop: what reaches a member's socket, and when.
@Suite struct RelayPlaneTests {
    /// A member channel as the chat node has it: NIO's frame encoder in the pipeline, bytes out at the head.
    /// Counts flushes as they reach the head.
    final class FlushCounter: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var flushes = 0
        func flush(context: ChannelHandlerContext) {
            self.flushes += 1
            context.flush()
        }
    }

    struct Member {
        let channel: EmbeddedChannel
        let counter: FlushCounter
        let writer: RelayMemberChannel

        init(loop: EmbeddedEventLoop, drops: SlowMemberDrops) throws {
            self.counter = FlushCounter()
            self.channel = EmbeddedChannel(loop: loop)
            try self.channel.pipeline.syncOperations.addHandler(self.counter)
            try self.channel.pipeline.syncOperations.addHandler(WebSocketFrameEncoder())
            try self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            self.writer = try RelayMemberChannel.make(onItsLoop: self.channel, drops: drops)
        }

        /// Everything written to the socket so far.
        func written() throws -> [UInt8] {
            var bytes: [UInt8] = []
            while let buffer = try self.channel.readOutbound(as: ByteBuffer.self) {
                bytes += buffer.readableBytesView
            }
            return bytes
        }
    }

    static func envelope(_ sequence: UInt64, _ text: String, origin: String = "other") -> Envelope {
        Envelope(origin: origin, epoch: 7, sequence: sequence, room: Room("r"), payload: ByteBuffer(string: text))
    }

    @Test func aBatchIsFramedOnceAndFlushedOncePerMember() async throws {
        let loop = EmbeddedEventLoop()
        let drops = SlowMemberDrops(node: "me")
        let plane = RelayPlane(node: "me", eventLoop: loop, broker: InProcessBroker(node: "me")) { _, _, _ in }
        let members = [try Member(loop: loop, drops: drops), try Member(loop: loop, drops: drops)]
        for (index, member) in members.enumerated() {
            plane.add(.channel(member.writer), id: "m\(index)", to: Room("r"))
        }
        for sequence: UInt64 in 1...3 { plane.receive(Self.envelope(sequence, "hello \(sequence)")) }
        for member in members { #expect(member.counter.flushes == 0) }  // nothing goes out before the batch ends
        plane.endOfBatch()
        var expected: [UInt8] = []
        for sequence in 1...3 { expected += [0x81, 7] + Array("hello \(sequence)".utf8) }
        for member in members {
            #expect(member.counter.flushes == 1)
            #expect(try member.written() == expected)
        }
        #expect(plane.delivered == 6)
        #expect(drops.count == 0)
    }

    @Test(arguments: [0, 125, 126, 65_535, 65_536])
    func framesCarryTheirLengthAsRFC6455Says(length: Int) throws {
        let frame = RelayPlane.textFrame(ByteBuffer(repeating: 0x61, count: length))
        // Encoded by NIO's own encoder for comparison.
        let channel = EmbeddedChannel(handler: WebSocketFrameEncoder())
        try channel.writeOutbound(
            WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(repeating: 0x61, count: length))
        )
        var nio: [UInt8] = []
        while let part = try channel.readOutbound(as: ByteBuffer.self) { nio += part.readableBytesView }
        #expect(Array(frame.readableBytesView) == nio)
    }

    @Test func duplicatesAndOwnEchoesAreDroppedAndGapsCounted() async throws {
        let loop = EmbeddedEventLoop()
        var gaps: [UInt64] = []
        let recorded = NIOLoopBound(Box(), eventLoop: loop)
        let plane = RelayPlane(node: "me", eventLoop: loop, broker: InProcessBroker(node: "me")) { _, _, gap in
            recorded.value.gaps.append(gap)
        }
        let member = try Member(loop: loop, drops: SlowMemberDrops(node: "me"))
        plane.add(.channel(member.writer), id: "m", to: Room("r"))
        for sequence: UInt64 in [1, 2, 2, 5, 4] { plane.receive(Self.envelope(sequence, "\(sequence)")) }
        plane.receive(Self.envelope(9, "mine", origin: "me"))
        plane.endOfBatch()
        gaps = recorded.value.gaps
        #expect(try member.written() == [0x81, 1, 0x31, 0x81, 1, 0x32, 0x81, 1, 0x35])
        #expect(gaps == [2])
        #expect(plane.lost == 2)
    }

    @Test func aMemberThatDoesNotReadLosesMessagesAndTheOthersDoNot() async throws {
        let loop = EmbeddedEventLoop()
        let drops = SlowMemberDrops(node: "me")
        let plane = RelayPlane(node: "me", eventLoop: loop, broker: InProcessBroker(node: "me")) { _, _, _ in }
        let slow = try Member(loop: loop, drops: drops)
        let fast = try Member(loop: loop, drops: drops)
        plane.add(.channel(slow.writer), id: "slow", to: Room("r"))
        plane.add(.channel(fast.writer), id: "fast", to: Room("r"))
        slow.channel.isWritable = false
        plane.deliver(ByteBuffer(string: "x"), to: Room("r"), except: [])
        plane.endOfBatch()
        #expect(try slow.written().isEmpty)
        #expect(try fast.written() == [0x81, 1, 0x78])
        #expect(drops.count == 1)
    }

    /// A member made unwritable by this batch's own unflushed frames is flushed first, and only dropped for if
    /// the socket still cannot take more.
    @Test func aMemberIsFlushedBeforeItIsCalledSlow() throws {
        let loop = EmbeddedEventLoop()
        let drops = SlowMemberDrops(node: "me")
        let plane = RelayPlane(node: "me", eventLoop: loop, broker: InProcessBroker(node: "me")) { _, _, _ in }
        let member = try Member(loop: loop, drops: drops)
        plane.add(.channel(member.writer), id: "m", to: Room("r"))
        plane.deliver(ByteBuffer(string: "a"), to: Room("r"), except: [])
        member.channel.isWritable = false  // as if the frames written so far crossed the high watermark
        plane.deliver(ByteBuffer(string: "b"), to: Room("r"), except: [])
        #expect(member.counter.flushes == 1)  // flushed before the verdict
        #expect(drops.count == 1)  // the embedded socket stays unwritable: now it is a drop
        plane.endOfBatch()
        #expect(try member.written() == [0x81, 1, 0x61])
    }

    @Test func exceptSkipsMembersAndTheLastLeaveForgetsTheRoom() async throws {
        let loop = EmbeddedEventLoop()
        let plane = RelayPlane(node: "me", eventLoop: loop, broker: InProcessBroker(node: "me")) { _, _, _ in }
        let a = try Member(loop: loop, drops: SlowMemberDrops(node: "me"))
        let b = try Member(loop: loop, drops: SlowMemberDrops(node: "me"))
        plane.add(.channel(a.writer), id: "a", to: Room("r"))
        plane.add(.channel(b.writer), id: "b", to: Room("r"))
        plane.deliver(ByteBuffer(string: "y"), to: Room("r"), except: ["a"])
        // A long except list (it comes off the wire) is looked up as a set: the same members are skipped.
        plane.deliver(ByteBuffer(string: "y"), to: Room("r"), except: (0..<20).map { "x\($0)" } + ["b"])
        plane.receive(Self.envelope(1, "z"))
        plane.endOfBatch()
        #expect(try a.written() == [0x81, 1, 0x79, 0x81, 1, 0x7A])
        #expect(try b.written() == [0x81, 1, 0x79, 0x81, 1, 0x7A])
        plane.remove("a", from: Room("r"))
        plane.remove("b", from: Room("r"))
        #expect(plane.roomStateCount == 0)
        // After the room is gone its origins start over: the next message is a baseline, not a gap.
        plane.add(.channel(a.writer), id: "a", to: Room("r"))
        plane.receive(Self.envelope(10, "w"))
        plane.endOfBatch()
        #expect(plane.lost == 0)
    }

    final class Box {
        var gaps: [UInt64] = []
    }
}
