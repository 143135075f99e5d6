import NIOCore
import PorticoRelay
import Testing

@Suite struct EnvelopeTests {
    @Test func roundTrip() throws {
        let envelope = Envelope(
            origin: "chat-1",
            epoch: 7,
            sequence: 42,
            room: Room("lobby"),
            except: ["m-1", "m-2"],
            payload: ByteBuffer(string: "{\"op\":\"message\"}")
        )
        let decoded = try #require(Envelope(decoding: envelope.encoded()))
        #expect(decoded == envelope)
    }

    @Test func rejectsOtherVersionsAndTruncation() {
        var bytes = Envelope(origin: "a", room: Room("r"), payload: ByteBuffer(string: "x")).encoded()
        #expect(Envelope(decoding: bytes.getSlice(at: 0, length: bytes.readableBytes - 1)!) == nil)
        bytes.setInteger(UInt8(9), at: 0)
        #expect(Envelope(decoding: bytes) == nil)
    }
}
