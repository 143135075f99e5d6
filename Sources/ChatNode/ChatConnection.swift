import Foundation
import NIOCore
import NIOWebSocket
import PorticoRelay

/// One chat client on `/ws`: JSON text frames in, JSON text frames out (DESIGN.md, chat protocol).
///
/// Operations run one at a time, in order, on a task of their own, so a join is done before the next say.
final class ChatConnection: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let server: ChatServer
    private static let sequence = AtomicCounter()

    init(server: ChatServer) {
        self.server = server
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let server = self.server
        // One atomic step: connections accepted at once on different event loops must not share an id.
        let member = "\(server.node)#\(Self.sequence.add(1))"
        let (stream, continuation) = AsyncStream<Operation>.makeStream()
        self.queue = continuation
        server.register(channel)
        Task {
            await ChatSession(server: server, channel: channel, member: member).run(stream)
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

    private var queue: AsyncStream<Operation>.Continuation?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let text = String(buffer: frame.unmaskedData)
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                let op = object["op"] as? String
            else {
                Self.send(["op": "error", "reason": "expected a JSON object with an op"], on: context.channel)
                return
            }
            self.server.stats.messagesIn.add(1)
            self.queue?.yield(
                Operation(
                    op: op,
                    room: object["room"] as? String,
                    name: object["name"] as? String,
                    text: object["text"] as? String,
                    id: object["id"] as? String
                )
            )
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

    func channelInactive(context: ChannelHandlerContext) {
        self.queue?.finish()
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

    func run(_ operations: AsyncStream<ChatConnection.Operation>) async {
        var name = "anonymous"
        var rooms: Set<String> = []
        for await operation in operations {
            switch operation.op {
            case "join":
                guard let room = operation.room, Self.isValid(room, max: 64) else {
                    self.error("join needs a room (1-64 characters)")
                    continue
                }
                if let given = operation.name, Self.isValid(given, max: 32) { name = given }
                guard !rooms.contains(room) else { continue }
                let channel = self.channel
                let stats = self.server.stats
                do {
                    try await self.server.relay.join(Room(room), member: self.member) { payload in
                        // A client that cannot keep up loses messages (counted); it never slows the room.
                        guard channel.isWritable else {
                            stats.dropped.add(1)
                            return
                        }
                        stats.messagesOut.add(1)
                        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: payload), promise: nil)
                    }
                    rooms.insert(room)
                    let members = await self.server.relay.memberCount(Room(room))
                    ChatConnection.send(["op": "joined", "room": room, "members": members], on: self.channel)
                    await self.presence(room)
                } catch {
                    self.error("cannot join \(room): \(error)")
                }
            case "leave":
                guard let room = operation.room, rooms.remove(room) != nil else { continue }
                try? await self.server.relay.leave(Room(room), member: self.member)
                await self.presence(room)
            case "say":
                guard let room = operation.room, rooms.contains(room) else {
                    self.error("join the room before you say something in it")
                    continue
                }
                guard let text = operation.text, !text.isEmpty, text.utf8.count <= 4096 else {
                    self.error("say needs a text of 1-4096 bytes")
                    continue
                }
                var message: [String: Any] = [
                    "op": "message", "room": room, "from": name, "text": text, "node": self.server.node,
                ]
                if let id = operation.id { message["id"] = id }
                guard let data = try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys]) else {
                    continue
                }
                try? await self.server.relay.broadcast(ByteBuffer(bytes: data), to: Room(room))
            default:
                self.error("unknown op \(operation.op)")
            }
        }
        // The client went away: leave every room and tell the others.
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

    private static func isValid(_ text: String, max: Int) -> Bool {
        !text.isEmpty && text.count <= max && !text.contains(where: { $0.isNewline })
    }
}
