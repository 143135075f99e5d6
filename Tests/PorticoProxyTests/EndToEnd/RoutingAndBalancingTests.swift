import NIOCore
import NIOHTTP1
import PorticoTestSupport
import Testing

@Suite struct RoutingAndBalancingTests {
    @Test func classicRoutingExamples() async throws {
        try await withBackends(["render", "api", "service", "chat"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes:
                  - match: { path_prefix: "/render" }
                    pool: render
                    strip_prefix: "/render"
                  - match: { headers: { x-service-1: "*" } }
                    pool: service
                  - match: { host: "chat.example.com" }
                    pool: chat
                  - match: { path_prefix: "/api" }
                    pool: api
                pools:
                  render: { backends: [{ address: "\(b[0].address)" }] }
                  api: { backends: [{ address: "\(b[1].address)" }] }
                  service: { backends: [{ address: "\(b[2].address)" }] }
                  chat: { backends: [{ address: "\(b[3].address)" }] }
                """
            try await withProxy(yaml) { proxy in
                let render = try await HTTPTestClient.request(port: proxy.port, .GET, "/render/frame/1?q=2")
                #expect(render.body.lines("backend: ") == ["render"])
                #expect(render.body.lines("uri: ") == ["/frame/1?q=2"])
                let api = try await HTTPTestClient.request(port: proxy.port, .GET, "/api/users")
                #expect(api.body.lines("backend: ") == ["api"])
                #expect(api.body.lines("uri: ") == ["/api/users"])
                let service = try await HTTPTestClient.request(
                    port: proxy.port,
                    .GET,
                    "/api/users",
                    headers: [("X-Service-1", "yes")]
                )
                #expect(service.body.lines("backend: ") == ["service"])
                let raw = try await RawHTTPClient.send(
                    "GET /api/x HTTP/1.1\r\nHost: chat.example.com:443\r\nConnection: close\r\n\r\n",
                    port: proxy.port
                )
                #expect(raw.text.contains("backend: chat"))
                let missing = try await HTTPTestClient.request(port: proxy.port, .GET, "/elsewhere")
                #expect(missing.status == 404)
            }
        }
    }

    @Test func weightedRoundRobinSpread() async throws {
        try await withBackends(["heavy", "light"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools:
                  p:
                    policy: round_robin
                    backends: [{ address: "\(b[0].address)", weight: 3 }, { address: "\(b[1].address)", weight: 1 }]
                """
            try await withProxy(yaml) { proxy in
                let client = try await HTTPTestClient.connect(port: proxy.port)
                var counts: [String: Int] = [:]
                for _ in 0..<40 {
                    let response = try await client.request(.GET, "/")
                    counts[response.body.lines("backend: ").first ?? "?", default: 0] += 1
                }
                await client.close()
                #expect(counts == ["heavy": 30, "light": 10])
            }
        }
    }

    @Test func leastConnectionsFavoursTheFastBackend() async throws {
        try await withBackends(["slow", "fast"], delays: [.milliseconds(400), .zero]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools:
                  p:
                    policy: least_conn
                    backends: [{ address: "\(b[0].address)" }, { address: "\(b[1].address)" }]
                """
            try await withProxy(yaml) { proxy in
                // 8 clients, each sending 5 requests back to back: the slow backend holds its requests open,
                // so least connections keeps sending new ones to the fast one.
                let names = try await withThrowingTaskGroup(of: [String].self) { group in
                    for _ in 0..<8 {
                        group.addTask {
                            let client = try await HTTPTestClient.connect(port: proxy.port)
                            var seen: [String] = []
                            for _ in 0..<5 {
                                seen += try await client.request(.GET, "/").body.lines("backend: ")
                            }
                            await client.close()
                            return seen
                        }
                    }
                    var all: [String] = []
                    for try await names in group { all += names }
                    return all
                }
                let fast = names.filter { $0 == "fast" }.count
                #expect(names.count == 40)
                #expect(fast >= 28, "fast backend took \(fast) of 40")
                #expect(b[0].stats.maxActive <= 8)
            }
        }
    }

    @Test func reusesUpstreamConnections() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let client = try await HTTPTestClient.connect(port: proxy.port)
                for index in 0..<20 {
                    let response = try await client.request(.GET, "/\(index)")
                    #expect(response.status == 200)
                }
                await client.close()
                for index in 0..<5 {
                    _ = try await HTTPTestClient.request(port: proxy.port, .GET, "/again/\(index)")
                }
                #expect(b[0].stats.requests == 25)
                #expect(b[0].stats.connections <= 2)  // one per proxy event loop at most
            }
        }
    }
}

@Suite struct ConnectionLimitTests {
    @Test func perBackendMaxConnections() async throws {
        try await withBackends(["small", "big"], delays: [.milliseconds(300), .milliseconds(300)]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools:
                  p:
                    policy: round_robin
                    backends: [{ address: "\(b[0].address)", max_connections: 1 }, { address: "\(b[1].address)" }]
                """
            try await withProxy(yaml) { proxy in
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<6 {
                        group.addTask { try await HTTPTestClient.request(port: proxy.port, .GET, "/").status }
                    }
                    for try await status in group { #expect(status == 200) }
                }
                #expect(b[0].stats.maxActive == 1)
                #expect(b[1].stats.requests >= 4)
            }
        }
    }

    @Test func perClientIPLimit() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                limits: { max_connections_per_ip: 2 }
                routes: [{ pool: p }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let first = try await HTTPTestClient.connect(port: proxy.port)
                let second = try await HTTPTestClient.connect(port: proxy.port)
                #expect(try await first.request(.GET, "/").status == 200)
                #expect(try await second.request(.GET, "/").status == 200)
                let third = try await RawHTTPClient.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n", port: proxy.port)
                #expect(third.closedByServer && third.statuses.isEmpty)
                await first.close()
                await second.close()
            }
        }
    }
}
