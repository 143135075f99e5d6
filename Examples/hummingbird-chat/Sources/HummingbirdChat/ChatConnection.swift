import Foundation
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import PorticoChatProtocol
import PorticoRelay
import Synchronization

/// One WebSocket client of this node, speaking portico-chat's protocol: `join`, `leave` and `say` in; `welcome`,
/// `joined`, `message`, `presence` and `error` out, JSON text frames with the same keys and bytes as portico-chat's.
///
/// What it shows:
/// - **Relay deliveries into an async writer.** The relay hands a room's messages to a member through a synchronous
///   ``Relay/Delivery`` closure on its event loop, which must never block; Hummingbird's outbound writer is async.
///   The bridge is one `AsyncStream` per connection, the *outbox*: the closure yields into it, and one task writes
///   what it holds to the socket, in order. Replies go through the same outbox, so they keep their place among
///   the room's messages.
/// - **A simple slow-consumer policy.** The outbox keeps the newest ``outboxLimit`` frames: a client that falls
///   that far behind loses the oldest, and never slows its rooms or this node. (portico-chat, on NIO, drops
///   messages for a client whose socket is not writable; `Relay.join(_:member:bufferLimit:deliverAsync:)` does
///   the same as this outbox, with a queue per member and room.)
/// - **Operations in order.** Each is done before the next frame is read, so a join is complete before a `say`
///   in that room, and a client that floods ops fills its own TCP window, not the node's memory.
struct ChatConnection {
    /// Frames kept for a client that does not read, at most (the newest).
    static let outboxLimit = 1_024
    /// Frames in and out at most, in bytes (portico-chat's).
    static let maxMessageSize = 1 << 16
    /// Room names at most, in characters and in UTF-8 bytes (portico-chat's).
    static let roomLimit = (characters: 64, bytes: 256)
    /// Sender names at most, likewise.
    static let nameLimit = (characters: 32, bytes: 128)
    /// Rooms one connection may be in at once (portico-chat's default `--max-rooms`).
    static let maxRooms = 100
    /// Connections accepted so far by this process: member ids are `<node>#<n>`, as portico-chat's.
    private static let sequence = Atomic<Int>(0)

    let node: String
    let member: String
    let relay: Relay
    private let outbox: AsyncStream<ByteBuffer>.Continuation
    private var name = "anonymous"
    private var rooms: Set<String> = []

    /// Serves one client until it goes away, then leaves its rooms.
    ///
    /// - Parameters:
    ///   - node: this node's id.
    ///   - relay: the relay the rooms live in.
    ///   - inbound: the client's frames.
    ///   - outbound: where frames to the client go.
    static func run(
        node: String,
        relay: Relay,
        inbound: WebSocketInboundStream,
        outbound: WebSocketOutboundWriter
    ) async {
        let (frames, outbox) = AsyncStream.makeStream(
            of: ByteBuffer.self,
            bufferingPolicy: .bufferingNewest(Self.outboxLimit)
        )
        let member = "\(node)#\(Self.sequence.wrappingAdd(1, ordering: .relaxed).newValue)"
        await withTaskGroup(of: Void.self) { group in
            // The outbox's one reader: every payload is written as it is, as one text frame.
            group.addTask {
                for await payload in frames {
                    do {
                        try await outbound.write(.custom(WebSocketFrame(fin: true, opcode: .text, data: payload)))
                    } catch {
                        return  // the client is gone: its reads end too
                    }
                }
            }
            var connection = ChatConnection(node: node, member: member, relay: relay, outbox: outbox)
            connection.send(["op": "welcome", "node": node])
            do {
                for try await message in inbound.messages(maxSize: Self.maxMessageSize) {
                    guard case .text(let text) = message else { continue }  // binary frames mean nothing here
                    await connection.handle(text)
                }
            } catch {
                // A protocol error or a reset: the client is gone all the same.
            }
            await connection.close()
            outbox.finish()
            group.cancelAll()  // what is still queued has no one to read it
        }
    }

    /// Parses one client frame and carries out its operation.
    mutating func handle(_ text: String) async {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let op = object["op"] as? String
        else {
            self.error("expected a JSON object with an op")
            return
        }
        let room = object["room"] as? String
        switch op {
        case "join": await self.join(room, name: object["name"] as? String)
        case "leave": await self.leave(room)
        case "say": await self.say(in: room, text: object["text"] as? String, id: object["id"] as? String)
        default: self.error("unknown op \(op)")
        }
    }

    private mutating func join(_ room: String?, name: String?) async {
        guard let room, Self.isValid(room, limit: Self.roomLimit) else {
            let limit = Self.roomLimit
            self.error("join needs a room (1-\(limit.characters) characters, \(limit.bytes) bytes at most)")
            return
        }
        if let name, Self.isValid(name, limit: Self.nameLimit) { self.name = name }
        guard !self.rooms.contains(room) else { return }
        guard self.rooms.count < Self.maxRooms else {
            self.error("cannot join \(room): at most \(Self.maxRooms) rooms per connection")
            return
        }
        let outbox = self.outbox
        do {
            // Called on the relay's event loop with each message of the room, from this node or another: the bytes
            // the saying node broadcast, queued as they are and never awaited.
            try await self.relay.join(Room(room), member: self.member, deliver: { payload in outbox.yield(payload) })
        } catch {
            self.error("cannot join \(room): \(error)")
            return
        }
        self.rooms.insert(room)
        // Members on every live node, from the presence the nodes keep in Redis.
        let members = await self.relay.memberCount(Room(room))
        self.send(["op": "joined", "room": room, "members": members])
        await self.presence(room)
    }

    private mutating func leave(_ room: String?) async {
        guard let room, self.rooms.remove(room) != nil else { return }
        try? await self.relay.leave(Room(room), member: self.member)
        await self.presence(room)
    }

    private func say(in room: String?, text: String?, id: String?) async {
        guard let room, self.rooms.contains(room) else {
            self.error("join the room before you say something in it")
            return
        }
        guard let text, !text.isEmpty, text.utf8.count <= 4096 else {
            self.error("say needs a text of 1-4096 bytes")
            return
        }
        // The sender gets its own message too, as on portico-chat: the relay delivers it to this node's members
        // at once (this one included) and publishes it for the others.
        let message = ChatJSON.message(room: room, from: self.name, text: text, node: self.node, id: id)
        try? await self.relay.broadcast(message, to: Room(room))
    }

    /// Leaves every room (the client went away) and tells the others.
    private func close() async {
        await self.relay.leaveAll(member: self.member)
        for room in self.rooms { await self.presence(room) }
    }

    /// Tells the room how many members it has now, across the nodes.
    private func presence(_ room: String) async {
        let members = await self.relay.memberCount(Room(room))
        guard let payload = Self.encode(["op": "presence", "room": room, "members": members]) else { return }
        try? await self.relay.broadcast(payload, to: Room(room))
    }

    private func error(_ reason: String) {
        self.send(["op": "error", "reason": reason])
    }

    /// Queues a reply for this client alone.
    private func send(_ object: [String: Any]) {
        guard let payload = Self.encode(object) else { return }
        self.outbox.yield(payload)
    }

    /// The JSON portico-chat writes for everything but `message`: Foundation's, keys sorted.
    private static func encode(_ object: [String: Any]) -> ByteBuffer? {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return nil }
        return ByteBuffer(bytes: data)
    }

    private static func isValid(_ text: String, limit: (characters: Int, bytes: Int)) -> Bool {
        !text.isEmpty && text.utf8.count <= limit.bytes && text.count <= limit.characters
            && !text.contains(where: { $0.isNewline })
    }
}
