import NIOCore
import NIOHTTP1
import PorticoTestSupport
import Testing

@testable import PorticoProxy

/// The admin API against a web page that can reach loopback (CSRF, DNS rebinding), token guessing, connection
/// floods and slow clients: real sockets against a real admin listener.
@Suite(.serialized) struct AdminSecurityTests {
    static func yaml(admin extra: String = "") -> String {
        """
        listeners: [{ address: "LISTEN" }]
        admin:
          address: "ADMIN"
        \(extra)
        routes: [{ pool: chat }]
        pools:
          chat:
            backends: [{ address: "127.0.0.1:9", id: chat-1 }]
        """
    }

    /// One raw HTTP/1.1 request on a fresh connection that the server closes after answering.
    static func send(
        _ method: String,
        _ path: String,
        port: Int,
        host: String?,
        _ headers: [String] = []
    ) async throws -> RawHTTPClient.Reply {
        var request = "\(method) \(path) HTTP/1.1\r\n"
        if let host { request += "Host: \(host)\r\n" }
        for header in headers { request += header + "\r\n" }
        if method == "POST" { request += "Content-Length: 0\r\n" }
        request += "Connection: close\r\n\r\n"
        return try await RawHTTPClient.send(request, port: port)
    }

    static func isPaused(_ portico: RuntimeHarness) -> Bool {
        portico.runtime.store.snapshot.pools["chat"]?.state.isPaused == true
    }

    @Test func crossOriginPostIsRefusedAndChangesNothing() async throws {
        try await withRuntime(Self.yaml()) { portico in
            let port = portico.adminPort
            let own = "127.0.0.1:\(port)"
            for origin in [
                "http://evil.example", "null", "http://127.0.0.1:\(portico.port)", "https://\(own)",
                "http://localhost:\(port)",
            ] {
                let reply = try await Self.send(
                    "POST",
                    "/pools/chat/pause",
                    port: port,
                    host: own,
                    ["Origin: \(origin)"]
                )
                #expect(reply.statuses == [403], "\(origin)")
                #expect(reply.text.contains("cross-origin request refused"))
                #expect(reply.text.lowercased().contains("content-type: text/plain"))
                #expect(reply.closedByServer)
            }
            for path in ["/reload", "/pools/chat/backends/chat-1/drain"] {
                let reply = try await Self.send("POST", path, port: port, host: own, ["Origin: http://evil.example"])
                #expect(reply.statuses == [403], "\(path)")
            }
            #expect(!Self.isPaused(portico))
            #expect(try await portico.admin("GET", "/status").body.contains(#""paused":false"#))
            #expect(!(try await portico.admin("GET", "/status").body.contains(#""state":"draining""#)))

            // The listener's own origin, as a same-origin fetch from its status page sends it.
            let same = try await Self.send(
                "POST",
                "/pools/chat/pause",
                port: port,
                host: own,
                ["Origin: http://\(own)"]
            )
            #expect(same.statuses == [200])
            #expect(Self.isPaused(portico))
            let resumed = try await Self.send(
                "POST",
                "/pools/chat/resume",
                port: port,
                host: "LocalHost:\(port)",
                ["Origin: HTTP://localhost:\(port)"]
            )
            #expect(resumed.statuses == [200])
            #expect(!Self.isPaused(portico))
            // No Origin at all: curl and scripts.
            #expect(try await Self.send("POST", "/pools/chat/pause", port: port, host: own).statuses == [200])
            #expect(Self.isPaused(portico))
        }
    }

    @Test func crossOriginReadsAreRefusedToo() async throws {
        try await withRuntime(Self.yaml()) { portico in
            let own = "127.0.0.1:\(portico.adminPort)"
            for path in ["/", "/status", "/config", "/metrics"] {
                let cross = try await Self.send("GET", path, port: portico.adminPort, host: own, ["Origin: null"])
                #expect(cross.statuses == [403], "\(path)")
                let same = try await Self.send(
                    "GET",
                    path,
                    port: portico.adminPort,
                    host: own,
                    ["Origin: http://\(own)"]
                )
                #expect(same.statuses == [200], "\(path)")
            }
        }
    }

    @Test func hostMustBeAnIPLiteralLocalhostOrAllowed() async throws {
        let yaml = Self.yaml(admin: "  allowed_hosts: [\"portico.internal\"]")
        try await withRuntime(yaml) { portico in
            let port = portico.adminPort
            for path in ["/config", "/status", "/"] {
                for host in ["evil.example", "evil.example:\(port)", "127.0.0.1.nip.io:\(port)"] {
                    let reply = try await Self.send("GET", path, port: port, host: host)
                    #expect(reply.statuses == [403], "\(host)\(path)")
                    #expect(reply.text.contains("host not allowed"))
                    #expect(!reply.text.contains("\"listeners\""))  // nothing of /config leaked
                }
            }
            for host in [
                "localhost:\(port)", "LOCALHOST", "localhost.:\(port)", "127.0.0.1:\(port)", "[::1]:\(port)",
                "portico.internal:\(port)", "Portico.Internal.",
            ] {
                #expect(try await Self.send("GET", "/config", port: port, host: host).statuses == [200], "\(host)")
            }
            #expect(try await Self.send("GET", "/status", port: port, host: nil).statuses == [400])
            let twoHosts = try await Self.send("GET", "/status", port: port, host: "localhost", ["Host: evil.example"])
            #expect(twoHosts.statuses == [400])
            #expect(try await Self.send("GET", "/status", port: port, host: "::1").statuses == [400])
            let http10 = try await RawHTTPClient.send("GET /status HTTP/1.0\r\n\r\n", port: port)
            #expect(http10.statuses == [200])
            // A rebinding page cannot pause a pool either.
            let paused = try await Self.send("POST", "/pools/chat/pause", port: port, host: "evil.example:\(port)")
            #expect(paused.statuses == [403])
            #expect(!Self.isPaused(portico))
        }
    }

    @Test func tokenMustMatchExactly() async throws {
        try await withRuntime(Self.yaml(admin: "  token: s3cret-token")) { portico in
            let port = portico.adminPort
            for wrong in ["s3cret-tokeX", "s3cret-toke", "s3cret-token-and-more", "", "S3CRET-TOKEN"] {
                let reply = try await Self.send(
                    "POST",
                    "/pools/chat/pause",
                    port: port,
                    host: "localhost",
                    ["Authorization: Bearer \(wrong)"]
                )
                #expect(reply.statuses == [401], "\(wrong)")
                #expect(reply.text.lowercased().contains("www-authenticate: bearer"))
                #expect(!reply.text.contains("s3cret"))
            }
            #expect(try await Self.send("GET", "/status", port: port, host: "localhost").statuses == [401])
            #expect(!Self.isPaused(portico))
            let right = try await Self.send(
                "POST",
                "/pools/chat/pause",
                port: port,
                host: "localhost",
                ["Authorization: Bearer s3cret-token"]
            )
            #expect(right.statuses == [200])
            #expect(Self.isPaused(portico))
        }
    }

    @Test func connectionsBeyondTheLimitAreClosed() async throws {
        try await withRuntime(Self.yaml(admin: "  max_connections: 2")) { portico in
            let first = try await HTTPTestClient.connect(port: portico.adminPort)
            let second = try await HTTPTestClient.connect(port: portico.adminPort)
            #expect(try await first.request(.GET, "/status").status == 200)
            #expect(try await second.request(.GET, "/status").status == 200)
            let third = try await Self.send("GET", "/status", port: portico.adminPort, host: "localhost")
            #expect(third.closedByServer)
            #expect(third.statuses.isEmpty)
            // The proxy's own listener is not affected by the admin limit.
            let proxied = try await RawHTTPClient.send(
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                port: portico.port
            )
            #expect(!proxied.statuses.isEmpty)
            await first.close()
            #expect(
                await eventually {
                    (try? await Self.send("GET", "/status", port: portico.adminPort, host: "localhost"))?.statuses
                        == [200]
                }
            )
            #expect(try await second.request(.GET, "/status").status == 200)
            await second.close()
        }
    }

    @Test func slowHeadIsCutAfterTheHeaderTimeout() async throws {
        let yaml = Self.yaml(admin: "  header_timeout: 300ms\n  idle_timeout: 400ms")
        try await withRuntime(yaml) { portico in
            let port = portico.adminPort
            // Slowloris: the head never ends.
            var started = ContinuousClock.now
            let partial = try await RawHTTPClient.send(
                "GET /status HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n",
                port: port,
                timeout: .seconds(10)
            )
            #expect(partial.closedByServer)
            #expect(partial.statuses == [408])
            #expect(ContinuousClock.now - started < .seconds(5))

            // Trickled a byte at a time for longer than the timeout: cut before it completes.
            started = ContinuousClock.now
            let trickled = try await RawHTTPClient.send(
                "GET /status HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1234567890\r\n\r\n",
                port: port,
                pieces: 40,
                pause: .milliseconds(50),
                timeout: .seconds(10)
            )
            #expect(trickled.closedByServer)
            #expect(trickled.statuses == [408])
            #expect(ContinuousClock.now - started < .seconds(5))

            // A connection that never sends anything is closed too.
            started = ContinuousClock.now
            let silent = try await RawHTTPClient.send("", port: port, timeout: .seconds(10))
            #expect(silent.closedByServer)
            #expect(silent.text.isEmpty)
            #expect(ContinuousClock.now - started < .seconds(5))

            // Keep-alive: answered, then closed once idle.
            started = ContinuousClock.now
            let idle = try await RawHTTPClient.send(
                "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n",
                port: port,
                timeout: .seconds(10)
            )
            #expect(idle.statuses == [200])
            #expect(idle.closedByServer)
            #expect(ContinuousClock.now - started < .seconds(5))

            // A whole request in time is served.
            #expect(try await Self.send("GET", "/status", port: port, host: "localhost").statuses == [200])
        }
    }
}
