import NIOCore
import NIOHTTP1
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
