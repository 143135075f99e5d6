import NIOCore
import NIOHTTP1
import PorticoBalancing
import PorticoProxy
import PorticoTestSupport
import Testing

@Suite struct WebSocketTests {
    static func yaml(
        _ backends: [TestBackend],
        policy: String = "round_robin",
        extra: String = "",
        route: String = ""
    )
        -> String
    {
        """
        listeners: [{ address: "LISTEN" }]
        routes:
          - pool: chat
        \(route)
        pools:
          chat:
            policy: \(policy)
        \(extra)
            backends: [\(backends.map { "{ address: \"\($0.address)\", id: \($0.name) }" }.joined(separator: ", "))]
        """
    }

    @Test func echoesMessagesByteExact() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b)) { proxy in
                let client = try await WebSocketTestClient.connect(port: proxy.port)
                #expect(client.status == 101)
                #expect(client.responseHead.lowercased().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="))
                try await client.send(text: "whoami")
                #expect(try await client.receiveMessage()?.text == "one")
                for size in [1, 125, 126, 65_536, 1 << 20] {
                    let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                    try await client.send(binary: payload)
                    let echo = try await client.receiveMessage()
                    #expect(echo?.opcode == 0x2)
                    #expect(echo?.payload == payload, "size \(size)")
                }
                // Fragmented message: three frames, echoed as three frames.
                try await client.send(binary: [1, 2], fin: false)
                try await client.send(binary: [3], fin: false, continuation: true)
                try await client.send(binary: [4, 5], fin: true, continuation: true)
                #expect(try await client.receiveMessage()?.payload == [1, 2, 3, 4, 5])
                // Ping/pong
                try await client.sendRaw(WebSocketTestClient.frame(opcode: 0x9, payload: Array("hb".utf8)))
                let pong = try await client.receive()
                #expect(pong?.opcode == 0xA && pong?.text == "hb")
                // Close handshake passes through.
                try await client.sendRaw(WebSocketTestClient.frame(opcode: 0x8, payload: [0x03, 0xE8]))
                #expect(try await client.receive()?.closeCode == 1000)
                #expect(try await client.receive() == nil)
                await client.close()
                let pool = b[0]
                #expect(pool.stats.websockets == 1)
            }
        }
    }
}

@Suite struct WebSocketPolicyTests {
    @Test func thousandConcurrentSockets() async throws {
        try await withBackends(["a", "b"]) { b in
            try await withProxy(WebSocketTests.yaml(b, policy: "least_conn")) { proxy in
                var clients: [WebSocketTestClient] = []
                for _ in 0..<1000 {
                    clients.append(try await WebSocketTestClient.connect(port: proxy.port))
                }
                #expect(clients.allSatisfy { $0.status == 101 })
                try await withThrowingTaskGroup(of: Bool.self) { group in
                    for (index, client) in clients.enumerated() {
                        group.addTask {
                            try await client.send(text: "message \(index)")
                            return try await client.receiveMessage(timeout: .seconds(20))?.text == "message \(index)"
                        }
                    }
                    var good = 0
                    for try await ok in group where ok { good += 1 }
                    #expect(good == 1000)
                }
                #expect(b[0].stats.websockets + b[1].stats.websockets == 1000)
                #expect(abs(b[0].stats.websockets - b[1].stats.websockets) <= 2)  // least_conn counts tunnels
                for client in clients { await client.close() }
            }
        }
    }

    @Test func sameRoomSameBackend() async throws {
        try await withBackends(["a", "b", "c"]) { b in
            let yaml = WebSocketTests.yaml(b, policy: "consistent_hash", extra: "    hash_key: \"query:room,ip\"")
            // Two independent proxies (as two replicas would be) agree on every room.
            try await withProxy(yaml) { first in
                try await withProxy(yaml) { second in
                    var seen: Set<String> = []
                    for room in 0..<30 {
                        var names: [String] = []
                        for port in [first.port, second.port, first.port] {
                            let client = try await WebSocketTestClient.connect(port: port, path: "/ws?room=r\(room)")
                            try await client.send(text: "whoami")
                            names.append(try await client.receiveMessage()?.text ?? "?")
                            await client.close()
                        }
                        #expect(Set(names).count == 1, "room r\(room) went to \(names)")
                        seen.insert(names[0])
                    }
                    #expect(seen.count == 3)  // 30 rooms spread over all three backends
                    // Replicas that pin alike show the same ring fingerprint.
                    let fingerprints = [first, second].map { $0.store.snapshot.pools["chat"]?.selector.fingerprint }
                    #expect(fingerprints[0] != nil && fingerprints[0] == fingerprints[1])
                }
            }
        }
    }

    @Test func boundedLoadSpreadsAHotRoom() async throws {
        try await withBackends(["a", "b", "c"]) { b in
            let yaml = WebSocketTests.yaml(
                b,
                policy: "consistent_hash",
                extra: "    hash_key: \"query:room\"\n    bounded_load: 1.25"
            )
            try await withProxy(yaml) { proxy in
                var clients: [WebSocketTestClient] = []
                for _ in 0..<30 {
                    clients.append(try await WebSocketTestClient.connect(port: proxy.port, path: "/ws?room=hot"))
                }
                let counts = b.map(\.stats.websockets)
                #expect(counts.reduce(0, +) == 30)
                // Pure hashing would put all 30 on one backend; the bound is 1.25 × the average (+1 for rounding).
                #expect(counts.allSatisfy { $0 <= 13 }, "\(counts)")
                for client in clients { await client.close() }
            }
        }
    }

    @Test func cookieStickinessFromPlainRequestToUpgrade() async throws {
        try await withBackends(["a", "b", "c"]) { b in
            let yaml = WebSocketTests.yaml(b, policy: "cookie", extra: "    sticky_cookie: \"portico_sticky\"")
            try await withProxy(yaml) { proxy in
                for _ in 0..<6 {
                    // Socket.IO style: a polling request first, then the upgrade must land on the same backend.
                    let first = try await HTTPTestClient.request(
                        port: proxy.port,
                        .GET,
                        "/socket.io/?transport=polling"
                    )
                    let backend = first.headers.first(name: "x-backend") ?? "?"
                    let setCookie = first.headers.first(name: "set-cookie") ?? ""
                    #expect(setCookie.hasPrefix("portico_sticky="))
                    #expect(setCookie.contains("HttpOnly"))
                    #expect(!setCookie.contains("127.0.0.1"))  // an opaque token, not the address
                    let cookie = String(setCookie.prefix { $0 != ";" })
                    for _ in 0..<3 {
                        let again = try await HTTPTestClient.request(
                            port: proxy.port,
                            .GET,
                            "/",
                            headers: [("Cookie", cookie)]
                        )
                        #expect(again.headers.first(name: "x-backend") == backend)
                        #expect(again.headers.first(name: "set-cookie") == nil)
                    }
                    let socket = try await WebSocketTestClient.connect(
                        port: proxy.port,
                        headers: [("Cookie", "a=b; \(cookie)")]
                    )
                    try await socket.send(text: "whoami")
                    let who = try await socket.receiveMessage()
                    #expect(who?.text == backend, "\(String(describing: who)) \(socket.responseHead)")
                    await socket.close()
                }
            }
        }
    }

    @Test func stickyBackendGoneFallsBackToThePolicy() async throws {
        let dead = try freeLoopbackPort()
        try await withBackends(["a"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: chat }]
                pools:
                  chat:
                    policy: cookie
                    sticky_cookie: sid
                    backends: [{ address: "127.0.0.1:\(dead)", id: gone }, { address: "\(b[0].address)", id: a }]
                """
            try await withProxy(yaml) { proxy in
                let stale = "sid=" + StickyToken.make(pool: "chat", backendID: "gone")
                let response = try await HTTPTestClient.request(
                    port: proxy.port,
                    .GET,
                    "/",
                    headers: [("Cookie", stale)]
                )
                #expect(response.status == 200)
                #expect(response.headers.first(name: "x-backend") == "a")
                let fresh = response.headers.first(name: "set-cookie") ?? ""
                #expect(fresh.hasPrefix("sid=" + StickyToken.make(pool: "chat", backendID: "a")))
            }
        }
    }

    @Test func leastConnectionsCountsLiveTunnels() async throws {
        try await withBackends(["a", "b"]) { b in
            try await withProxy(WebSocketTests.yaml(b, policy: "least_conn")) { proxy in
                var byBackend: [String: [WebSocketTestClient]] = [:]
                for _ in 0..<6 {
                    let client = try await WebSocketTestClient.connect(port: proxy.port)
                    try await client.send(text: "whoami")
                    byBackend[try await client.receiveMessage()?.text ?? "?", default: []].append(client)
                }
                #expect(byBackend["a"]?.count == 3 && byBackend["b"]?.count == 3)
                for client in byBackend["a"]!.prefix(2) { await client.close() }
                try await Task.sleep(for: .milliseconds(200))
                // a holds 1 tunnel, b holds 3: the next two sockets both go to a.
                for _ in 0..<2 {
                    let client = try await WebSocketTestClient.connect(port: proxy.port)
                    try await client.send(text: "whoami")
                    #expect(try await client.receiveMessage()?.text == "a")
                    await client.close()
                    try await Task.sleep(for: .milliseconds(100))
                }
                for clients in byBackend.values { for client in clients { await client.close() } }
            }
        }
    }
}

@Suite struct WebSocketProtocolTests {
    static func yaml(_ b: [TestBackend], websocket: String) -> String {
        """
        listeners: [{ address: "LISTEN" }]
        routes:
          - pool: chat
            websocket: { \(websocket) }
        pools:
          chat: { backends: [{ address: "\(b[0].address)" }] }
        """
    }

    @Test func originsOutsideTheAllowListAreRefused() async throws {
        try await withBackends(["a"]) { b in
            let yaml = Self.yaml(b, websocket: "origins: [\"https://chat.example.com\"]")
            try await withProxy(yaml) { proxy in
                let evil = try await WebSocketTestClient.connect(
                    port: proxy.port,
                    headers: [("Origin", "https://evil.example")]
                )
                #expect(evil.status == 403)
                let none = try await WebSocketTestClient.connect(port: proxy.port)
                #expect(none.status == 403)
                #expect(b[0].stats.requests == 0)  // no backend was contacted
                let good = try await WebSocketTestClient.connect(
                    port: proxy.port,
                    headers: [("Origin", "https://chat.example.com")]
                )
                #expect(good.status == 101)
                await good.close()
                await evil.close()
                await none.close()
            }
        }
    }

    @Test func oversizeMessagesClose1009() async throws {
        try await withBackends(["a"]) { b in
            try await withProxy(Self.yaml(b, websocket: "max_message_bytes: 1000")) { proxy in
                let client = try await WebSocketTestClient.connect(port: proxy.port)
                try await client.send(binary: Array(repeating: 7, count: 1000))
                #expect(try await client.receiveMessage()?.payload.count == 1000)
                // 600 + 600 in two fragments: the message, not the frame, is what counts.
                try await client.send(binary: Array(repeating: 1, count: 600), fin: false)
                try await client.send(binary: Array(repeating: 2, count: 600), fin: true, continuation: true)
                // The first fragment was within the limit and comes back; then the Close.
                var close = try await client.receive()
                while let frame = close, frame.opcode != 0x8 { close = try await client.receive() }
                #expect(close?.closeCode == 1009)
                #expect(try await client.receive() == nil)
            }
        }
    }

    @Test(arguments: [
        ("unmasked", WebSocketTestClient.frame(opcode: 0x1, payload: Array("hi".utf8), masked: false)),
        ("reserved opcode", WebSocketTestClient.frame(opcode: 0x3, payload: [1])),
        ("fragmented ping", WebSocketTestClient.frame(opcode: 0x9, payload: [1], fin: false)),
        ("stray continuation", WebSocketTestClient.frame(opcode: 0x0, payload: [1])),
    ])
    func protocolViolationsClose1002(name: String, frame: ByteBuffer) async throws {
        try await withBackends(["a"]) { b in
            try await withProxy(Self.yaml(b, websocket: "idle_timeout: 60s")) { proxy in
                let client = try await WebSocketTestClient.connect(port: proxy.port)
                try await client.send(text: "before")
                #expect(try await client.receiveMessage()?.text == "before")
                try await client.sendRaw(frame)
                let close = try await client.receive()
                #expect(close?.closeCode == 1002, "\(name)")
                #expect(try await client.receive() == nil)
            }
        }
    }

    @Test(arguments: [false, true])
    func refusedHandshakesNeverSmuggleRequests(early: Bool) async throws {
        try await withBackends(["a"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: chat }]
                pools: { chat: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                // The backend refuses the upgrade (400, or a plain 200); the bytes after the handshake look like a
                // second request and must never reach it as one.
                let smuggled = ByteBuffer(string: "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
                for path in ["/status/400", "/plain"] {
                    let client = try await WebSocketTestClient.connect(
                        port: proxy.port,
                        path: path,
                        early: early ? smuggled : nil
                    )
                    #expect(client.status == (path == "/plain" ? 200 : 400))
                    if !early { try await client.sendRaw(smuggled) }
                    // The proxy closes the connection after the refusal (receive times out, and throws, otherwise).
                    while try await client.receive() != nil {}
                    await client.close()
                }
                try await Task.sleep(for: .milliseconds(100))
                #expect(b[0].stats.requests == 2)
                #expect(b[0].stats.lastHead?.uri != "/smuggled")
            }
        }
    }

    @Test func bytesSentBeforeTheAnswerGoIntoTheTunnel() async throws {
        try await withBackends(["a"]) { b in
            try await withProxy(Self.yaml(b, websocket: "idle_timeout: 60s")) { proxy in
                let early = WebSocketTestClient.frame(opcode: 0x1, payload: Array("early bird".utf8))
                let client = try await WebSocketTestClient.connect(port: proxy.port, early: early)
                #expect(client.status == 101)
                #expect(try await client.receiveMessage()?.text == "early bird")
                await client.close()
            }
        }
    }

    @Test func halfCloseFromTheClient() async throws {
        try await withBackends(["a"]) { b in
            try await withProxy(Self.yaml(b, websocket: "idle_timeout: 60s")) { proxy in
                let client = try await WebSocketTestClient.connect(port: proxy.port)
                try await client.send(text: "last words")
                try await client.shutdownOutput()
                #expect(try await client.receiveMessage()?.text == "last words")
                #expect(try await client.receive() == nil)  // and then the tunnel ends, not hangs
                await client.close()
            }
        }
    }

    @Test func idleTunnelsCloseWith1001() async throws {
        try await withBackends(["a"]) { b in
            try await withProxy(Self.yaml(b, websocket: "idle_timeout: 1s")) { proxy in
                let client = try await WebSocketTestClient.connect(port: proxy.port)
                // Pings count as activity: 5 × 300 ms outlives the 1 s idle timeout.
                let started = ContinuousClock.now
                for _ in 0..<5 {
                    try await Task.sleep(for: .milliseconds(300))
                    try await client.sendRaw(WebSocketTestClient.frame(opcode: 0x9, payload: []))
                    #expect(try await client.receive()?.opcode == 0xA)
                }
                #expect(ContinuousClock.now - started > .seconds(1.4))
                let close = try await client.receive(timeout: .seconds(5))
                #expect(close?.closeCode == 1001)
                #expect(try await client.receive() == nil)
            }
        }
    }

    @Test func tunnelCountersSeeTraffic() async throws {
        try await withBackends(["a"]) { b in
            let harness = try await ProxyHarness.start(Self.yaml(b, websocket: "idle_timeout: 60s"))
            let client = try await WebSocketTestClient.connect(port: harness.port)
            for index in 0..<10 { try await client.send(text: "m\(index)") }
            for _ in 0..<10 { _ = try await client.receiveMessage() }
            let counters = harness.store.snapshot.pools["chat"]!.states[0].tunnels
            #expect(counters.live == 1)
            #expect(counters.clientMessages == 10)
            #expect(counters.backendMessages == 10)
            #expect(counters.clientBytes > 0 && counters.backendBytes > 0)
            await client.close()
            try await Task.sleep(for: .milliseconds(200))
            #expect(counters.live == 0)
            #expect(counters.opened == 1)
            #expect(harness.store.snapshot.pools["chat"]!.load.total == 0)
            await harness.stop()
        }
    }
}
