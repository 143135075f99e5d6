import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Chat fan-out end to end: R rooms × M members connect through the balancer to the chat nodes (the
/// `portico-chat` protocol), one member per room publishes at a fixed rate, and every member checks what it
/// receives. Reports deliveries/s, end-to-end delivery latency, and missing and duplicate deliveries.
struct Fanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanout",
        abstract: "R rooms × M members through the balancer: delivery latency, missing and duplicate messages."
    )

    @Option(help: "Balancer (or chat node) host:port (loopback); several, comma-separated, take members in turn.")
    var target: String = "127.0.0.1:8080"

    @Option(help: "Request path of the chat WebSocket endpoint (default /ws, or Socket.IO's for --protocol socketio).")
    var path: String?

    @Option(
        help: """
            portico (the portico-chat protocol) or socketio (Engine.IO 4 over WebSocket: events join, say \
            and message, as scripts/socketio_node.py serves them).
            """
    )
    var `protocol`: FanoutProtocol = .portico

    @Option(help: "Rooms.")
    var rooms: Int = 10

    @Option(help: "Members per room (each its own WebSocket).")
    var members: Int = 20

    @Option(help: "Messages per second published, over all rooms.")
    var rate: Int = 500

    @Option(help: "Seconds to publish.")
    var duration: Int = 10

    @Option(help: "Text size of each message in bytes.")
    var size: Int = 64

    @Option(help: "Event loop threads for the generator.")
    var threads: Int = 1

    @Option(
        help: "NAME=PID[,PID…]: report that process group's CPU per delivery over the publishing phase (repeatable)."
    )
    var cpu: [String] = []

    func run() async throws {
        let targets = try self.target.split(separator: ",").map { try parseTarget(String($0)) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        let results = NIOLockedValueBox(FanoutResults())
        var members: [(room: Int, channel: any Channel, ready: EventLoopFuture<String>)] = []
        let wire = self.protocol
        for room in 0..<self.rooms {
            for member in 0..<self.members {
                // Members take the targets in turn; each room's publisher (member 0) is on the first.
                let (host, port) = targets[member % targets.count]
                let ready = group.next().makePromise(of: String.self)
                let path =
                    switch wire {
                    case .portico: "\(self.path ?? "/ws")?client=bench-\(room)-\(member)"
                    case .socketio: self.path ?? "/socket.io/?EIO=4&transport=websocket"
                    }
                let channel = try await ClientBootstrap(group: group)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                FanoutMember(
                                    host: host,
                                    path: path,
                                    wire: wire,
                                    room: room,
                                    results: results,
                                    ready: ready
                                )
                            )
                        }
                    }
                    .connect(host: host, port: port).get()
                members.append((room, channel, ready.futureResult))
            }
        }
        var nodes: [String: Int] = [:]
        for member in members { nodes[try await member.ready.get(), default: 0] += 1 }
        try await Task.sleep(for: .seconds(1))  // presence updates from the joins settle
        results.withLockedValue { $0.reset() }

        let watched = try self.cpu.map { entry in
            guard let equals = entry.firstIndex(of: "="),
                case let pids = entry[entry.index(after: equals)...].split(separator: ",").compactMap({ Int32($0) }),
                !pids.isEmpty
            else { throw ValidationError("--cpu: expected NAME=PID[,PID…]") }
            return (name: String(entry[..<equals]), pids: pids)
        }
        let cpuBefore = watched.map { cpuTicks(of: $0.pids) }
        // Publishers: the first member of every room, paced together at `rate` messages/s in all.
        let publishers = stride(from: 0, to: members.count, by: self.members).map { members[$0] }
        let padding = String(repeating: "x", count: max(0, self.size - 32))
        var published = [Int](repeating: 0, count: self.rooms)
        let started = ContinuousClock.now
        let end = started + .seconds(self.duration)
        var sent = 0
        while ContinuousClock.now < end {
            let due = Int((ContinuousClock.now - started).seconds * Double(self.rate))
            while sent < due {
                let room = sent % self.rooms
                published[room] += 1
                let id = "\(room)-\(published[room])-\(NIODeadline.now().uptimeNanoseconds)"
                let text =
                    switch wire {
                    case .portico: #"{"op":"say","room":"bench-\#(room)","text":"\#(padding)","id":"\#(id)"}"#
                    case .socketio: #"42["say",{"room":"bench-\#(room)","text":"\#(padding)","id":"\#(id)"}]"#
                    }
                publishers[room].channel.writeAndFlush(
                    WebSocketWire.frame(opcode: 0x1, payload: Array(text.utf8)),
                    promise: nil
                )
                sent += 1
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        let elapsed = ContinuousClock.now - started
        try await Task.sleep(for: .seconds(2))  // in-flight deliveries land
        let final = results.withLockedValue { $0 }
        let cpuAfter = watched.map { cpuTicks(of: $0.pids) }
        for member in members { try? await member.channel.close() }
        try await group.shutdownGracefully()

        let expected = published.reduce(0, +) * self.members
        // Per member: sequences skipped over, plus those after the last one it got (all, if it got none).
        var missingBy: [String: Int] = [:]
        for (key, node) in final.nodes {
            let received = (final.next[key] ?? 1) - 1
            let count = published[key.room] - received + (final.gaps[key] ?? 0)
            if count > 0 { missingBy["bench-\(key.room)@\(node)", default: 0] += count }
        }
        let missing = missingBy.values.reduce(0, +)
        print(
            "fanout target=\(self.target) rooms=\(self.rooms) members=\(self.members) rate=\(self.rate)/s "
                + "duration=\(self.duration)s size=\(self.size)B"
        )
        if !watched.isEmpty {
            let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
            let costs = watched.indices.map { index in
                let micros = Double(cpuAfter[index] - cpuBefore[index]) / ticksPerSecond * 1e6
                return "\(watched[index].name)=\((micros / Double(max(final.delivered, 1)) * 100).rounded() / 100)"
            }
            print("cpu_us_per_delivery " + costs.joined(separator: " "))
        }
        print("nodes: " + nodes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        print(
            "published=\(published.reduce(0, +)) deliveries=\(final.delivered)/\(expected) "
                + "deliveries/s=\(Int(Double(final.delivered) / elapsed.seconds)) \(final.latencies.summary) "
                + "missing=\(missing) duplicates=\(final.duplicates) errors=\(final.errors)"
        )
        if missing > 0 {
            print(
                "missing by room@node: "
                    + missingBy.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            )
        }
        if missing > 0 || final.duplicates > 0 || final.errors > 0 { throw ExitCode(1) }
    }
}

/// User plus system CPU time of `pids` in clock ticks (/proc/PID/stat fields 14 and 15).
func cpuTicks(of pids: [Int32]) -> Int {
    pids.reduce(0) { total, pid in
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return total }
        // Fields after the command name start at field 3 (state).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return total }
        return total + user + system
    }
}

struct FanoutResults: Sendable {
    struct Key: Hashable, Sendable {
        let member: ObjectIdentifier
        let room: Int
    }

    var delivered = 0
    var duplicates = 0
    /// Messages skipped over per member (a later sequence arrived first): each is missing.
    var gaps: [Key: Int] = [:]
    var errors = 0
    /// The next sequence each member expects from its room's publisher.
    var next: [Key: Int] = [:]
    var latencies = Latencies()
    /// The chat node each member landed on (kept by `reset()`).
    var nodes: [Key: String] = [:]

    /// Forgets what was received so far (join and presence traffic), not who is where.
    mutating func reset() {
        self = FanoutResults(nodes: self.nodes)
    }
}

/// What the members speak.
enum FanoutProtocol: String, ExpressibleByArgument, Sendable {
    case portico
    case socketio
}

/// One chat member: upgrades, joins its room, then checks every `message` frame's id (room-sequence-sent).
/// Over Socket.IO: `0{…}` (open) → `40`, `40{…}` (connected) → `42["join",room]`, `42["joined",{…,"node"}]`;
/// messages are `42["message",{…,"id"}]`, and a ping `2` gets its pong `3`.
final class FanoutMember: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let host: String
    private let path: String
    private let wire: FanoutProtocol
    private let room: Int
    private let results: NIOLockedValueBox<FanoutResults>
    private let ready: EventLoopPromise<String>
    private var buffer = ByteBuffer()
    private var upgraded = false
    private var node = "?"
    private var joined = false

    init(
        host: String,
        path: String,
        wire: FanoutProtocol,
        room: Int,
        results: NIOLockedValueBox<FanoutResults>,
        ready: EventLoopPromise<String>
    ) {
        self.host = host
        self.path = path
        self.wire = wire
        self.room = room
        self.results = results
        self.ready = ready
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(
            Self.wrapOutboundOut(WebSocketWire.upgradeRequest(host: self.host, path: self.path)),
            promise: nil
        )
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        self.buffer.writeBuffer(&incoming)
        if !self.upgraded {
            guard let upgraded = WebSocketWire.readHandshake(&self.buffer) else { return }
            guard upgraded else {
                context.close(promise: nil)  // channelInactive fails `ready`
                return
            }
            self.upgraded = true
        }
        while let frame = WebSocketWire.nextFrame(&self.buffer) {
            guard frame.opcode == 0x1 else { continue }
            let text = String(buffer: frame.payload)
            if self.wire == .socketio, let reply = Self.engineIOControl(text) {
                if !reply.isEmpty { self.send(reply, context: context) }
                continue
            }
            if !self.joined {
                if let node = Self.field("node", in: text), text.contains(#""op":"welcome""#) {
                    self.node = node
                    self.send(#"{"op":"join","room":"bench-\#(self.room)","name":"m"}"#, context: context)
                } else if text.hasPrefix("40") {
                    self.send(#"42["join","bench-\#(self.room)"]"#, context: context)  // Socket.IO: connected
                } else if text.contains(#""op":"joined""#) || text.hasPrefix(#"42["joined""#) {
                    if let node = Self.field("node", in: text) { self.node = node }
                    self.joined = true
                    let key = FanoutResults.Key(member: ObjectIdentifier(self), room: self.room)
                    self.results.withLockedValue { [node] in $0.nodes[key] = node }
                    self.ready.succeed(self.node)
                }
                continue
            }
            guard text.contains(#""op":"message""#), let id = Self.field("id", in: text) else { continue }
            self.record(id, member: ObjectIdentifier(self))
        }
        self.buffer.discardReadBytes()
    }

    private func record(_ id: String, member: ObjectIdentifier) {
        let parts = id.split(separator: "-")
        guard parts.count == 3, let room = Int(parts[0]), let sequence = Int(parts[1]), let sent = UInt64(parts[2]),
            room == self.room
        else {
            self.results.withLockedValue { $0.errors += 1 }  // garbled, or from another room
            return
        }
        let micros = Int64((NIODeadline.now().uptimeNanoseconds &- sent) / 1000)
        self.results.withLockedValue { results in
            let key = FanoutResults.Key(member: member, room: room)
            let next = results.next[key] ?? 1
            if sequence < next {
                results.duplicates += 1
                return
            }
            if sequence > next { results.gaps[key, default: 0] += sequence - next }
            results.next[key] = sequence + 1
            results.delivered += 1
            results.latencies.record(micros: micros)
        }
    }

    private func send(_ text: String, context: ChannelHandlerContext) {
        context.writeAndFlush(
            Self.wrapOutboundOut(WebSocketWire.frame(opcode: 0x1, payload: Array(text.utf8))),
            promise: nil
        )
    }

    /// Engine.IO packets that are not Socket.IO events: what to answer (empty: nothing), or nil for an event
    /// or a namespace packet. `0…` open → `40` (connect to /), `2` ping → `3` pong.
    private static func engineIOControl(_ text: String) -> String? {
        if text.hasPrefix("0") { return "40" }
        if text == "2" { return "3" }
        if text.hasPrefix("4") { return nil }
        return ""
    }

    /// The string value of `"name":"…"` in a flat JSON object.
    private static func field(_ name: String, in text: String) -> String? {
        guard let start = text.firstRange(of: "\"\(name)\":\"") else { return nil }
        let rest = text[start.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        return String(rest[..<end])
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.joined {
            self.ready.fail(ValidationError("the connection closed before joining (upgrade refused?)"))
        } else {
            self.results.withLockedValue { $0.errors += 1 }  // closed under us
        }
        context.fireChannelInactive()
    }
}
