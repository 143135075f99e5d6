import NIOCore
import NIOHTTP1
import PorticoProxy
import PorticoRESP
import PorticoTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct DiscoveryTests {
    /// Backends on 127.0.0.2 and 127.0.0.3 at one port, as replicas behind one DNS name would be.
    @Test func dnsRecordsBecomeBackendsAndLeavingOnesDrain() async throws {
        let port = try freeLoopbackPort()
        let two = try await TestBackend.start(name: "two", host: "127.0.0.2", port: port)
        let three = try await TestBackend.start(name: "three", host: "127.0.0.3", port: port)
        let hosts = "/tmp/portico-hosts-\(UInt64.random(in: 0...UInt64.max))"
        func writeHosts(_ lines: String) {
            let file = fopen(hosts, "w")!
            fputs(lines, file)
            fclose(file)
        }
        writeHosts("127.0.0.2 chat\n127.0.0.3 chat other\n")
        defer { unlink(hosts) }
        let yaml = """
            listeners: [{ address: "LISTEN" }]
            admin: { address: "ADMIN" }
            routes: [{ pool: chat, websocket: { idle_timeout: 60s } }]
            pools:
              chat:
                drain_timeout: 300ms
                discovery: { dns: { name: chat, port: \(port), interval: 100ms } }
            """
        try await withRuntime(yaml, resolver: HostsFileResolver(path: hosts)) { portico in
            #expect(
                await eventually {
                    (try? await portico.admin("GET", "/status").body.contains("127.0.0.3:\(port)")) == true
                }
            )
            var seen: Set<String> = []
            for _ in 0..<6 {
                seen.insert(
                    try await HTTPTestClient.request(port: portico.port, .GET, "/").headers.first(name: "x-backend")
                        ?? "?"
                )
            }
            #expect(seen == ["two", "three"])
            // A socket on the replica that is about to leave DNS.
            var onTwo: WebSocketTestClient?
            for _ in 0..<4 where onTwo == nil {
                let socket = try await WebSocketTestClient.connect(port: portico.port)
                try await socket.send(text: "whoami")
                if try await socket.receiveMessage()?.text == "two" { onTwo = socket } else { await socket.close() }
            }
            writeHosts("127.0.0.3 chat\n")
            #expect(try await onTwo?.receive(timeout: .seconds(3))?.closeCode == 1012)
            for _ in 0..<6 {
                let response = try await HTTPTestClient.request(port: portico.port, .GET, "/")
                #expect(response.headers.first(name: "x-backend") == "three")
            }
            writeHosts("127.0.0.2 chat\n127.0.0.3 chat\n")
            #expect(
                await eventually {
                    (try? await HTTPTestClient.request(port: portico.port, .GET, "/"))?.headers.first(name: "x-backend")
                        == "two"
                }
            )
            await onTwo?.close()
        }
        await two.stop()
        await three.stop()
    }

    @Test func systemResolverFindsLocalhost() async throws {
        let addresses = try await SystemResolver().resolve("localhost")
        #expect(addresses.contains("127.0.0.1") || addresses.contains("::1"))
        await #expect(throws: ResolveError.self) { try await SystemResolver().resolve("no-such-host.invalid") }
    }
}

@Suite(.serialized) struct RedisDiscoveryTests {
    @Test func announcedNodesBecomeBackends() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        try await withBackends(["n1", "n2"]) { b in
            let writer = try await RedisConnection.connect(to: redis.url)
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                admin: { address: "ADMIN" }
                routes: [{ pool: chat }]
                pools:
                  chat:
                    drain_timeout: 200ms
                    discovery: { redis: { url: "redis://127.0.0.1:\(redis.port)", service: chat } }
                """
            let harness = try await RuntimeHarness(yaml)
            let discovery = Task { try? await harness.runtime.redisDiscovery.run() }
            defer { discovery.cancel() }
            #expect(try await HTTPTestClient.request(port: harness.port, .GET, "/").status == 503)
            _ = try await writer.send(["SET", "portico:v1:node:chat:n1", b[0].address, "EX", "30"])
            let started = ContinuousClock.now
            #expect(
                await eventually {
                    (try? await HTTPTestClient.request(port: harness.port, .GET, "/"))?.status == 200
                }
            )
            #expect(ContinuousClock.now - started < .seconds(1.5))  // appears within about a second
            _ = try await writer.send(["SET", "portico:v1:node:chat:n2", b[1].address, "PX", "800"])
            #expect(
                await eventually { (try? await harness.admin("GET", "/status").body.contains(#""id":"n2""#)) == true }
            )
            // n2 stops refreshing: gone within its TTL (plus one poll).
            #expect(
                await eventually(timeout: .seconds(3)) {
                    (try? await harness.admin("GET", "/status").body.contains(#""id":"n2""#)) == false
                }
            )
            // An orderly leave is immediate.
            _ = try await writer.send(["DEL", "portico:v1:node:chat:n1"])
            #expect(
                await eventually(timeout: .seconds(1.5)) {
                    (try? await HTTPTestClient.request(port: harness.port, .GET, "/"))?.status == 503
                }
            )
            await writer.close()
            discovery.cancel()
            await harness.stop()
        }
    }
}
