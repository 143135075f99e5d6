import Foundation
import NIOCore
import NIOHTTP1
import PorticoProxy
import PorticoRESP
import PorticoTestSupport
import Testing

/// The demo topology, natively: Redis, three portico-chat processes announcing themselves, and portico with
/// Redis discovery and health checks in front. Messages cross nodes; a node that stops sends its clients
/// Close 1012 and they get back in through another node.
@Suite(.serialized) struct ChatClusterTests {
    static func chatJSON(_ frame: WebSocketTestClient.Frame?) -> [String: Any] {
        guard let frame, let object = try? JSONSerialization.jsonObject(with: Data(frame.payload)) as? [String: Any]
        else { return [:] }
        return object
    }

    /// The built `portico-chat`, or `nil` (recorded as an issue) when it is missing.
    static func chatBinary() -> String? {
        let chat = builtProductsDirectory() + "/portico-chat"
        guard FileManager.default.isExecutableFile(atPath: chat) else {
            Issue.record("build portico-chat first (swift build): \(chat)")
            return nil
        }
        return chat
    }

    /// Starts `chat-1`…`chat-3` on free loopback ports, each with `arguments(index)` after its address and id.
    static func startNodes(
        _ chat: String,
        arguments: (_ index: Int) -> [String]
    ) throws -> (nodes: [ChildProcess], ports: [Int]) {
        var nodes: [ChildProcess] = []
        var ports: [Int] = []
        for index in 1...3 {
            let port = try freeLoopbackPort()
            ports.append(port)
            nodes.append(
                try ChildProcess.start(
                    chat,
                    ["--listen", "127.0.0.1:\(port)", "--node-id", "chat-\(index)"] + arguments(index)
                )
            )
        }
        return (nodes, ports)
    }

    /// Reads frames until one with `op` arrives.
    static func next(_ op: String, from client: WebSocketTestClient) async throws -> [String: Any] {
        while let frame = try await client.receive(timeout: .seconds(10)) {
            let object = Self.chatJSON(frame)
            if object["op"] as? String == op { return object }
        }
        return [:]
    }

    @Test func messagesCrossNodesThroughPortico() async throws {
        guard let chat = Self.chatBinary() else { return }
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let (nodes, ports) = try Self.startNodes(chat) { _ in
            ["--redis", "redis://127.0.0.1:\(redis.port)", "--service", "chat"]
        }
        defer { for node in nodes { node.stop() } }
        let yaml = """
            listeners: [{ address: "LISTEN" }]
            admin: { address: "ADMIN" }
            routes: [{ pool: chat, websocket: { idle_timeout: 60s } }]
            pools:
              chat:
                policy: consistent_hash
                hash_key: "query:client,ip"
                health: { path: /healthz, interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }
                hold: { timeout: 10s, max_queued: 1000 }
                drain_timeout: 1s
                discovery: { redis: { url: "redis://127.0.0.1:\(redis.port)", service: chat } }
            """
        let portico = try await RuntimeHarness(yaml)
        let discovery = Task { try? await portico.runtime.redisDiscovery.run() }
        defer { discovery.cancel() }
        // Generous: under ThreadSanitizer (make tsan) the nodes start and answer several times slower.
        #expect(
            await eventually(timeout: .seconds(30)) { await portico.backendIDs() == ["chat-1", "chat-2", "chat-3"] }
        )
        // Clients with different ids land on different nodes (consistent hashing on ?client=).
        var clients: [(client: WebSocketTestClient, node: String)] = []
        var nodesSeen: Set<String> = []
        for index in 0..<12 where nodesSeen.count < 3 || clients.count < 3 {
            let client = try await WebSocketTestClient.connect(port: portico.port, path: "/ws?client=c\(index)")
            let welcome = try await Self.next("welcome", from: client)
            let node = welcome["node"] as? String ?? "?"
            if nodesSeen.insert(node).inserted { clients.append((client, node)) } else { await client.close() }
        }
        #expect(nodesSeen.count == 3)
        for (index, entry) in clients.enumerated() {
            try await entry.client.send(text: #"{"op":"join","room":"lobby","name":"user\#(index)"}"#)
            let joined = try await Self.next("joined", from: entry.client)
            #expect(joined["room"] as? String == "lobby")
        }
        try await clients[0].client.send(text: #"{"op":"say","room":"lobby","text":"hello from user0","id":"c-1"}"#)
        for entry in clients {
            let message = try await Self.next("message", from: entry.client)
            #expect(message["text"] as? String == "hello from user0")
            #expect(message["node"] as? String == clients[0].node)
            #expect(message["id"] as? String == "c-1")
        }
        let presence = try await HTTPTestClient.request(port: ports[0], .GET, "/healthz")
        #expect(presence.status == 200)
        #expect(presence.body == "chat-1\n")

        // A node stops (SIGTERM): its client gets Close 1012, and reconnecting lands on another node.
        let leaving = clients[1]
        let index = Int(leaving.node.dropFirst("chat-".count))! - 1
        nodes[index].signal(SIGTERM)
        var closeCode: UInt16?
        while let frame = try await leaving.client.receive(timeout: .seconds(10)) {
            if frame.opcode == 0x8 {
                closeCode = frame.closeCode
                break
            }
        }
        #expect(closeCode == 1012)
        #expect(await nodes[index].wait(timeout: .seconds(5)) == 0)
        let again = try await WebSocketTestClient.connect(port: portico.port, path: "/ws?client=c1")
        let welcome = try await Self.next("welcome", from: again)
        #expect(welcome["node"] as? String != leaving.node)
        for entry in clients { await entry.client.close() }
        await again.close()
        discovery.cancel()
        await portico.stop()
    }

    /// Three portico-chat processes on a 3-master Redis Cluster (`--redis-cluster`): rooms whose shard
    /// channels live on different masters carry messages between processes exactly once, member counts are
    /// cluster-wide, and a killed node's members stop counting once its heartbeat expires.
    @Test func chatNodesOnARedisClusterCarryRoomsAcrossShards() async throws {
        guard let chat = Self.chatBinary() else { return }
        let cluster = try await RedisClusterServers.start()
        defer { cluster.stop() }
        let (nodes, ports) = try Self.startNodes(chat) { index in
            ["--redis", "redis://127.0.0.1:\(cluster.nodes[index - 1].port)", "--redis-cluster", "--service", "chat"]
        }
        defer { for node in nodes { node.stop() } }
        for port in ports {
            #expect(
                await eventually(timeout: .seconds(10)) {
                    (try? await HTTPTestClient.request(port: port, .GET, "/healthz"))?.status == 200
                }
            )
        }
        // The balancer finds the nodes' announcements on whichever masters their keys live.
        let portico = try await RuntimeHarness(
            """
            listeners: [{ address: "LISTEN" }]
            admin: { address: "ADMIN" }
            routes: [{ pool: chat }]
            pools:
              chat:
                discovery: { redis: { url: "redis://127.0.0.1:\(cluster.nodes[0].port)", service: chat, cluster: true } }
            """
        )
        let discovery = Task { try? await portico.runtime.redisDiscovery.run() }
        defer { discovery.cancel() }
        #expect(
            await eventually(timeout: .seconds(10)) { await portico.backendIDs() == ["chat-1", "chat-2", "chat-3"] }
        )
        let viaPortico = try await HTTPTestClient.request(port: portico.port, .GET, "/healthz")
        #expect(viaPortico.status == 200)
        #expect(viaPortico.body.hasPrefix("chat-"))
        // Two rooms whose channels hash to different masters.
        var rooms: [String] = []
        var owners: Set<Int> = []
        for index in 0..<100 where rooms.count < 2 {
            let name = "room-\(index)"
            let owner = try await cluster.owner(ofSlot: RedisClusterSlot.of("portico:v1:room:\(name)")).port
            if owners.insert(owner).inserted { rooms.append(name) }
        }
        var clients: [WebSocketTestClient] = []
        for (index, port) in ports.enumerated() {
            let client = try await WebSocketTestClient.connect(port: port, path: "/ws")
            _ = try await Self.next("welcome", from: client)
            for room in rooms {
                try await client.send(text: #"{"op":"join","room":"\#(room)","name":"user\#(index)"}"#)
                _ = try await Self.next("joined", from: client)
            }
            clients.append(client)
        }
        for (index, client) in clients.enumerated() {
            for room in rooms {
                try await client.send(
                    text: #"{"op":"say","room":"\#(room)","text":"\#(room) from \#(index)","id":"c"}"#
                )
            }
        }
        // Every client gets each of the six messages once (presence updates interleave and are skipped).
        for client in clients {
            var texts: [String] = []
            while texts.count < 6 {
                let message = try await Self.next("message", from: client)
                texts.append("\(message["room"] as? String ?? "?")|\(message["text"] as? String ?? "?")")
            }
            #expect(Set(texts).count == 6)
            #expect(Set(texts) == Set(rooms.flatMap { room in (0..<3).map { "\(room)|\(room) from \($0)" } }))
        }
        // chat-3 is killed: its member stops counting once its heartbeat key expires (3 s).
        nodes[2].signal(SIGKILL)
        _ = await nodes[2].wait(timeout: .seconds(5))
        var members: Int?
        let counted = await eventually(timeout: .seconds(10)) {
            guard let client = try? await WebSocketTestClient.connect(port: ports[0], path: "/ws") else { return false }
            defer { Task { await client.close() } }
            _ = try? await Self.next("welcome", from: client)
            try? await client.send(text: #"{"op":"join","room":"\#(rooms[0])","name":"late"}"#)
            members = (try? await Self.next("joined", from: client))?["members"] as? Int
            try? await Task.sleep(for: .milliseconds(300))
            return members == 3  // the two live nodes' clients and this one
        }
        #expect(counted, "members: \(members.map(String.init) ?? "none")")
        #expect(
            await eventually(timeout: .seconds(10)) { await portico.backendIDs() == ["chat-1", "chat-2"] }
        )
        for client in clients { await client.close() }
        discovery.cancel()
        await portico.stop()
    }

    /// Clients accepted at the same moment on different event loops each get their own membership: a
    /// message reaches every one of them (two sharing a member id would leave one deaf).
    @Test func everyOneOfManyConcurrentClientsGetsTheMessage() async throws {
        guard let chat = Self.chatBinary() else { return }
        let port = try freeLoopbackPort()
        let node = try ChildProcess.start(chat, ["--listen", "127.0.0.1:\(port)", "--node-id", "solo"])
        defer { node.stop() }
        #expect(
            await eventually(timeout: .seconds(10)) {
                (try? await HTTPTestClient.request(port: port, .GET, "/healthz"))?.status == 200
            }
        )
        let clients = try await withThrowingTaskGroup(of: WebSocketTestClient.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let client = try await WebSocketTestClient.connect(port: port, path: "/ws")
                    _ = try await Self.next("welcome", from: client)
                    try await client.send(text: #"{"op":"join","room":"crowd","name":"u\#(index)"}"#)
                    _ = try await Self.next("joined", from: client)
                    return client
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        try await clients[0].send(text: #"{"op":"say","room":"crowd","text":"all of you","id":"x"}"#)
        var reached = 0
        for client in clients where (try? await Self.next("message", from: client))?["text"] as? String == "all of you"
        {
            reached += 1
        }
        #expect(reached == 200)
        for client in clients { await client.close() }
    }
}
