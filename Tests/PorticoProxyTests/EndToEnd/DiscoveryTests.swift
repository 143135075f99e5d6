import NIOCore
import NIOHTTP1
import PorticoProxy
import PorticoTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct DiscoveryTests {
    /// Backends on 127.0.0.2 and 127.0.0.3 at one port, as replicas behind one DNS name would be.
    @Test func dnsRecordsBecomeBackendsAndLeavingOnesDrain() async throws {
        let port = try deadPort()
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
