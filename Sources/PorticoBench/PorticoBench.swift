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
        subcommands: [
            WebSocketEcho.self, WebSocketIdle.self, WebSocketConnect.self, Fanout.self, RelayBenchmark.self,
        ]
    )
}

/// Closed-loop WebSocket echo: every connection sends a message, waits for its echo, checks it, repeats.
struct WebSocketEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-echo",
        abstract: "N connections, message size S: messages/s and latency percentiles; every echo is verified."
    )

    @OptionGroup var endpoint: WebSocketTarget

    @Option(help: "Concurrent connections.")
    var connections: Int = 100

    @Option(help: "Message size in bytes.")
    var size: Int = 64

    @Option(help: "Seconds to run after all connections are open.")
    var duration: Int = 10

    @Option(help: "Event loop threads for the generator.")
    var threads: Int = 1

    func run() async throws {
        let (host, port) = try parseTarget(self.endpoint.target)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.threads)
        let results = NIOLockedValueBox(EchoResults())
        let running = ManagedFlag()
        var channels: [any Channel] = []
        for _ in 0..<self.connections {
            let size = self.size
            let path = self.endpoint.path
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
        // Each connection hands over its counts in batches; wait for the last batch of every one (its echo in
        // flight at the stop), or the total would miss up to a batch per connection.
        let deadline = ContinuousClock.now + .seconds(2)
        while results.withLockedValue({ $0.finished }) < channels.count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let final = results.withLockedValue { $0 }
        for channel in channels { try? await channel.close() }
        try await group.shutdownGracefully()

        print(
            "ws-echo target=\(self.endpoint.target) connections=\(self.connections) size=\(self.size)B duration=\(self.duration)s"
        )
        print(
            "messages/s=\(Int(Double(final.messages) / elapsed.seconds)) \(final.latencies.summary) "
                + "errors=\(final.errors) mismatches=\(final.mismatches)"
        )
        if final.errors > 0 || final.mismatches > 0 { throw ExitCode(1) }
    }
}

struct EchoResults: Sendable {
    /// Connections that handed over their final counts after the stop.
    var finished = 0
    var messages = 0
    var errors = 0
    var mismatches = 0
    var latencies = Latencies()
}

extension Duration {
    var seconds: Double { Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18 }
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
    private let payload: ByteBuffer
    private let frame: ByteBuffer
    private let results: NIOLockedValueBox<EchoResults>
    private let running: ManagedFlag
    private var buffer = ByteBuffer()
    private var handshakeDone = false
    private var sentAt = NIODeadline.now()
    private var local = EchoResults()
    private var finished = false

    init(host: String, path: String, size: Int, results: NIOLockedValueBox<EchoResults>, running: ManagedFlag) {
        self.host = host
        self.path = path
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 7) }
        self.payload = ByteBuffer(bytes: payload)
        self.frame = WebSocketWire.frame(opcode: 0x2, payload: payload)
        self.results = results
        self.running = running
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(
            Self.wrapOutboundOut(WebSocketWire.upgradeRequest(host: self.host, path: self.path)),
            promise: nil
        )
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
            guard let upgraded = WebSocketWire.readHandshake(&self.buffer) else { return }
            guard upgraded else {
                self.local.errors += 1
                self.publish()
                context.close(promise: nil)
                return
            }
            self.handshakeDone = true
        }
        while let message = WebSocketWire.nextFrame(&self.buffer) {
            if message.payload != self.payload { self.local.mismatches += 1 }
            self.local.messages += 1
            self.local.latencies.record(since: self.sentAt)
            if self.local.messages % 256 == 0 { self.publish() }
            if self.running.isSet {
                self.send(context: context)
            } else if !self.finished {
                self.finished = true
                self.local.finished = 1
                self.publish()
            }
        }
        self.buffer.discardReadBytes()
    }

    private func publish() {
        let local = self.local
        self.local = EchoResults()
        self.results.withLockedValue {
            $0.finished += local.finished
            $0.messages += local.messages
            $0.errors += local.errors
            $0.mismatches += local.mismatches
            $0.latencies.add(local.latencies)
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
