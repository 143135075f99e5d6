import NIOCore
import NIOHTTP1
import NIOPosix
import PorticoTestSupport
import Testing

@testable import PorticoProxy

/// The request-smuggling paths and missing limits an outside review found, each as raw bytes on a real socket:
/// the backend must never see a second request, and the next client must get its own answer.
@Suite struct FramingHardeningTests {
    static func yaml(_ backend: TestBackend, limits: String = "") -> String {
        """
        listeners: [{ address: "LISTEN" }]
        limits: { \(limits) }
        routes: [{ pool: p }]
        pools: { p: { backends: [{ address: "\(backend.address)" }] } }
        """
    }

    static let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

    /// `Connection` naming a framing header (any case, any list position, beside close/keep-alive) must not
    /// strip it: the body goes up framed, whatever the method.
    @Test(arguments: ["GET", "OPTIONS", "DELETE", "PURGE", "POST", "HEAD"])
    func connectionCannotRemoveContentLength(method: String) async throws {
        let connections = [
            "content-length", "Content-Length", "keep-alive, CONTENT-LENGTH", "content-length, keep-alive",
            "close, content-length", "host, content-length", "transfer-encoding, content-length",
        ]
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                for (index, connection) in connections.enumerated() {
                    let request =
                        "\(method) /first HTTP/1.1\r\nHost: x\r\nConnection: \(connection)\r\n"
                        + "Content-Length: \(Self.hidden.utf8.count)\r\n\r\n\(Self.hidden)"
                    let reply = try await RawHTTPClient.send(
                        request,
                        port: proxy.port,
                        timeout: .seconds(2),
                        until: { $0.contains("\r\n\r\n") && (method == "HEAD" || $0.contains("version:")) }
                    )
                    #expect(reply.statuses == [200], "\(method) Connection: \(connection): \(reply.text)")
                    try await Task.sleep(for: .milliseconds(50))
                    #expect(b[0].stats.requests == index + 1, "\(method) Connection: \(connection) smuggled")
                    #expect(b[0].stats.lastHead?.uri == "/first")
                    if method != "HEAD" {
                        #expect(reply.text.contains("header: content-length: \(Self.hidden.utf8.count)\n"))
                        #expect(reply.text.contains("header: host: x\n") || reply.text.contains("header: host: 127"))
                    }
                }
            }
        }
    }

    @Test(arguments: ["GET", "DELETE", "POST", "PATCH"])
    func connectionCannotRemoveChunkedFraming(method: String) async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let body = String(Self.hidden.utf8.count, radix: 16) + "\r\n" + Self.hidden + "\r\n0\r\n\r\n"
                let reply = try await RawHTTPClient.send(
                    "\(method) /first HTTP/1.1\r\nHost: x\r\nConnection: Transfer-Encoding, keep-alive\r\n"
                        + "Transfer-Encoding: chunked\r\n\r\n\(body)",
                    port: proxy.port,
                    timeout: .seconds(2),
                    until: { $0.contains("version:") }
                )
                #expect(reply.statuses == [200], "\(reply.text)")
                try await Task.sleep(for: .milliseconds(50))
                #expect(b[0].stats.requests == 1)
                #expect(reply.text.contains("header: transfer-encoding: chunked\n"))
            }
        }
    }

    /// The poisoning scenario: a hidden slow request, then victims on other connections. Every victim gets
    /// its own answer, and the backend never sees the hidden request.
    @Test func noResponseQueuePoisoning() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let hidden = "GET /slow/300 HTTP/1.1\r\nHost: x\r\n\r\n"
                for method in ["GET", "OPTIONS", "DELETE", "PURGE"] {
                    let attack = try await RawHTTPClient.send(
                        "\(method) / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n"
                            + "Content-Length: \(hidden.utf8.count)\r\n\r\n\(hidden)",
                        port: proxy.port,
                        timeout: .seconds(2),
                        until: { $0.contains("version:") }
                    )
                    #expect(attack.statuses == [200])
                    for victim in 0..<4 {
                        let reply = try await HTTPTestClient.request(port: proxy.port, .GET, "/victim-\(victim)")
                        #expect(reply.status == 200)
                        #expect(reply.body.contains("uri: /victim-\(victim)\n"), "\(reply.body)")
                        #expect(!reply.body.contains("slow"))
                    }
                }
                try await Task.sleep(for: .milliseconds(400))
                #expect(b[0].stats.requests == 4 * 5)
                #expect(b[0].stats.lastHead?.uri.hasPrefix("/slow") == false)
            }
        }
    }

    /// Requests the proxy cannot forward faithfully are refused and never reach a backend.
    @Test(arguments: [
        ("TRACE with Content-Length", "TRACE / HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\n\r\n\(hidden)", 400),
        (
            "TRACE chunked",
            "TRACE / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n24\r\n\(hidden)\r\n0\r\n\r\n", 400
        ),
        ("CONNECT", "CONNECT internal.test:22 HTTP/1.1\r\nHost: internal.test:22\r\n\r\n", 405),
        (
            "WebSocket handshake with a body",
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 36\r\n\r\n\(hidden)", 400
        ),
        (
            "h2c upgrade with a body",
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                + "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 36\r\n\r\n\(hidden)", 400
        ),
        (
            "WebSocket handshake without a key",
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400
        ),
        ("no Host on HTTP/1.1", "GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", 400),
        ("Host with a path", "GET / HTTP/1.1\r\nHost: x/evil\r\n\r\n", 400),
        ("Host with userinfo", "GET / HTTP/1.1\r\nHost: user@x\r\n\r\n", 400),
        ("Host with a bad port", "GET / HTTP/1.1\r\nHost: x:80a\r\n\r\n", 400),
        ("Host with an empty port", "GET / HTTP/1.1\r\nHost: x:\r\n\r\n", 400),
        ("empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
        ("percent-encoded Host", "GET / HTTP/1.1\r\nHost: internal%2etest\r\n\r\n", 400),
        ("percent-encoded authority", "GET http://internal%2etest/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("absolute-form with userinfo", "GET http://user@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("absolute-form, other scheme", "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("asterisk for GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ])
    func unforwardableRequestsAreRefused(name: String, request: String, status: Int) async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let reply = try await RawHTTPClient.send(
                    request + "GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
                    port: proxy.port
                )
                #expect(reply.statuses == [status], "\(name): \(reply.text)")
                #expect(reply.closedByServer, "\(name): connection left open")
                try await Task.sleep(for: .milliseconds(50))
                #expect(b[0].stats.requests == 0, "\(name) reached the backend")
            }
        }
    }

    @Test func traceWithoutABodyAndOptionsAsteriskAreForwarded() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let trace = try await RawHTTPClient.send(
                    "TRACE /t HTTP/1.1\r\nHost: x\r\n\r\n",
                    port: proxy.port,
                    until: { $0.contains("version:") }
                )
                #expect(trace.statuses == [200])
                let options = try await RawHTTPClient.send(
                    "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
                    port: proxy.port,
                    until: { $0.contains("version:") }
                )
                #expect(options.statuses == [200])
                #expect(options.text.contains("uri: *\n"))
            }
        }
    }

    /// RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host, for routing and for the backend.
    @Test func absoluteFormTargetsRouteByTheirAuthority() async throws {
        try await withBackends(["internal", "public"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes:
                  - match: { host: "internal.test" }
                    pool: internal
                    preserve_host: true
                  - match: { host: "public.test" }
                    pool: public
                pools:
                  internal: { backends: [{ address: "\(b[0].address)" }] }
                  public: { backends: [{ address: "\(b[1].address)" }] }
                """
            try await withProxy(yaml) { proxy in
                let reply = try await RawHTTPClient.send(
                    "GET HTTP://Internal.Test/x?y=1 HTTP/1.1\r\nHost: public.test\r\n\r\n",
                    port: proxy.port,
                    until: { $0.contains("version:") }
                )
                #expect(reply.statuses == [200], "\(reply.text)")
                #expect(reply.text.contains("backend: internal\n"), "\(reply.text)")
                #expect(reply.text.contains("uri: /x?y=1\n"))
                #expect(reply.text.contains("header: host: Internal.Test\n"), "\(reply.text)")
                #expect(b[1].stats.requests == 0)
                let bare = try await RawHTTPClient.send(
                    "GET http://public.test HTTP/1.1\r\nHost: internal.test\r\n\r\n",
                    port: proxy.port,
                    until: { $0.contains("version:") }
                )
                #expect(bare.text.contains("backend: public\n"), "\(bare.text)")
                #expect(bare.text.contains("uri: /\n"))
                #expect(bare.text.contains("header: x-forwarded-host: public.test\n"))
            }
        }
    }

    /// An upstream connection goes back to the pool only after a clean exchange: a backend that sends more than
    /// one response to one request is never asked again on that connection.
    @Test func aBackendThatAnswersTwiceIsNotReused() async throws {
        try await withProxy(
            toCanned: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
            keepOpen: true
        ) { proxy in
            for _ in 0..<6 {
                let reply = try await HTTPTestClient.request(port: proxy.port, .GET, "/")
                #expect(reply.status == 200)
                #expect(reply.body == "ok")
            }
        }
    }

    /// Bytes after a response in the same read (an injected partial head) must never prefix the next client's
    /// answer: the parked connection gets a fresh decoder, or is closed.
    @Test(arguments: [
        "HTTP/1.1 302 Found\r\nLocation: http://evil.example/\r\nX-Pad: ",
        "HTTP/1.1 302 Found\r\nSet-Cookie: session=attacker\r\n",
        "HTTP/1.1 302 Fo",
    ])
    func bytesAfterAResponseNeverReachTheNextClient(tail: String) async throws {
        let backend = try await CannedBackend.start(
            reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + tail,
            keepOpen: true
        )
        let port = backend.localAddress?.port ?? 0
        let yaml = """
            listeners: [{ address: "LISTEN" }]
            workers: 1
            routes: [{ pool: p }]
            pools: { p: { backends: [{ address: "127.0.0.1:\(port)" }], retries: 0 } }
            """
        try await withProxy(yaml) { proxy in
            for victim in 0..<4 {
                let reply = try await RawHTTPClient.send(
                    "GET /victim-\(victim) HTTP/1.1\r\nHost: x\r\n\r\n",
                    port: proxy.port,
                    timeout: .seconds(2),
                    until: { $0.contains("\r\n\r\n") }
                )
                #expect(!reply.text.contains("evil") && !reply.text.contains("attacker"), "\(reply.text)")
                #expect(!reply.text.contains("302"), "\(reply.text)")
            }
        }
        try await backend.close()
    }

    @Test(arguments: [
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    ])
    func aSwitchWithoutTheRightAcceptIsA502(reply: String) async throws {
        try await withProxy(toCanned: reply) { proxy in
            let answer = try await RawHTTPClient.send(
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                port: proxy.port,
                until: { $0.contains("\r\n\r\n") }
            )
            #expect(answer.statuses == [502], "\(answer.text)")
        }
    }

    /// The accept for RFC 6455's sample key is the RFC's own example.
    @Test func acceptOfTheRFCSampleKey() {
        #expect(WebSocketAccept.expected(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }
}

/// `limits.body_timeout` and `limits.send_timeout`.
@Suite struct PhaseTimeoutTests {
    @Test func aStalledBodyGets408AndTheUpstreamIsClosed() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(FramingHardeningTests.yaml(b[0], limits: "body_timeout: 300ms")) { proxy in
                let started = NIODeadline.now()
                let reply = try await RawHTTPClient.send(
                    "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-a-little",
                    port: proxy.port,
                    timeout: .seconds(5)
                )
                #expect(reply.statuses == [408], "\(reply.text)")
                #expect(reply.closedByServer)
                #expect(NIODeadline.now() - started < .seconds(3))
                // The upstream got part of a request: it is closed, never pooled; the next request gets a fresh one.
                let next = try await HTTPTestClient.request(port: proxy.port, .GET, "/after")
                #expect(next.status == 200)
                #expect(b[0].stats.connections == 2)
            }
        }
    }

    @Test func aLocalAnswerDoesNotWaitForeverForABody() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                limits: { body_timeout: 300ms }
                routes: [{ match: { path_prefix: "/api" }, pool: p }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let started = NIODeadline.now()
                let reply = try await RawHTTPClient.send(
                    "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-a-little",
                    port: proxy.port,
                    timeout: .seconds(5)
                )
                #expect(reply.statuses == [404], "\(reply.text)")
                #expect(reply.closedByServer)
                #expect(NIODeadline.now() - started < .seconds(3))
            }
        }
    }

    @Test func aBackendThatDoesNotReadTheBodyTimesOut() async throws {
        // Accepts and never reads: the upload fills the socket buffers and portico holds the client back.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.autoRead, value: false)
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let yaml = """
            listeners: [{ address: "LISTEN" }]
            routes: [{ pool: p }]
            pools: { p: { backends: [{ address: "127.0.0.1:\(silent.localAddress?.port ?? 0)" }], response_timeout: 500ms } }
            """
        try await withProxy(yaml) { proxy in
            let started = NIODeadline.now()
            let size = 32 << 20
            let reply = try await RawHTTPClient.send(
                "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: \(size)\r\n\r\n"
                    + String(repeating: "u", count: size),
                port: proxy.port,
                timeout: .seconds(8)
            )
            #expect(reply.statuses == [504], "\(reply.text.prefix(200))")
            #expect(reply.closedByServer)
            #expect(NIODeadline.now() - started < .seconds(6))
        }
        try await silent.close()
    }

    /// A local answer to a request that waits for 100 Continue closes: the body may never come, and reading on
    /// would take the next request for it.
    @Test func aLocalAnswerToExpectContinueCloses() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ match: { path_prefix: "/app" }, pool: p }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let reply = try await RawHTTPClient.send(
                    "POST /nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 22\r\n\r\n"
                        + "GET /app/victim HTTP/1.1\r\nHost: x\r\n\r\n",
                    port: proxy.port
                )
                #expect(reply.statuses == [404], "\(reply.text)")
                #expect(reply.closedByServer)
                #expect(b[0].stats.requests == 0)
            }
        }
    }

    @Test func aSteadyBodyIsNotCut() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(FramingHardeningTests.yaml(b[0], limits: "body_timeout: 400ms")) { proxy in
                // 10 pieces 150 ms apart: 1.5 s in total, but never a gap of 400 ms.
                let body = String(repeating: "z", count: 100)
                let reply = try await RawHTTPClient.send(
                    "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + body,
                    port: proxy.port,
                    pieces: 10,
                    pause: .milliseconds(150),
                    until: { $0.contains("\r\n\r\n100\n") }
                )
                #expect(reply.statuses == [200], "\(reply.text)")
            }
        }
    }

    @Test func aBackendThatStallsMidBodyIsCutAfterResponseTimeout() async throws {
        try await withProxy(
            toCanned: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            keepOpen: true,
            poolOptions: "response_timeout: 400ms"
        ) { proxy in
            let started = NIODeadline.now()
            let reply = try await RawHTTPClient.send(
                "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                port: proxy.port,
                timeout: .seconds(6)
            )
            #expect(reply.statuses == [200])
            #expect(reply.text.hasSuffix("partial"), "\(reply.text)")
            #expect(reply.closedByServer)
            #expect(NIODeadline.now() - started < .seconds(3))
        }
    }

    @Test func aClientThatDoesNotReadIsCutAndTheUpstreamReleased() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(FramingHardeningTests.yaml(b[0], limits: "send_timeout: 500ms")) { proxy in
                let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelOption(.autoRead, value: false)
                    .channelOption(.socketOption(.so_rcvbuf), value: 4096)
                    .connect(host: "127.0.0.1", port: proxy.port)
                    .get()
                try await client.writeAndFlush(
                    ByteBuffer(string: "GET /bytes/1000000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                )
                // The backend writes only as fast as portico takes it; once portico is cut off from the client,
                // the backend's connection must go too.
                let deadline = NIODeadline.now() + .seconds(8)
                while NIODeadline.now() < deadline, b[0].stats.active > 0 || b[0].stats.requests == 0 {
                    try await Task.sleep(for: .milliseconds(100))
                }
                #expect(b[0].stats.requests == 1)
                #expect(b[0].stats.active == 0, "the upstream was never released")
                try? await client.close()
            }
        }
    }
}

/// `max_connections_per_ip` counts IPv6 clients by prefix.
@Suite struct ConnectionsPerIPKeyTests {
    @Test func ipv6AddressesCountByPrefix() throws {
        func key(_ ip: String, _ prefix: Int = 64) throws -> String? {
            ConnectionsPerIP.key(for: try SocketAddress(ipAddress: ip, port: 1), ipv6Prefix: prefix)
        }
        #expect(try key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9"))
        #expect(try key("2001:db8:1:2::1") != key("2001:db8:1:3::1"))
        #expect(try key("2001:db8:1:2::1", 48) == key("2001:db8:1:3::1", 48))
        #expect(try key("2001:db8:1:2::1", 128) != key("2001:db8:1:2::2", 128))
        #expect(try key("::ffff:10.1.2.3") == key("10.1.2.3"))
        #expect(try key("10.1.2.3") != key("10.1.2.4"))
    }

    @Test func theLimitHoldsOverIPv6() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "[::1]:0" }]
                limits: { max_connections_per_ip: 2 }
                routes: [{ pool: p }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            guard let harness = try? await ProxyHarness.start(yaml) else { return }  // no IPv6 loopback here
            let group = MultiThreadedEventLoopGroup.singleton
            var open: [any Channel] = []
            for _ in 0..<2 {
                open.append(try await ClientBootstrap(group: group).connect(host: "::1", port: harness.port).get())
            }
            let third = try await ClientBootstrap(group: group).connect(host: "::1", port: harness.port).get()
            // The proxy may have closed it already: the write then fails, and the close below is what counts.
            try? await third.writeAndFlush(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            let closed = try await withThrowingTaskGroup(of: Bool.self) { tasks in
                tasks.addTask {
                    try await third.closeFuture.get()
                    return true
                }
                tasks.addTask {
                    try await Task.sleep(for: .seconds(3))
                    return false
                }
                let first = try await tasks.next() ?? false
                tasks.cancelAll()
                return first
            }
            #expect(closed, "the third IPv6 connection was accepted")
            for channel in open { try? await channel.close() }
            try? await third.close()
            await harness.stop()
        }
    }
}

/// A tunnel refuses frames with RSV bits no extension negotiated: Close 1002, nothing forwarded.
@Suite struct TunnelReservedBitsTests {
    @Test func aClientFrameWithRSV1IsAProtocolError() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(FramingHardeningTests.yaml(b[0])) { proxy in
                let socket = try await WebSocketTestClient.connect(port: proxy.port)
                #expect(socket.status == 101)
                try await socket.send(text: "fine")
                #expect(try await socket.receiveMessage()?.text.contains("fine") == true)
                try await socket.sendRaw(WebSocketTestClient.frame(opcode: 0x41, payload: Array("compressed?".utf8)))
                let close = try await socket.receive()
                #expect(close?.opcode == 0x8)
                #expect(close?.closeCode == 1002)
                await socket.close()
            }
        }
    }
}
