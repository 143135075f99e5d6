import Benchmark
import NIOCore
import NIOHTTP1
import PorticoBalancing
import PorticoConfig
import PorticoProxy
import PorticoRelay
import PorticoRouting

/// The hot pure code of the proxy and the relay, one operation per iteration: what it costs in time and in
/// allocations (the allocation counts are the numbers to watch: they should be 0 on the per-request paths).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )

    // MARK: Routing

    let configuration = try! PorticoConfiguration.load(
        yaml: """
            listeners: [{ address: "127.0.0.1:8080" }]
            routes:
              - match: { host: "admin.example.com" }
                pool: admin
              - match: { host: "*.example.com", path_prefix: "/api/", methods: [GET, POST] }
                pool: api
              - match: { path_regex: "^/users/[0-9]+/avatar$" }
                pool: api
              - match: { path: "/ws", headers: { upgrade: websocket } }
                pool: chat
              - match: { path_prefix: "/" }
                pool: web
            pools:
              admin: { backends: [{ address: "127.0.0.1:9000" }] }
              api: { backends: [{ address: "127.0.0.1:9001" }] }
              chat: { backends: [{ address: "127.0.0.1:9002" }] }
              web: { backends: [{ address: "127.0.0.1:9003" }] }
            """
    )
    let table = RouteTable(configuration.routes)
    var webSocket = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws?client=42")
    webSocket.headers.add(name: "Host", value: "chat.example.net")
    webSocket.headers.add(name: "Upgrade", value: "websocket")
    webSocket.headers.add(name: "Connection", value: "Upgrade")
    var api = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/api/v1/rooms?limit=10")
    api.headers.add(name: "Host", value: "eu.example.com")

    Benchmark("route match: 2nd of 5 routes (host wildcard + prefix + method)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(table.match(api)) }
    }
    Benchmark("route match: 4th of 5 routes (after a regex; header)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(table.match(webSocket)) }
    }

    // MARK: Balancing

    let backends = (0..<10).map { Backend(id: "b\($0)", host: "10.0.0.\($0)", port: 9000, weight: 1 + $0 % 3, index: $0) }
    let load = BackendLoad(count: backends.count)
    let policies: [(String, any BalancingPolicy)] = [
        ("round robin (smooth weighted)", RoundRobin()),
        ("least connections", LeastConnections()),
        ("power of two choices", RandomTwo(seed: 7)),
        ("consistent hash", ConsistentHash()),
        ("consistent hash, bounded load 1.25", ConsistentHash(boundedLoad: 1.25)),
    ]
    for (name, policy) in policies {
        let selector = policy.makeSelector(for: backends, load: load)
        Benchmark("select over 10 backends: \(name)") { benchmark in
            var key: UInt64 = 0x9E37_79B9
            for _ in benchmark.scaledIterations {
                key = mix64(key)
                blackHole(selector.select(key: key) { _ in true })
            }
        }
    }
    Benchmark("hash key: stable hash of a 16-byte client id") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(StableHash.hash("client-123456789")) }
    }

    // MARK: WebSocket frame tracking (per read in a tunnel)

    for size in [64, 4096] {
        var frames = ByteBuffer()
        for _ in 0..<16 {  // one read carrying 16 masked client frames
            frames.writeInteger(UInt8(0x82))
            if size < 126 {
                frames.writeInteger(UInt8(0x80 | size))
            } else {
                frames.writeInteger(UInt8(0x80 | 126))
                frames.writeInteger(UInt16(size))
            }
            frames.writeBytes([1, 2, 3, 4])
            frames.writeRepeatingByte(0x41, count: size)
        }
        let read = frames
        Benchmark("frame tracker: one read of 16 × \(size) B client frames") { benchmark in
            var tracker = WebSocketFrameTracker(sender: .client, maxMessageBytes: 1 << 20)
            for _ in benchmark.scaledIterations { blackHole(tracker.consume(read)) }
        }
    }

    // MARK: Relay envelope

    let envelope = Envelope(
        origin: "chat-1",
        epoch: 0xDEAD_BEEF,
        sequence: 42,
        room: Room("lobby"),
        except: [],
        payload: ByteBuffer(repeating: 0x7A, count: 64)
    )
    let encoded = envelope.encoded()
    Benchmark("envelope encode (64 B payload)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(envelope.encoded()) }
    }
    Benchmark("envelope decode (64 B payload)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(Envelope(decoding: encoded)) }
    }
}
