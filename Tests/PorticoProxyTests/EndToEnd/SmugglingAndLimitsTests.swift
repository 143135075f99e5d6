import NIOCore
import NIOHTTP1
import PorticoTestSupport
import Testing

@Suite struct SmugglingTests {
    static let cases: [(String, String)] = [
        ("CL and TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE and CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("two CLs", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!"),
        ("CL sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("TE gzip last", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxxxx"),
        ("TE chunked then gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("TE xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
        ("TE on HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n"),
        ("space in name", "GET / HTTP/1.1\r\nHost: x\r\nX Bad: a\r\n\r\n"),
        ("space before colon", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n"),
        ("control in name", "GET / HTTP/1.1\r\nHost: x\r\nX\u{01}Bad: a\r\n\r\n"),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\u{00}b\r\n\r\n"),
        ("DEL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\u{7F}b\r\n\r\n"),
        ("bare LF in value", "GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        ("two Hosts in one", "GET / HTTP/1.1\r\nHost: x, y\r\n\r\n"),
        ("two Hosts, cases differ", "GET / HTTP/1.1\r\nhost: x\r\nHOST: y\r\n\r\n"),
    ]

    @Test(arguments: Self.cases.map(\.0))
    func ambiguousRequestsAreRefusedAndNeverForwarded(name: String) async throws {
        let request = Self.cases.first { $0.0 == name }!.1
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let reply = try await RawHTTPClient.send(
                    request + "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
                    port: proxy.port
                )
                #expect(reply.statuses == [400], "\(name): \(reply.text)")
                #expect(reply.closedByServer, "\(name): connection left open")
                #expect(b[0].stats.requests == 0, "\(name) reached the backend")
            }
        }
    }
}

@Suite struct LimitsTests {
    static func yaml(_ backend: TestBackend, limits: String) -> String {
        """
        listeners: [{ address: "LISTEN" }]
        limits: { \(limits) }
        routes: [{ pool: p }]
        pools: { p: { backends: [{ address: "\(backend.address)" }] } }
        """
    }

    @Test func oversizeHeadsAndTargets() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0], limits: "max_header_bytes: 4096, max_uri_bytes: 1024")) { proxy in
                let big = String(repeating: "a", count: 5000)
                let tooLarge = try await RawHTTPClient.send(
                    "GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(big)\r\n\r\n",
                    port: proxy.port
                )
                #expect(tooLarge.statuses == [431])
                #expect(tooLarge.closedByServer)
                let huge = String(repeating: "b", count: 100_000)  // past the parser's own limit
                let parserLimit = try await RawHTTPClient.send(
                    "GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(huge)\r\n\r\n",
                    port: proxy.port
                )
                #expect(parserLimit.statuses == [431])
                let longURI = try await RawHTTPClient.send(
                    "GET /\(String(repeating: "u", count: 2000)) HTTP/1.1\r\nHost: x\r\n\r\n",
                    port: proxy.port
                )
                #expect(longURI.statuses == [414])
                #expect(b[0].stats.requests == 0)
                let fine = try await HTTPTestClient.request(
                    port: proxy.port,
                    .GET,
                    "/ok",
                    headers: [("X-Some", String(repeating: "c", count: 2000))]
                )
                #expect(fine.status == 200)
            }
        }
    }

    @Test func slowHeadersTimeOut() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0], limits: "header_timeout: 300ms")) { proxy in
                // Slowloris: one header line every 150 ms never completes the head within 300 ms.
                let started = NIODeadline.now()
                let reply = try await RawHTTPClient.send(
                    "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n\r\n",
                    port: proxy.port,
                    pieces: 8,
                    pause: .milliseconds(150),
                    timeout: .seconds(5)
                )
                #expect(reply.statuses == [408])
                #expect(reply.closedByServer)
                #expect(NIODeadline.now() - started < .seconds(3))
                #expect(b[0].stats.requests == 0)
                // A connection that never sends a byte is closed too.
                let silent = try await RawHTTPClient.send("", port: proxy.port, timeout: .seconds(5))
                #expect(silent.closedByServer)
                #expect(silent.text.isEmpty)
            }
        }
    }

    @Test func idleKeepAliveConnectionsClose() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0], limits: "idle_timeout: 300ms")) { proxy in
                let client = try await HTTPTestClient.connect(port: proxy.port)
                #expect(try await client.request(.GET, "/").status == 200)
                try await Task.sleep(for: .milliseconds(800))
                #expect(!client.isActive)
                await client.close()
            }
        }
    }

    @Test func maxConnections() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0], limits: "max_connections: 2")) { proxy in
                let first = try await HTTPTestClient.connect(port: proxy.port)
                let second = try await HTTPTestClient.connect(port: proxy.port)
                #expect(try await first.request(.GET, "/").status == 200)
                #expect(try await second.request(.GET, "/").status == 200)
                let third = try await RawHTTPClient.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n", port: proxy.port)
                #expect(third.closedByServer)
                #expect(third.statuses.isEmpty)
                await first.close()
                try await Task.sleep(for: .milliseconds(100))
                let fourth = try await HTTPTestClient.request(port: proxy.port, .GET, "/")
                #expect(fourth.status == 200)
                await second.close()
            }
        }
    }
}

/// The proxy writes headers without a second validation pass, because every header it forwards was parsed
/// strictly on the way in: a backend whose response head could split the client's response gets a 502.
@Suite struct MalformedBackendResponseTests {
    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nX-Evil: a\rSet-Cookie: stolen=1\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nX-Evil: a\u{01}b\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nX-Evil: a\0b\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nX Evil: a\r\nContent-Length: 2\r\n\r\nok",
    ])
    func aResponseHeadThatCouldSplitTheResponseIsA502(reply: String) async throws {
        try await withProxy(toCanned: reply) { proxy in
            let answer = try await RawHTTPClient.send(
                "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                port: proxy.port,
                until: { $0.contains("\r\n\r\n") }
            )
            #expect(answer.statuses == [502], "\(answer.text)")
            #expect(!answer.text.lowercased().contains("evil") && !answer.text.contains("stolen"), "\(answer.text)")
        }
    }
}
