import Foundation
import NIOCore
import NIOWebSocket
import PorticoChatProtocol
import PorticoRelay
import Synchronization

/// One chat client on `/ws`: JSON text frames in, JSON text frames out (DESIGN.md, chat protocol).
///
/// Operations run one at a time, in order, on a task of their own, so a join is done before the next say. They
/// wait for it in a ``BoundedInbox``: when it is full this handler stops passing `read`s on (as the tunnel does
/// when its partner is not writable), so a client that floods ops fills its own TCP window, not the node's
/// memory; the session calls `channel.read()` once it has caught up.
final class ChatConnection: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let server: ChatServer
    private static let sequence = AtomicCounter()
    private let inbox: BoundedInbox<Operation>
    /// What the session has joined and its sender name, as of its last finished operation (see ``accept``).
    private let joined = JoinedRooms()
    /// Text frames that arrived from a socket read already under way when the inbox filled up: at most what
    /// that read brought in. They go to the inbox, in order, before anything is read again.
    private var overflow = CircularBuffer<WebSocketFrame>()

    init(server: ChatServer) {
        self.server = server
        self.inbox = BoundedInbox(capacity: server.operationQueueLimit)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let server = self.server
        let inbox = self.inbox
        let joined = self.joined
        // One atomic step: connections accepted at once on different event loops must not share an id.
        let member = "\(server.node)#\(Self.sequence.add(1))"
        server.register(channel)
        Task {
            await ChatSession(server: server, channel: channel, member: member, joined: joined).run(inbox)
        }
        Self.send(["op": "welcome", "node": server.node], on: channel)
    }

    /// A parsed client operation, Sendable so it can cross to the session's task.
    struct Operation: Sendable {
        let op: String
        let room: String?
        let name: String?
        let text: String?
        let id: String?
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            if self.overflow.isEmpty, self.accept(frame, context: context) { return }
            self.overflow.append(frame)  // the inbox is full: `read` below stops reading until there is room
        case .ping:
            context.writeAndFlush(
                Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)),
                promise: nil
            )
        case .connectionClose:
            var reply = ByteBuffer()
            reply.writeInteger(UInt16(1000))
            let channel = context.channel
            context.writeAndFlush(
                Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply))
            )
            .whenComplete { _ in channel.close(promise: nil) }
        default:
            break
        }
    }

    /// Reads on only while the inbox has room; frames held back go in first.
    func read(context: ChannelHandlerContext) {
        while true {
            while let frame = self.overflow.first, self.accept(frame, context: context) {
                self.overflow.removeFirst()
            }
            // Full: reading pauses; the session calls `channel.read()`, which comes back here, once it made room.
            guard self.inbox.shouldRead() else { return }
            if self.overflow.isEmpty {
                context.read()
                return
            }
            // The session made room after the frames above were refused: move more of them.
        }
    }

    /// Parses `frame` and queues its operation; false (nothing done) if the inbox is full.
    private func accept(_ frame: WebSocketFrame, context: ChannelHandlerContext) -> Bool {
        let text = String(buffer: frame.unmaskedData)
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
            let op = object["op"] as? String
        else {
            Self.send(["op": "error", "reason": "expected a JSON object with an op"], on: context.channel)
            return true
        }
        let operation = Operation(
            op: op,
            room: object["room"] as? String,
            name: object["name"] as? String,
            text: object["text"] as? String,
            id: object["id"] as? String
        )
        // The common case, a `say` in a joined room while the session has nothing else to do: said from here,
        // on the socket's loop, without the hop to the session's task and back (the session is idle, so every
        // earlier operation is done and this one stays in order). Anything else goes through the session.
        if op == "say", let room = operation.room, let name = self.joined.name(in: room), self.inbox.isConsumerWaiting,
            let message = ChatSession.message(operation, in: room, from: name, node: self.server.node)
        {
            if (try? self.server.relay.tryBroadcast(message, to: Room(room))) == true {
                self.server.stats.messagesIn.add(1)
                return true
            }
        }
        guard self.inbox.push(operation) else { return false }
        self.server.stats.messagesIn.add(1)
        return true
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.inbox.finish()
        self.overflow.removeAll()
        self.server.unregister(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    static func send(_ object: [String: Any], on channel: any Channel) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        let frame = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(bytes: data))
        channel.writeAndFlush(frame, promise: nil)
    }
}

/// The per-client sequence of operations against the relay.
struct ChatSession {
    let server: ChatServer
    let channel: any Channel
    let member: String
    /// The loop-side copy of `rooms` and `name` that lets ``ChatConnection`` say in a joined room itself.
    let joined: JoinedRooms

    /// Room names at most, in characters and in UTF-8 bytes (one character can take many bytes).
    static let roomLimit = (characters: 64, bytes: 256)
    /// Sender names at most, likewise.
    static let nameLimit = (characters: 32, bytes: 128)
    /// A `say`'s text at most, in UTF-8 bytes.
    static let textLimit = 4096

    /// The `message` op a `say` in `room` becomes, or nil if its text is empty or over ``textLimit`` (the session
    /// and the connection's fast path say the same way).
    static func message(
        _ say: ChatConnection.Operation,
        in room: String,
        from name: String,
        node: String
    ) -> ByteBuffer? {
        guard let text = say.text, !text.isEmpty, text.utf8.count <= Self.textLimit else { return nil }
        return ChatJSON.message(room: room, from: name, text: text, node: node, id: say.id)
    }

    func run(_ operations: BoundedInbox<ChatConnection.Operation>) async {
        var name = "anonymous"
        var rooms: Set<String> = []
        let channel = self.channel
        while let operation = await operations.next(onResume: { channel.read() }) {
            switch operation.op {
            case "join":
                guard let room = operation.room, Self.isValid(room, limit: Self.roomLimit) else {
                    let limit = Self.roomLimit
                    self.error("join needs a room (1-\(limit.characters) characters, \(limit.bytes) bytes at most)")
                    continue
                }
                if let given = operation.name, Self.isValid(given, limit: Self.nameLimit) { name = given }
                guard !rooms.contains(room) else { continue }
                guard rooms.count < self.server.maxRooms else {
                    self.error("cannot join \(room): at most \(self.server.maxRooms) rooms per connection")
                    continue
                }
                do {
                    // The relay writes the room's messages to this channel itself: framed once per message for
                    // every member, flushed once per batch; a client that cannot keep up loses messages
                    // (counted), it never slows the room.
                    try await self.server.relay.join(Room(room), member: self.member, channel: channel)
                    rooms.insert(room)
                    self.joined.set(rooms, name: name, on: channel.eventLoop)
                    let members = await self.server.relay.memberCount(Room(room))
                    ChatConnection.send(["op": "joined", "room": room, "members": members], on: self.channel)
                    await self.presence(room)
                } catch {
                    self.error("cannot join \(room): \(error)")
                }
            case "leave":
                guard let room = operation.room, rooms.remove(room) != nil else { continue }
                self.joined.set(rooms, name: name, on: channel.eventLoop)
                try? await self.server.relay.leave(Room(room), member: self.member)
                await self.presence(room)
            case "say":
                guard let room = operation.room, rooms.contains(room) else {
                    self.error("join the room before you say something in it")
                    continue
                }
                guard let message = Self.message(operation, in: room, from: name, node: self.server.node) else {
                    self.error("say needs a text of 1-\(Self.textLimit) bytes")
                    continue
                }
                try? await self.server.relay.broadcast(message, to: Room(room))
            default:
                self.error("unknown op \(operation.op)")
            }
        }
        // The client went away: leave every room and tell the others.
        self.joined.set([], name: name, on: channel.eventLoop)
        for room in rooms {
            try? await self.server.relay.leave(Room(room), member: self.member)
            await self.presence(room)
        }
    }

    private func presence(_ room: String) async {
        let members = await self.server.relay.memberCount(Room(room))
        let object: [String: Any] = ["op": "presence", "room": room, "members": members]
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        try? await self.server.relay.broadcast(ByteBuffer(bytes: data), to: Room(room))
    }

    private func error(_ reason: String) {
        ChatConnection.send(["op": "error", "reason": reason], on: self.channel)
    }

    private static func isValid(_ text: String, limit: (characters: Int, bytes: Int)) -> Bool {
        !text.isEmpty && text.utf8.count <= limit.bytes && text.count <= limit.characters
            && !text.contains(where: { $0.isNewline })
    }
}

/// The rooms a session has joined and its sender name, kept on the connection's event loop for ``ChatConnection``
/// to say in them without the session. The session sets them (one hop) when a join or leave is done, before it
/// waits for its next operation; until that hop has run, the copy counts as stale and is not used.
///
/// `@unchecked Sendable`: `rooms`, `sender` and `applied` are read and written only on the connection's event
/// loop (`set` hops there, `name(in:)` runs there); `requested` is atomic.
final class JoinedRooms: @unchecked Sendable {
    private var rooms: Set<String> = []
    private var sender = "anonymous"
    /// Updates asked for by the session, and the last one applied here.
    private let requested = Atomic<Int>(0)
    private var applied = 0

    /// The sender name to say `room` with, if the session has joined it (and no update is still on its way).
    func name(in room: String) -> String? {
        guard self.applied == self.requested.load(ordering: .acquiring), self.rooms.contains(room) else { return nil }
        return self.sender
    }

    func set(_ rooms: Set<String>, name: String, on eventLoop: any EventLoop) {
        let update = self.requested.add(1, ordering: .releasing).newValue
        eventLoop.execute {
            self.rooms = rooms
            self.sender = name
            self.applied = max(self.applied, update)
        }
    }
}
