import NIOCore
import PorticoRelay
import Testing

@Suite struct EnvelopeTests {
    @Test func envelopesCompareByContent() {
        let a = Envelope(origin: "chat-1", room: Room("lobby"), payload: ByteBuffer(string: "hi"))
        let b = Envelope(origin: "chat-1", room: Room("lobby"), payload: ByteBuffer(string: "hi"))
        #expect(a == b)
        #expect(a != Envelope(origin: "chat-2", room: Room("lobby"), payload: ByteBuffer(string: "hi")))
        #expect(Room("lobby").description == "lobby")
    }
}
