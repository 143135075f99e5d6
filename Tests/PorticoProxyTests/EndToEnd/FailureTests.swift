import NIOCore
import NIOHTTP1
import PorticoTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct FailureTests {
    @Test func retriesOnAnotherBackendWhenOneIsDown() async throws {
        let dead = try freeLoopbackPort()
        try await withBackends(["alive"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools:
                  p:
                    retries: 1
                    backends: [{ address: "127.0.0.1:\(dead)", id: dead }, { address: "\(b[0].address)", id: alive }]
                """
            try await withProxy(yaml) { proxy in
                let client = try await HTTPTestClient.connect(port: proxy.port)
                for index in 0..<10 {
                    let response = try await client.request(.GET, "/\(index)")
                    #expect(response.status == 200)
                    let posted = try await client.request(.POST, "/echo", body: "payload-\(index)")
                    #expect(posted.status == 200)
                    #expect(posted.body == "payload-\(index)")
                }
                await client.close()
                #expect(b[0].stats.requests == 20)
            }
        }
    }

    @Test func badGatewayWhenEveryBackendFails() async throws {
        let yaml = """
            listeners: [{ address: "LISTEN" }]
            routes: [{ pool: p }]
            pools:
              p:
                retries: 2
                backends: [{ address: "127.0.0.1:\(try freeLoopbackPort())" }, { address: "127.0.0.1:\(try freeLoopbackPort())" }]
            """
        try await withProxy(yaml) { proxy in
            let client = try await HTTPTestClient.connect(port: proxy.port)
            let response = try await client.request(.GET, "/")
            #expect(response.status == 502)
            // The connection stays usable after a local error answer.
            #expect(try await client.request(.GET, "/again").status == 502)
            await client.close()
        }
    }

    @Test func backendClosingWithoutAnswerIsRetriedForIdempotentRequests() async throws {
        try await withBackends(["a", "b"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools: { p: { retries: 1, backends: [{ address: "\(b[0].address)" }, { address: "\(b[1].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                // /close makes every backend hang up: the retry also fails, so the answer is 502.
                let response = try await HTTPTestClient.request(port: proxy.port, .GET, "/close")
                #expect(response.status == 502)
                #expect(b[0].stats.requests + b[1].stats.requests == 2)
            }
        }
    }

    @Test func gatewayTimeoutWhenTheBackendIsTooSlow() async throws {
        try await withBackends(["slow"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools: { p: { response_timeout: 200ms, backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let started = NIODeadline.now()
                let response = try await HTTPTestClient.request(port: proxy.port, .GET, "/slow/2000")
                #expect(response.status == 504)
                #expect(NIODeadline.now() - started < .milliseconds(1500))
                #expect(b[0].stats.requests == 1)  // a timed-out request is not sent again
                let quick = try await HTTPTestClient.request(port: proxy.port, .GET, "/slow/10")
                #expect(quick.status == 200)
            }
        }
    }

    @Test func upstreamStatusesPassThrough() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools: { p: { backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                let client = try await HTTPTestClient.connect(port: proxy.port)
                for code in [201, 204, 301, 404, 500, 503] {
                    #expect(try await client.request(.GET, "/status/\(code)").status == code)
                }
                await client.close()
            }
        }
    }
}

@Suite struct StreamingTests {
    /// PORTICO_STREAM_MIB overrides the size (default 1024 MiB).
    static let size = (Int(ProcessEnvironmentValue("PORTICO_STREAM_MIB") ?? "") ?? 1024) * 1024 * 1024

    @Test func largeBodiesStreamBothWaysWithFlatMemory() async throws {
        try await withBackends(["one"]) { b in
            let yaml = """
                listeners: [{ address: "LISTEN" }]
                routes: [{ pool: p }]
                pools: { p: { response_timeout: 10m, backends: [{ address: "\(b[0].address)" }] } }
                """
            try await withProxy(yaml) { proxy in
                // Warm up, then measure: the whole process (client, proxy and backend) must not grow with the body.
                _ = try await StreamingClient.run(port: proxy.port, method: .POST, uri: "/echo", uploadBytes: 8 << 20)
                let before = residentBytes()
                let echo = try await StreamingClient.run(
                    port: proxy.port,
                    method: .POST,
                    uri: "/echo",
                    uploadBytes: Self.size
                )
                #expect(echo.status == 200)
                #expect(echo.bodyBytes == Self.size)
                let download = try await StreamingClient.run(
                    port: proxy.port,
                    method: .GET,
                    uri: "/bytes/\(Self.size)",
                    uploadBytes: 0
                )
                #expect(download.bodyBytes == Self.size)
                let upload = try await StreamingClient.run(
                    port: proxy.port,
                    method: .POST,
                    uri: "/sink",
                    uploadBytes: Self.size
                )
                #expect(upload.status == 200)
                let growth = residentBytes() - before
                #expect(growth < 64 << 20, "resident memory grew by \(growth >> 20) MiB")
            }
        }
    }
}

func ProcessEnvironmentValue(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}
