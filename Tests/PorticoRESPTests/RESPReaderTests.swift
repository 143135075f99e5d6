import NIOCore
import PorticoRESP
import Testing

@Suite struct RESPReaderTests {
    @Test func parsesEveryRESP2Type() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "+OK\r\n-ERR bad\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$3\r\nfoo\r\n:7\r\n"))
        #expect(try reader.next() == .simpleString("OK"))
        #expect(try reader.next() == .error("ERR bad"))
        #expect(try reader.next() == .integer(42))
        #expect(try reader.next() == .bulkString(ByteBuffer(string: "hello")))
        #expect(try reader.next() == .bulkString(nil))
        #expect(try reader.next() == .array([.bulkString(ByteBuffer(string: "foo")), .integer(7)]))
        #expect(try reader.next() == nil)
    }

    @Test func waitsForSplitReplies() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*3\r\n$7\r\nmessage\r\n$4\r\nro"))
        #expect(try reader.next() == nil)
        try reader.feed(ByteBuffer(string: "om\r\n$2\r\nhi\r\n"))
        let expected: RESPValue = .array([
            .bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: "room")),
            .bulkString(ByteBuffer(string: "hi")),
        ])
        #expect(try reader.next() == expected)
    }

    @Test func protocolErrorsThrow() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "?what\r\n"))
        #expect(throws: RESPError.self) { try reader.next() }
    }

    /// Fuzz finding (Fuzz/Corpus/resp/hiredis-array-count-16GiB-calloc.resp): hiredis allocated the element
    /// table of `*2147483647` (16 GiB) on reading the count. Huge and negative counts are refused before that.
    @Test(arguments: ["*2147483647\r\n", "*1048577\r\n", "*1\r\n*2147483647\r\n"])
    func hugeArrayCountsAreRefused(wire: String) throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: wire))
        let error = #expect(throws: RESPError.self) { try reader.next() }
        #expect(error?.message.contains("elements") == true)
    }

    @Test func negativeArrayCountsOtherThanNilAreRefused() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*-2\r\n"))
        #expect(throws: RESPError.self) { try reader.next() }
    }

    @Test func largeButBoundedArraysStillParse() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*-1\r\n*0\r\n*3\r\n:1\r\n:2\r\n:3\r\n"))
        #expect(try reader.next() == .bulkString(nil))
        #expect(try reader.next() == .array([]))
        #expect(try reader.next() == .array([.integer(1), .integer(2), .integer(3)]))
    }

    /// Replies are built from tokens, not hiredis's tree: nesting, empty and binary strings, nulls inside
    /// arrays, and the same replies whether the bytes come at once or one at a time.
    @Test func nestedAndBinaryRepliesAreTheSameHoweverTheBytesArrive() throws {
        let wire =
            "*3\r\n*2\r\n$0\r\n\r\n$-1\r\n*0\r\n*1\r\n*1\r\n:-9\r\n"
            + "$6\r\na\r\n\0bc\r\n+PONG\r\n-MOVED 1 127.0.0.1:7000\r\n"
        let expected: [RESPValue] = [
            .array([
                .array([.bulkString(ByteBuffer()), .bulkString(nil)]), .array([]), .array([.array([.integer(-9)])]),
            ]),
            .bulkString(ByteBuffer(bytes: Array("a\r\n\0bc".utf8))),
            .simpleString("PONG"),
            .error("MOVED 1 127.0.0.1:7000"),
        ]
        let whole = RESPReader()
        try whole.feed(ByteBuffer(string: wire))
        var replies: [RESPValue] = []
        while let reply = try whole.next() { replies.append(reply) }
        #expect(replies == expected)

        let trickle = RESPReader()
        replies = []
        for byte in wire.utf8 {
            try trickle.feed(ByteBuffer(bytes: [byte]))
            while let reply = try trickle.next() { replies.append(reply) }
        }
        #expect(replies == expected)
    }

    /// A payload handed out stays what it was while later replies are parsed (its buffer is never reused).
    @Test func payloadsOutliveLaterReplies() throws {
        let reader = RESPReader()
        try reader.feed(ByteBuffer(string: "*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nfirst\r\n"))
        guard case .array(let first?) = try reader.next(), case .bulkString(let payload?) = first[2] else {
            Issue.record("no push")
            return
        }
        for index in 0..<100 {
            try reader.feed(ByteBuffer(string: "*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nlater\r\n:\(index)\r\n"))
            _ = try reader.next()
            _ = try reader.next()
        }
        #expect(String(buffer: payload) == "first")
    }

    /// Lengths of every digit count read back as written.
    @Test(arguments: [0, 1, 9, 10, 99, 100, 999, 1_000, 65_536, 1_000_001])
    func encodedLengthsReadBack(length: Int) throws {
        let argument = ByteBuffer(repeating: 0x78, count: length)
        var wire = ByteBuffer()
        RESPEncoder.encode(Array(repeating: argument, count: 11), into: &wire)
        let reader = RESPReader()
        try reader.feed(wire)
        #expect(try reader.next() == .array(Array(repeating: .bulkString(argument), count: 11)))
        #expect(try reader.next() == nil)
    }

    @Test func encoderRoundTrips() throws {
        var buffer = ByteBuffer()
        RESPEncoder.encode(["PUBLISH", "room:lobby", "hi there"], into: &buffer)
        #expect(String(buffer: buffer) == "*3\r\n$7\r\nPUBLISH\r\n$10\r\nroom:lobby\r\n$8\r\nhi there\r\n")
        // Binary and empty arguments, and a buffer read from the middle (a slice of its storage).
        var payload = ByteBuffer(bytes: [0xFF, 0x00, 0x0D, 0x0A, 0x41])
        payload.moveReaderIndex(forwardBy: 1)
        var more = ByteBuffer()
        RESPEncoder.encode([ByteBuffer(string: "SET"), ByteBuffer(), payload], into: &more)
        #expect(
            Array(more.readableBytesView) == Array("*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\n".utf8) + [
                0x00, 0x0D, 0x0A, 0x41, 0x0D, 0x0A,
            ]
        )
    }
}
