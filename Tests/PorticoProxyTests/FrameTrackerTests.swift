import NIOCore
import Testing

@testable import PorticoProxy

/// The RFC 6455 header follower the tunnels use, fed bytes directly.
@Suite struct FrameTrackerTests {
    /// A frame with FIN `fin`, `opcode`, `payload`, masked with a fixed key when `masked`.
    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            bytes.append(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            bytes += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8(truncatingIfNeeded: UInt64(payload.count) >> (8 * $0)) }
        }
        let key: [UInt8] = [0x11, 0x22, 0x33, 0x44]
        if masked { bytes += key }
        bytes += payload.enumerated().map { masked ? $0.element ^ key[$0.offset % 4] : $0.element }
        return bytes
    }

    @Test func countsMessagesAcrossAnySplitOfTheStream() {
        let stream =
            Self.frame(0x1, Array("hello".utf8)) + Self.frame(0x2, [UInt8](repeating: 7, count: 300))
            + Self.frame(0x2, [UInt8](repeating: 1, count: 70_000)) + Self.frame(0x9, [])
            + Self.frame(0x1, Array("frag".utf8), fin: false) + Self.frame(0x0, Array("mented".utf8))
        for chunk in [1, 2, 3, 7, 64, stream.count] {
            var tracker = WebSocketFrameTracker(sender: .client, maxMessageBytes: 1 << 20)
            var forwarded = 0
            var offset = 0
            while offset < stream.count {
                let end = min(stream.count, offset + chunk)
                let outcome = tracker.consume(ByteBuffer(bytes: stream[offset..<end]))
                #expect(outcome.violation == nil)
                forwarded += outcome.forwardable
                offset = end
            }
            #expect(forwarded == stream.count, "chunk \(chunk)")
            #expect(tracker.messages == 4, "chunk \(chunk)")  // the fragmented message counts once
            #expect(tracker.frames == 6, "chunk \(chunk)")
            #expect(tracker.isAtFrameBoundary)
        }
    }

    @Test func anUnmaskedClientFrameIsStoppedBeforeItsFirstByte() {
        var tracker = WebSocketFrameTracker(sender: .client, maxMessageBytes: 1 << 20)
        let good = Self.frame(0x1, Array("ok".utf8))
        let outcome = tracker.consume(ByteBuffer(bytes: good + Self.frame(0x1, Array("bad".utf8), masked: false)))
        #expect(outcome.violation?.code == 1002)
        #expect(outcome.forwardable == good.count)
        #expect(outcome.isBoundaryClean)
    }

    @Test func aMessageOverTheLimitIs1009EvenWhenFragmented() {
        var tracker = WebSocketFrameTracker(sender: .server, maxMessageBytes: 100)
        let first = Self.frame(0x2, [UInt8](repeating: 0, count: 60), fin: false, masked: false)
        let second = Self.frame(0x0, [UInt8](repeating: 0, count: 60), masked: false)
        let outcome = tracker.consume(ByteBuffer(bytes: first + second))
        #expect(outcome.violation == .tooBig)
        #expect(outcome.forwardable == first.count)
    }

    @Test(arguments: [
        (Self.frame(0x3, []), "reserved opcode"),
        (Self.frame(0x9, [UInt8](repeating: 0, count: 126)), "control frame too long"),
        (Self.frame(0x8, [3, 232], fin: false), "fragmented control frame"),
        (Self.frame(0x0, [1]), "continuation without a message"),
        (Self.frame(0x1, [1], fin: false) + Self.frame(0x1, [2]), "new message inside a fragmented one"),
    ])
    func protocolErrorsAre1002(stream: [UInt8], why: String) {
        var tracker = WebSocketFrameTracker(sender: .client, maxMessageBytes: 1 << 20)
        #expect(tracker.consume(ByteBuffer(bytes: stream)).violation?.code == 1002, "\(why)")
    }

    @Test func readsAMaskedCloseCodeSplitOverReads() {
        var tracker = WebSocketFrameTracker(sender: .client, maxMessageBytes: 1 << 20)
        let close = Self.frame(0x8, [0x03, 0xE9] + Array("bye".utf8))  // 1001
        for byte in close { _ = tracker.consume(ByteBuffer(bytes: [byte])) }
        #expect(tracker.sawClose)
        #expect(tracker.closeCode == 1001)
    }

    @Test func stopsAtTheNextFrameBoundaryWhenAsked() {
        var tracker = WebSocketFrameTracker(sender: .server, maxMessageBytes: 1 << 20)
        let first = Self.frame(0x1, Array("one".utf8), masked: false)
        _ = tracker.consume(ByteBuffer(bytes: first.prefix(3)))
        #expect(!tracker.isAtFrameBoundary)
        let rest = Array(first.dropFirst(3)) + Self.frame(0x1, Array("two".utf8), masked: false)
        let outcome = tracker.consume(ByteBuffer(bytes: rest), stopAtBoundary: true)
        #expect(outcome.forwardable == first.count - 3)
        #expect(tracker.isAtFrameBoundary)
    }
}

/// RSV bits (RFC 6455 §5.2) are a protocol error unless the handshake negotiated an extension that uses them.
@Suite struct ReservedBitsTests {
    static func violation(_ bytes: [UInt8], _ reserved: WebSocketFrameTracker.ReservedBits) -> UInt16? {
        var tracker = WebSocketFrameTracker(sender: .client, maxMessageBytes: 1 << 20, reservedBits: reserved)
        return tracker.consume(ByteBuffer(bytes: bytes)).violation?.code
    }

    static func withBits(_ frame: [UInt8], _ bits: UInt8) -> [UInt8] {
        var frame = frame
        frame[0] |= bits
        return frame
    }

    @Test func withoutAnExtensionAnyReservedBitIsA1002() {
        for bits: UInt8 in [0x40, 0x20, 0x10, 0x70] {
            #expect(Self.violation(Self.withBits(FrameTrackerTests.frame(0x1, [1, 2]), bits), .none) == 1002)
            #expect(Self.violation(Self.withBits(FrameTrackerTests.frame(0x9, []), bits), .none) == 1002)
        }
        #expect(Self.violation(FrameTrackerTests.frame(0x1, [1, 2]), .none) == nil)
    }

    @Test func permessageDeflateAllowsRSV1OnTheFirstDataFrameOnly() {
        let deflate = WebSocketFrameTracker.ReservedBits.perMessageDeflate
        #expect(Self.violation(Self.withBits(FrameTrackerTests.frame(0x1, [1]), 0x40), deflate) == nil)
        #expect(Self.violation(Self.withBits(FrameTrackerTests.frame(0x2, [1]), 0x40), deflate) == nil)
        #expect(Self.violation(Self.withBits(FrameTrackerTests.frame(0x2, [1]), 0x20), deflate) == 1002)
        #expect(Self.violation(Self.withBits(FrameTrackerTests.frame(0x9, []), 0x40), deflate) == 1002)
        let first = Self.withBits(FrameTrackerTests.frame(0x1, [1], fin: false), 0x40)
        let continuation = Self.withBits(FrameTrackerTests.frame(0x0, [2]), 0x40)
        #expect(Self.violation(first + continuation, deflate) == 1002)
        #expect(Self.violation(Self.withBits(FrameTrackerTests.frame(0x1, [1]), 0x70), .any) == nil)
    }

    @Test func negotiatedExtensionsDecideTheBits() {
        typealias Bits = WebSocketFrameTracker.ReservedBits
        #expect(Bits(negotiated: []) == .none)
        #expect(Bits(negotiated: ["permessage-deflate"]) == .perMessageDeflate)
        #expect(
            Bits(negotiated: ["PerMessage-Deflate; client_max_window_bits=15 ; server_no_context_takeover"])
                == .perMessageDeflate
        )
        #expect(Bits(negotiated: ["permessage-deflate, x-webkit-other"]) == .any)
        #expect(Bits(negotiated: ["x-custom"]) == .any)
    }

    @Test func closeCodesBecomeBoundedLabels() {
        #expect(TunnelMetrics.label(closeCode: 1000) == "normal")
        #expect(TunnelMetrics.label(closeCode: 1012) == "service_restart")
        #expect(TunnelMetrics.label(closeCode: 4321) == "other")
        #expect(TunnelMetrics.label(closeCode: 1004) == "other")
        #expect(TunnelMetrics.label(closeCode: nil) == "none")
        let labels = Set((0...UInt16.max).map { TunnelMetrics.label(closeCode: $0) })
        #expect(labels.count <= 16)
    }
}
