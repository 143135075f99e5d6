import NIOCore

/// The `message` op every member of a room gets, written as JSON straight into a buffer: the bytes every chat
/// node in a room must agree on (portico-chat, Examples/hummingbird-chat, any Swift server that links this), since
/// a message said on one node reaches the clients of every other as it was written.
///
/// Foundation's `JSONSerialization` over a `[String: Any]` was 26% of a publishing node's CPU (perf, 1,000
/// messages/s into a room of 20); this writes the same object (keys sorted, as before) with nothing but the
/// escaping JSON requires (RFC 8259 §7: `"`, `\` and control characters; everything else, UTF-8 included,
/// as it is).
public enum ChatJSON {
    /// `{"from":…,"id":…,"node":…,"op":"message","room":…,"text":…}`, keys sorted, `id` only when given.
    public static func message(room: String, from: String, text: String, node: String, id: String?) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(64 + room.utf8.count + from.utf8.count + text.utf8.count + node.utf8.count)
        buffer.writeStaticString(#"{"from":"#)
        Self.writeString(from, into: &buffer)
        if let id {
            buffer.writeStaticString(#","id":"#)
            Self.writeString(id, into: &buffer)
        }
        buffer.writeStaticString(#","node":"#)
        Self.writeString(node, into: &buffer)
        buffer.writeStaticString(#","op":"message","room":"#)
        Self.writeString(room, into: &buffer)
        buffer.writeStaticString(#","text":"#)
        Self.writeString(text, into: &buffer)
        buffer.writeStaticString("}")
        return buffer
    }

    /// `text` as a JSON string, quotes included.
    public static func writeString(_ text: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var plainStart = text.utf8.startIndex
        var index = plainStart
        let utf8 = text.utf8
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 {
                buffer.writeBytes(utf8[plainStart..<index])
                Self.writeEscape(byte, into: &buffer)
                plainStart = utf8.index(after: index)
            }
            index = utf8.index(after: index)
        }
        buffer.writeBytes(utf8[plainStart..<utf8.endIndex])
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    private static func writeEscape(_ byte: UInt8, into buffer: inout ByteBuffer) {
        switch byte {
        case UInt8(ascii: "\""): buffer.writeStaticString(#"\""#)
        case UInt8(ascii: "\\"): buffer.writeStaticString(#"\\"#)
        case 0x0A: buffer.writeStaticString(#"\n"#)
        case 0x0D: buffer.writeStaticString(#"\r"#)
        case 0x09: buffer.writeStaticString(#"\t"#)
        default:
            let hex = Array("0123456789abcdef".utf8)
            buffer.writeStaticString(#"\u00"#)
            buffer.writeInteger(hex[Int(byte >> 4)])
            buffer.writeInteger(hex[Int(byte & 0x0F)])
        }
    }
}
