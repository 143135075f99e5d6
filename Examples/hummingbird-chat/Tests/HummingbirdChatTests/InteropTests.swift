import Foundation
import HummingbirdWSClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PorticoRESP
import PorticoRelay
import ServiceLifecycle
import Testing

@testable import HummingbirdChat

/// portico-chat and hummingbird-chat in one room, linked by a private Redis: a client of each node gets the other's
/// messages, byte for byte as portico-chat writes them, and both nodes answer alike.
///
/// Needs `redis-server` and a built portico-chat: `swift build --product portico-chat` at the repository's root
/// (or `PORTICO_CHAT=/path/to/portico-chat`). hummingbird-chat runs in this process, on a port of its choosing.
@Suite(.serialized) struct InteropTests {
    @Test func clientsOfEitherNodeShareARoom() async throws {
        guard let porticoChat = Self.porticoChatPath() else { return }
        let (redis, redisURL) = try await Self.startRedis()
        defer { redis.stop() }
        let chatPort = try await freeLoopbackPort()
        let chat = try ChildProcess(
            porticoChat,
            [
                "--listen", "127.0.0.1:\(chatPort)", "--node-id", "chat-1", "--redis",
                "redis://127.0.0.1:\(redisURL.port)",
            ]
        )
        defer { chat.stop() }

        let broker = RedisBroker(configuration: RedisBroker.Configuration(url: redisURL, node: "hb-1"))
        let relay = Relay(node: "hb-1", broker: broker)
        let boundPort = NIOLockedValueBox(0)
        let application = ChatNode(node: "hb-1", relay: relay, broker: broker, logger: Logger(label: "hb-1"))
            .makeApplication(host: "127.0.0.1", port: 0) { channel in
                boundPort.withLockedValue { $0 = channel.localAddress?.port ?? 0 }
            }
        let services = ServiceGroup(services: [application], logger: Logger(label: "interop"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            do {
                let isListening = await eventually { boundPort.withLockedValue { $0 } != 0 }
                try #require(isListening, "hummingbird-chat did not start")
                // Up once its heartbeat is in Redis: a node writes it after it subscribed.
                for node in ["chat-1", "hb-1"] {
                    let alive = ["EXISTS", "portico:v1:alive:\(node)"]
                    let isAlive = await eventually { await Self.redis(redisURL, alive, is: .integer(1)) }
                    try #require(isAlive, "\(node) never reached Redis")
                }
                try await Self.converse(chatPort: chatPort, hummingbirdPort: boundPort.withLockedValue { $0 })
            } catch {
                await services.triggerGracefulShutdown()
                throw error
            }
            await services.triggerGracefulShutdown()
        }
    }

    /// Alice on portico-chat, Bob on hummingbird-chat.
    static func converse(chatPort: Int, hummingbirdPort: Int) async throws {
        // 200 with the node id once the relay's probes come back through Redis, as portico-chat answers.
        let isHealthy = await eventually {
            (try? await httpGet("/healthz", port: hummingbirdPort))?.hasPrefix("HTTP/1.1 200") == true
        }
        #expect(isHealthy)
        #expect(try await httpGet("/healthz", port: hummingbirdPort).hasSuffix("\r\n\r\nhb-1\n"))

        let alice = ChatClient.connect(port: chatPort)
        let bob = ChatClient.connect(port: hummingbirdPort)
        do {
            #expect(try await alice.next("welcome") == #"{"node":"chat-1","op":"welcome"}"#)
            #expect(try await bob.next("welcome") == #"{"node":"hb-1","op":"welcome"}"#)

            alice.send(#"{"op":"join","room":"lobby","name":"alice"}"#)
            #expect(try await alice.next("joined") == #"{"members":1,"op":"joined","room":"lobby"}"#)
            bob.send(#"{"op":"join","room":"lobby","name":"bob"}"#)
            // Counted across both nodes; Alice hears of Bob through her own node.
            #expect(try await bob.next("joined") == #"{"members":2,"op":"joined","room":"lobby"}"#)
            #expect(await alice.receives(#"{"members":2,"op":"presence","room":"lobby"}"#))

            // Each message reaches both clients (the sender too) as the same bytes, whichever node it was said on.
            alice.send(#"{"op":"say","room":"lobby","text":"hi","id":"a-1"}"#)
            let fromAlice = #"{"from":"alice","id":"a-1","node":"chat-1","op":"message","room":"lobby","text":"hi"}"#
            #expect(try await alice.next("message") == fromAlice)
            #expect(try await bob.next("message") == fromAlice)
            // A tab, quotes and non-ASCII: escaped as ChatJSON (PorticoChatProtocol) escapes them.
            bob.send(#"{"op":"say","room":"lobby","text":"\t\"q\" ünï","id":"b-1"}"#)
            let fromBob = #"{"from":"bob","id":"b-1","node":"hb-1","op":"message","room":"lobby","text":"\t\"q\" ünï"}"#
            #expect(try await bob.next("message") == fromBob)
            #expect(try await alice.next("message") == fromBob)

            // The same error, word for word.
            for client in [alice, bob] {
                client.send(#"{"op":"dance"}"#)
                #expect(try await client.next("error") == #"{"op":"error","reason":"unknown op dance"}"#)
            }

            // Bob leaves: Alice's node counts one member again.
            bob.send(#"{"op":"leave","room":"lobby"}"#)
            #expect(await alice.receives(#"{"members":1,"op":"presence","room":"lobby"}"#))
        } catch {
            await alice.close()
            await bob.close()
            throw error
        }
        await alice.close()
        await bob.close()
    }

    /// The built portico-chat: `$PORTICO_CHAT`, or the root package's `.build/debug/portico-chat`, found from this
    /// file's path; nil (recorded as an issue) when it is missing.
    static func porticoChatPath(testFile: String = #filePath) -> String? {
        let path: String
        if let given = ProcessInfo.processInfo.environment["PORTICO_CHAT"] {
            path = given
        } else {
            // Tests/HummingbirdChatTests/InteropTests.swift in Examples/hummingbird-chat: five levels below the root.
            var root = URL(fileURLWithPath: testFile)
            for _ in 0..<5 { root.deleteLastPathComponent() }
            path = root.appendingPathComponent(".build/debug/portico-chat").path
        }
        guard FileManager.default.isExecutableFile(atPath: path) else {
            Issue.record("build portico-chat first (swift build --product portico-chat at the root): \(path)")
            return nil
        }
        return path
    }

    /// A private `redis-server` on a free loopback port, answering PING.
    static func startRedis() async throws -> (server: ChildProcess, url: RedisURL) {
        let installed = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        let executable = try #require(installed, "redis-server is not installed")
        for _ in 0..<3 {
            let port = try await freeLoopbackPort()
            let server = try ChildProcess(
                executable,
                ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            )
            let url = RedisURL("redis://127.0.0.1:\(port)")!
            let isUp = await eventually(timeout: .seconds(5)) {
                await Self.redis(url, ["PING"], is: .simpleString("PONG")) || !server.isRunning
            }
            if isUp && server.isRunning { return (server, url) }
            server.stop()  // the port was taken after all: try another
        }
        throw TestFailure("redis-server did not start")
    }

    /// Whether Redis at `url` answers `command` with `reply`.
    static func redis(_ url: RedisURL, _ command: [String], is reply: RESPValue) async -> Bool {
        guard let connection = try? await RedisConnection.connect(to: url) else { return false }
        let answer = try? await connection.send(command)
        await connection.close()
        return answer == reply
    }
}

/// A WebSocket client of either node (HummingbirdWSClient): what it receives is kept, what it sends is queued.
final class ChatClient: Sendable {
    private let received: NIOLockedValueBox<(frames: [String], next: Int)>
    private let outgoing: AsyncStream<String>.Continuation
    private let connection: Task<Void, Never>

    private init(
        received: NIOLockedValueBox<(frames: [String], next: Int)>,
        outgoing: AsyncStream<String>.Continuation,
        connection: Task<Void, Never>
    ) {
        self.received = received
        self.outgoing = outgoing
        self.connection = connection
    }

    /// Connects to `ws://127.0.0.1:port/ws` in a task of its own, until ``close()``.
    static func connect(port: Int) -> ChatClient {
        let received = NIOLockedValueBox<(frames: [String], next: Int)>(([], 0))
        let (sends, outgoing) = AsyncStream.makeStream(of: String.self)
        let connection = Task {
            _ = try? await WebSocketClient.connect(
                url: "ws://127.0.0.1:\(port)/ws",
                logger: Logger(label: "chat-client")
            ) { inbound, outbound, _ in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await message in inbound.messages(maxSize: 1 << 16) {
                            guard case .text(let text) = message else { continue }
                            received.withLockedValue { $0.frames.append(text) }
                        }
                    }
                    group.addTask {
                        for await text in sends { try await outbound.write(.text(text)) }
                    }
                    // The node closed, or the test is done (`sends` ended): either way, this connection is over.
                    _ = try await group.next()
                    group.cancelAll()
                }
            }
        }
        return ChatClient(received: received, outgoing: outgoing, connection: connection)
    }

    func send(_ text: String) {
        self.outgoing.yield(text)
    }

    /// The next frame whose `op` is `op`, as the node sent it; frames before it are passed over.
    func next(_ op: String, timeout: Duration = .seconds(10)) async throws -> String {
        try await self.next(timeout: timeout) { frame in
            let object = try? JSONSerialization.jsonObject(with: Data(frame.utf8)) as? [String: Any]
            return object?["op"] as? String == op
        }
    }

    /// Whether exactly `frame` arrives within `timeout`; frames before it are passed over.
    func receives(_ frame: String, timeout: Duration = .seconds(10)) async -> Bool {
        (try? await self.next(timeout: timeout) { $0 == frame }) != nil
    }

    private func next(timeout: Duration, where matches: (String) -> Bool) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            let found: String? = self.received.withLockedValue { received in
                while received.next < received.frames.count {
                    let frame = received.frames[received.next]
                    received.next += 1
                    if matches(frame) { return frame }
                }
                return nil
            }
            if let found { return found }
            guard ContinuousClock.now < deadline else {
                let frames = self.received.withLockedValue { $0.frames }
                throw TestFailure("nothing matched within \(timeout); received \(frames)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Ends the connection (a Close handshake) and waits for it.
    func close() async {
        self.outgoing.finish()
        await self.connection.value
    }
}

/// A program started for the test, stopped with SIGKILL and waited for in every path (as the root package's
/// PorticoTestSupport does: a child may inherit a blocked SIGTERM).
final class ChildProcess {
    private let process: Process

    init(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
    }

    var isRunning: Bool { self.process.isRunning }

    /// SIGKILL, then waits until it is gone (Foundation reaps its children itself, so no `waitpid` of our own).
    func stop() {
        guard self.process.isRunning else { return }
        kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// A loopback port nothing listens on right now (bound and released).
func freeLoopbackPort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0)
        .get()
    let port = channel.localAddress?.port
    try await channel.close()
    return try #require(port)
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(10), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return await condition()
}

/// `GET path` over HTTP/1.1 with `Connection: close`: the whole response, head and body, as text.
func httpGet(_ path: String, port: Int) async throws -> String {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await channel.executeThenClose { inbound, outbound in
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        try await outbound.write(ByteBuffer(string: request))
        var response = ByteBuffer()
        for try await part in inbound { response.writeImmutableBuffer(part) }
        return String(buffer: response)
    }
}
