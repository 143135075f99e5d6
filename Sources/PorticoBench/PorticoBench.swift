import ArgumentParser
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// `portico-bench`: load generators for Portico's own measurements (loopback only).
@main
struct PorticoBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portico-bench",
        abstract: "Load generators for WebSocket workloads; plain HTTP load uses wrk.",
        subcommands: [WebSocketEcho.self, WebSocketIdle.self, RelayBenchmark.self]
    )
}

/// Closed-loop WebSocket echo: every connection sends a message, waits for its echo, checks it, repeats.
struct WebSocketEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-echo",
        abstract: "N connections, message size S: messages/s and latency percentiles; every echo is verified."
    )

    @Option(help: "Target host:port (loopback).")
    var target: String = "127.0.0.1:8080"

    @Option(help: "Request path of the WebSocket endpoint.")
    var path: String = "/ws"

    @Option(help: "Concurrent connections.")
    var connections: Int = 100

    @Option(help: "Message size in bytes.")
    var size: Int = 64

    @Option(help: "Seconds to run after all connections are open.")
    var duration: Int = 10

    @Option(help: "Event loop threads for the generator.")
    var threads: Int = 1

    func run() async throws {
        let (host, port) = try parseTarget(self.target)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        let results = NIOLockedValueBox(EchoResults())
        let running = ManagedFlag()
        var channels: [any Channel] = []
        for _ in 0..<self.connections {
            let size = self.size
            let path = self.path
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            EchoClientHandler(host: host, path: path, size: size, results: results, running: running)
                        )
                    }
                }
                .connect(host: host, port: port)
                .get()
            channels.append(channel)
        }
        try await Task.sleep(for: .milliseconds(500))
        results.withLockedValue { $0 = EchoResults() }
        running.set(true)
        for channel in channels { channel.pipeline.fireUserInboundEventTriggered(EchoClientHandler.Start()) }
        let started = ContinuousClock.now
        try await Task.sleep(for: .seconds(self.duration))
        running.set(false)
        let elapsed = ContinuousClock.now - started
        let final = results.withLockedValue { $0 }
        for channel in channels { try? await channel.close() }
        try await group.shutdownGracefully()

        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        var latencies = final.latenciesMicros
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            return Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) / 1000
        }
        print(
            "ws-echo target=\(self.target) connections=\(self.connections) size=\(self.size)B duration=\(self.duration)s"
        )
        print(
            "messages/s=\(Int(Double(final.messages) / seconds)) p50=\(percentile(0.5))ms p99=\(percentile(0.99))ms "
                + "p99.9=\(percentile(0.999))ms errors=\(final.errors) mismatches=\(final.mismatches)"
        )
        if final.errors > 0 || final.mismatches > 0 { throw ExitCode(1) }
    }
}

struct EchoResults: Sendable {
    var messages = 0
    var errors = 0
    var mismatches = 0
    /// Round trips in microseconds.
    var latenciesMicros: [Int] = []
}

final class ManagedFlag: Sendable {
    private let value = NIOLockedValueBox(false)
    func set(_ flag: Bool) { self.value.withLockedValue { $0 = flag } }
    var isSet: Bool { self.value.withLockedValue { $0 } }
}

final class EchoClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    struct Start {}

    private let host: String
    private let path: String
    private let payload: [UInt8]
    private let frame: ByteBuffer
    private let results: NIOLockedValueBox<EchoResults>
    private let running: ManagedFlag
    private var buffer = ByteBuffer()
    private var handshakeDone = false
    private var sentAt = NIODeadline.now()
    private var local = EchoResults()

    init(host: String, path: String, size: Int, results: NIOLockedValueBox<EchoResults>, running: ManagedFlag) {
        self.host = host
        self.path = path
        self.payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 7) }
        self.results = results
        self.running = running
        var frame = ByteBuffer()
        frame.writeInteger(UInt8(0x82))
        if size < 126 {
            frame.writeInteger(UInt8(0x80 | size))
        } else if size <= 0xFFFF {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(size))
        } else {
            frame.writeInteger(UInt8(0x80 | 127))
            frame.writeInteger(UInt64(size))
        }
        let key: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame.writeBytes(key)
        frame.writeBytes(self.payload.enumerated().map { $0.element ^ key[$0.offset % 4] })
        self.frame = frame
    }

    func channelActive(context: ChannelHandlerContext) {
        let request =
            "GET \(self.path) HTTP/1.1\r\nHost: \(self.host)\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is Start { self.send(context: context) }
    }

    private func send(context: ChannelHandlerContext) {
        self.sentAt = .now()
        context.writeAndFlush(Self.wrapOutboundOut(self.frame), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        self.buffer.writeBuffer(&incoming)
        if !self.handshakeDone {
            guard let end = self.buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let head = self.buffer.readString(length: end.upperBound - self.buffer.readerIndex) ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else {
                self.local.errors += 1
                self.publish()
                context.close(promise: nil)
                return
            }
            self.handshakeDone = true
        }
        while let message = self.nextFrame() {
            if message != self.payload { self.local.mismatches += 1 }
            self.local.messages += 1
            self.local.latenciesMicros.append(Int((NIODeadline.now() - self.sentAt).nanoseconds / 1000))
            if self.local.messages % 256 == 0 { self.publish() }
            if self.running.isSet { self.send(context: context) } else { self.publish() }
        }
        self.buffer.discardReadBytes()
    }

    private func nextFrame() -> [UInt8]? {
        let start = self.buffer.readerIndex
        guard let second = self.buffer.getInteger(at: start + 1, as: UInt8.self) else { return nil }
        var length = Int(second & 0x7F)
        var header = 2
        if length == 126 {
            guard let value = self.buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(value)
            header = 4
        } else if length == 127 {
            guard let value = self.buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            length = Int(value)
            header = 10
        }
        guard self.buffer.readableBytes >= header + length else { return nil }
        self.buffer.moveReaderIndex(forwardBy: header)
        return self.buffer.readBytes(length: length)
    }

    private func publish() {
        let local = self.local
        self.local = EchoResults()
        self.results.withLockedValue {
            $0.messages += local.messages
            $0.errors += local.errors
            $0.mismatches += local.mismatches
            $0.latenciesMicros += local.latenciesMicros
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.running.isSet { self.local.errors += 1 }
        self.publish()
    }
}

/// `host:port` from `--target`.
func parseTarget(_ target: String) throws -> (host: String, port: Int) {
    guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
        throw ValidationError("--target: expected host:port")
    }
    return (String(target[..<colon]), port)
}
