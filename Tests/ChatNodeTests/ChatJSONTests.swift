import Foundation
import NIOCore
import PorticoChatProtocol
import Testing

@testable import ChatNode

/// The hand-written `message` op reads back, through Foundation's parser, as exactly what was said.
@Suite struct ChatJSONTests {
    @Test(arguments: [
        "hello", "", "quote \" and backslash \\ and slash /", "line\nbreak\r\ttab", "\u{0}\u{1}\u{1F}\u{7F}",
        "ünïcødé 日本語 🎉", "{\"op\":\"join\",\"room\":\"x\"}", "\\u0041 is not A", String(repeating: "x", count: 4096),
    ])
    func messagesReadBackAsSaid(text: String) throws {
        for id in [nil, "id-\"7\"\n"] as [String?] {
            let buffer = ChatJSON.message(room: "r \"1\"", from: "ana\\", text: text, node: "chat-1", id: id)
            let object = try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: String]
            var expected = ["op": "message", "room": "r \"1\"", "from": "ana\\", "text": text, "node": "chat-1"]
            if let id { expected["id"] = id }
            #expect(object == expected)
        }
    }

    /// Keys sorted, as JSONSerialization's `.sortedKeys` wrote them before.
    @Test func keysAreSorted() {
        let buffer = ChatJSON.message(room: "r", from: "f", text: "t", node: "n", id: "i")
        #expect(String(buffer: buffer) == #"{"from":"f","id":"i","node":"n","op":"message","room":"r","text":"t"}"#)
    }
}
