import Foundation
import NIOCore
import NIOHTTP1
import PorticoTestSupport
import Testing

/// `portico-chat`'s limits, against the built binary on a free loopback port (in-process broker): rooms per
/// connection, over-long names, a flood of operations, and no Redis password in its log.
@Suite(.serialized) struct ChatNodeLimitsTests {
    /// A running `portico-chat`, stopped by ``stop()``.
    struct Node {
        let process: ChildProcess
        let port: Int

        static func start(_ arguments: [String] = [], log: String? = nil) async throws -> Node? {
            guard let chat = ChatClusterTests.chatBinary() else { return nil }
            let port = try freeLoopbackPort()
            let process = try ChildProcess.start(
                chat,
                ["--listen", "127.0.0.1:\(port)", "--node-id", "limits"] + arguments,
                log: log
            )
            let node = Node(process: process, port: port)
            guard await node.isServing() else {
                process.stop()
                Issue.record("portico-chat did not come up")
                return nil
            }
            return node
        }

        func isServing() async -> Bool {
            await eventually(timeout: .seconds(10)) {
                (try? await HTTPTestClient.request(port: self.port, .GET, "/healthz"))?.status == 200
            }
        }

        /// A client past its `welcome`.
        func connect() async throws -> WebSocketTestClient {
            let client = try await WebSocketTestClient.connect(port: self.port)
            #expect(try await ChatClusterTests.next("welcome", from: client)["node"] as? String == "limits")
            return client
        }

        func stop() { self.process.stop() }
    }

    static func json(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    @Test func aJoinBeyondMaxRoomsIsAnErrorAndTheConnectionStaysUsable() async throws {
        guard let node = try await Node.start(["--max-rooms", "3"]) else { return }
        defer { node.stop() }
        let client = try await node.connect()
        for index in 0..<3 {
            try await client.send(text: Self.json(["op": "join", "room": "r\(index)", "name": "alice"]))
            #expect(try await ChatClusterTests.next("joined", from: client)["room"] as? String == "r\(index)")
        }
        try await client.send(text: Self.json(["op": "join", "room": "r3"]))
        let error = try await ChatClusterTests.next("error", from: client)
        #expect((error["reason"] as? String)?.contains("at most 3 rooms") == true)
        // Still usable: say something in a room it is in, leave one, and the fourth join works.
        try await client.send(text: Self.json(["op": "say", "room": "r0", "text": "still here", "id": "c-1"]))
        let message = try await ChatClusterTests.next("message", from: client)
        #expect(message["text"] as? String == "still here" && message["id"] as? String == "c-1")
        try await client.send(text: Self.json(["op": "leave", "room": "r1"]))
        try await client.send(text: Self.json(["op": "join", "room": "r3"]))
        #expect(try await ChatClusterTests.next("joined", from: client)["room"] as? String == "r3")
        await client.close()
    }

    @Test func overLongRoomNamesAreErrorsAndTheNodeKeepsServing() async throws {
        guard let node = try await Node.start() else { return }
        defer { node.stop() }
        let client = try await node.connect()
        let rooms = [
            String(repeating: "a", count: 65),  // over 64 characters
            String(repeating: "é", count: 200),  // 200 characters: over 256 bytes
            "e" + String(repeating: "\u{301}", count: 30_000),  // one character of 60,001 bytes
            String(repeating: "x", count: 60_000),
        ]
        for room in rooms {
            try await client.send(text: Self.json(["op": "join", "room": room, "name": "alice"]))
            let error = try await ChatClusterTests.next("error", from: client)
            #expect((error["reason"] as? String)?.hasPrefix("join needs a room") == true)
        }
        // A name far over its limit is not used (the previous name stays), and nothing breaks.
        let longName = String(repeating: "n", count: 60_000)
        try await client.send(text: Self.json(["op": "join", "room": "ok", "name": longName]))
        #expect(try await ChatClusterTests.next("joined", from: client)["room"] as? String == "ok")
        try await client.send(text: Self.json(["op": "say", "room": "ok", "text": "hi"]))
        #expect(try await ChatClusterTests.next("message", from: client)["from"] as? String == "anonymous")
        #expect(await node.isServing())
        let another = try await node.connect()
        try await another.send(text: Self.json(["op": "join", "room": "ok", "name": "bob"]))
        let joined = try await ChatClusterTests.next("joined", from: another)
        #expect((joined["members"] as? NSNumber)?.intValue == 2, "\(joined)")
        await client.close()
        await another.close()
    }

    /// 10,000 operations in one write, far more than the per-connection queue holds: reading pauses and
    /// resumes, and every operation is still worked through once, in order.
    @Test func aFloodOfOperationsIsWorkedThroughInOrder() async throws {
        guard let node = try await Node.start() else { return }
        defer { node.stop() }
        let client = try await node.connect()
        var flood = ByteBuffer()
        for index in 0..<10_000 {
            var frame = WebSocketTestClient.frame(opcode: 0x1, payload: Array(#"{"op":"nope-\#(index)"}"#.utf8))
            flood.writeBuffer(&frame)
        }
        try await client.sendRaw(flood)
        try await client.send(text: Self.json(["op": "join", "room": "after", "name": "alice"]))
        var expected = 0
        while let frame = try await client.receive(timeout: .seconds(20)) {
            let object = ChatClusterTests.chatJSON(frame)
            if object["op"] as? String == "joined" { break }
            #expect(object["reason"] as? String == "unknown op nope-\(expected)")
            expected += 1
        }
        #expect(expected == 10_000)
        await client.close()
    }

    /// A `say` is said from the socket's loop when the session is idle and the room joined, through the session
    /// otherwise: either way in order with joins and leaves. A say in one write right after its join is said (the
    /// session's path), a run of says comes back in order, and a say right after a leave, in the same write or
    /// later, is refused, never broadcast.
    @Test func saysKeepTheirPlaceAmongJoinsAndLeaves() async throws {
        guard let node = try await Node.start() else { return }
        defer { node.stop() }
        let client = try await node.connect()
        let bob = try await node.connect()  // in the room throughout: what alice's says reach
        try await bob.send(text: Self.json(["op": "join", "room": "r", "name": "bob"]))
        #expect(try await ChatClusterTests.next("joined", from: bob)["room"] as? String == "r")
        var joinAndSay = ByteBuffer()
        for object: [String: Any] in [
            ["op": "join", "room": "r", "name": "alice"], ["op": "say", "room": "r", "text": "first"],
        ] {
            var frame = WebSocketTestClient.frame(opcode: 0x1, payload: Array(Self.json(object).utf8))
            joinAndSay.writeBuffer(&frame)
        }
        try await client.sendRaw(joinAndSay)
        #expect(try await ChatClusterTests.next("message", from: client)["text"] as? String == "first")
        try await Task.sleep(for: .milliseconds(100))  // the session is idle now: the next says take the fast path
        for index in 0..<200 {
            try await client.send(text: Self.json(["op": "say", "room": "r", "text": "m\(index)"]))
        }
        for index in 0..<200 {
            let message = try await ChatClusterTests.next("message", from: client)
            #expect(message["text"] as? String == "m\(index)")
            #expect(message["from"] as? String == "alice")
        }
        var leaveAndSay = ByteBuffer()
        for object: [String: Any] in [["op": "leave", "room": "r"], ["op": "say", "room": "r", "text": "late"]] {
            var frame = WebSocketTestClient.frame(opcode: 0x1, payload: Array(Self.json(object).utf8))
            leaveAndSay.writeBuffer(&frame)
        }
        try await client.sendRaw(leaveAndSay)
        #expect(
            try await ChatClusterTests.next("error", from: client)["reason"] as? String
                == "join the room before you say something in it"
        )
        try await Task.sleep(for: .milliseconds(100))
        try await client.send(text: Self.json(["op": "say", "room": "r", "text": "later"]))
        #expect(
            try await ChatClusterTests.next("error", from: client)["reason"] as? String
                == "join the room before you say something in it"
        )
        // Bob heard every say of alice's while she was in the room, in order, and nothing after she left.
        try await bob.send(text: Self.json(["op": "say", "room": "r", "text": "end"]))
        var heard: [String] = []
        while true {
            let text = try await ChatClusterTests.next("message", from: bob)["text"] as? String ?? "?"
            if text == "end" { break }
            heard.append(text)
        }
        #expect(heard == ["first"] + (0..<200).map { "m\($0)" })
        await client.close()
        await bob.close()
    }

    @Test func theRedisPasswordIsNotLogged() async throws {
        guard let chat = ChatClusterTests.chatBinary() else { return }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("chat-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        // Nobody listens on the Redis port: the node logs its start, then keeps trying to connect.
        let redisPort = try freeLoopbackPort()
        let process = try ChildProcess.start(
            chat,
            [
                "--listen", "127.0.0.1:\(try freeLoopbackPort())", "--node-id", "limits",
                "--redis", "redis://user:s3cret-pw@127.0.0.1:\(redisPort)",
            ],
            log: log
        )
        defer { process.stop() }
        let started = await eventually(timeout: .seconds(10)) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("chat node starting")
        }
        #expect(started)
        try await Task.sleep(for: .milliseconds(300))  // a reconnect or two logged as well
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(!text.contains("s3cret-pw"))
        #expect(text.contains("redis://user:***@127.0.0.1:\(redisPort)"))
    }
}
