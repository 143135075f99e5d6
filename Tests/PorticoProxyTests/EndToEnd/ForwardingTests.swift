import NIOCore
import NIOHTTP1
import PorticoTestSupport
import Testing

@Suite struct ForwardingTests {
    static func yaml(_ backend: TestBackend, preserveHost: Bool = true) -> String {
        """
        listeners: [{ address: "LISTEN" }]
        routes: [{ pool: p, preserve_host: \(preserveHost) }]
        pools: { p: { backends: [{ address: "\(backend.address)" }] } }
        """
    }

    @Test func hopByHopHeadersGoForwardingHeadersCome() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let response = try await HTTPTestClient.request(
                    port: proxy.port,
                    .GET,
                    "/h",
                    headers: [
                        ("Connection", "keep-alive, X-Secret"), ("X-Secret", "s"), ("Keep-Alive", "timeout=5"),
                        ("TE", "trailers"), ("Proxy-Authorization", "Basic x"), ("Upgrade", "h2c"),
                        ("X-Forwarded-For", "203.0.113.7"), ("X-Request-Id", "req-42"), ("X-Kept", "yes"),
                    ]
                )
                let headers = response.body.lines("header: ")
                for gone in ["connection:", "x-secret:", "keep-alive:", "te:", "proxy-authorization:", "upgrade:"] {
                    #expect(!headers.contains { $0.hasPrefix(gone) }, "\(gone) was forwarded")
                }
                #expect(headers.contains("x-kept: yes"))
                #expect(headers.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1"))
                #expect(headers.contains("x-forwarded-proto: http"))
                #expect(headers.contains("x-forwarded-host: localhost"))
                #expect(headers.contains("x-request-id: req-42"))
                #expect(headers.contains("host: localhost"))
                #expect(response.headers.first(name: "x-request-id") == "req-42")
                #expect(response.headers.first(name: "x-backend") == "one")

                let fresh = try await HTTPTestClient.request(port: proxy.port, .GET, "/")
                let id = fresh.body.lines("header: x-request-id: ").first ?? ""
                #expect(id.count == 32 && id.allSatisfy(\.isHexDigit))
                #expect(fresh.headers.first(name: "x-request-id") == id)
            }
        }
    }

    @Test func preserveHostFalseSendsTheBackendsAddress() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0], preserveHost: false)) { proxy in
                let response = try await HTTPTestClient.request(port: proxy.port, .GET, "/")
                #expect(response.body.lines("header: host: ") == [b[0].address])
                #expect(response.body.lines("header: x-forwarded-host: ") == ["localhost"])
            }
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let request = (1...5).map { "GET /p\($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined()
                let reply = try await RawHTTPClient.send(request, port: proxy.port) { text in
                    text.components("uri: ").count == 6
                }
                #expect(reply.statuses == [200, 200, 200, 200, 200])
                #expect(reply.text.lines("uri: ") == ["/p1", "/p2", "/p3", "/p4", "/p5"])
            }
        }
    }

    /// A slow first response, a body, a locally answered 404 and a plain GET, all in one write: answered in
    /// order, bodies intact, the connection kept for more.
    @Test func pipelinedRequestsOfEveryKindStayInOrder() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ match: { path_prefix: "/api/" }, pool: p, strip_prefix: "/api" }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let request =
                    "GET /api/slow/150 HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
                    + "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /api/last HTTP/1.1\r\nHost: x\r\n\r\n"
                let reply = try await RawHTTPClient.send(request, port: proxy.port) { text in
                    text.contains("uri: /last")
                }
                #expect(reply.statuses == [200, 200, 404, 200])
                let slow = reply.text.firstRange(of: "slow 150")
                let echo = reply.text.firstRange(of: "hello world")
                let last = reply.text.firstRange(of: "uri: /last")
                #expect(slow != nil && echo != nil && last != nil)
                if let slow, let echo, let last {
                    #expect(slow.upperBound <= echo.lowerBound && echo.upperBound <= last.lowerBound)
                }
                #expect(!reply.closedByServer)
            }
        }
    }

    @Test func http10ClientsGetHTTP10() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let reply = try await RawHTTPClient.send("GET /old HTTP/1.0\r\n\r\n", port: proxy.port)
                #expect(reply.text.hasPrefix("HTTP/1.0 200"))
                #expect(reply.closedByServer)
                #expect(reply.text.contains("uri: /old"))
                #expect(reply.text.contains("version: HTTP/1.1"))  // upstream hop is HTTP/1.1
                let keepAlive = try await RawHTTPClient.send(
                    "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
                    port: proxy.port
                )
                #expect(keepAlive.statuses == [200, 200])
                #expect(keepAlive.closedByServer)
            }
        }
    }

    @Test func chunkedAndSizedBodiesAreForwarded() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let chunked = try await RawHTTPClient.send(
                    "POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                    port: proxy.port
                )
                #expect(chunked.statuses == [200])
                #expect(chunked.text.hasSuffix("\r\n\r\n11\n"))
                let sized = try await HTTPTestClient.request(port: proxy.port, .POST, "/echo", body: "abc123")
                #expect(sized.body == "abc123")
                let continued = try await RawHTTPClient.send(
                    "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
                    port: proxy.port
                ) { $0.contains("100 Continue") }
                #expect(continued.statuses == [100])
            }
        }
    }

    @Test func headRequestsHaveNoBody() async throws {
        try await withBackends(["one"]) { b in
            try await withProxy(Self.yaml(b[0])) { proxy in
                let reply = try await RawHTTPClient.send(
                    "HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    port: proxy.port
                )
                #expect(reply.statuses == [200, 200])
                #expect(reply.text.contains("content-length: 1000"))
                #expect(reply.text.contains("uri: /after"))
            }
        }
    }
}

extension String {
    func components(_ separator: String) -> [Substring] {
        self.split(separator: separator, omittingEmptySubsequences: false)
    }
}
