import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Opens N WebSockets (100 handshakes in flight at a time), reports handshakes/s and their latency, then
/// holds them open for `--hold` seconds (for measuring a proxy's memory per idle socket) and closes them.
struct WebSocketIdle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws-idle",
        abstract: "Open N WebSockets, report handshakes/s and p99, hold them idle, close them."
    )

    @OptionGroup var endpoint: WebSocketTarget

    @Option(help: "Sockets to open.")
    var connections: Int = 1_000

    @Option(help: "Seconds to hold them open.")
    var hold: Int = 5

    func run() async throws {
        let (host, port) = try parseTarget(self.endpoint.target)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let request = WebSocketWire.upgradeRequest(host: host, path: self.endpoint.path)
        let channels = NIOLockedValueBox<[any Channel]>([])
        let latencies = NIOLockedValueBox(Latencies())
        let failures = NIOLockedValueBox(0)
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            var next = 0
            func launch() {
                guard next < self.connections else { return }
                next += 1
                tasks.addTask {
                    let began = NIODeadline.now()
                    do {
                        let (channel, upgraded) = try await openWebSocket(
                            group: group,
                            host: host,
                            port: port,
                            request: request
                        )
                        if upgraded {
                            latencies.withLockedValue { $0.record(since: began) }
                            channels.withLockedValue { $0.append(channel) }
                        } else {
                            failures.withLockedValue { $0 += 1 }
                            channel.close(promise: nil)
                        }
                    } catch {
                        failures.withLockedValue { $0 += 1 }
                    }
                }
            }
            for _ in 0..<min(100, self.connections) { launch() }
            while try await tasks.next() != nil { launch() }
        }
        let elapsed = ContinuousClock.now - started
        let open = channels.withLockedValue { $0.count }
        print("ws-idle target=\(self.endpoint.target) connections=\(self.connections)")
        print(
            "handshakes/s=\(Int(Double(open) / elapsed.seconds)) \(latencies.withLockedValue { $0.summary }) open=\(open) "
                + "failures=\(failures.withLockedValue { $0 })"
        )
        fflush(nil)  // every stream, now, not at exit: a script measures the target while the sockets are held
        try await Task.sleep(for: .seconds(self.hold))
        for channel in channels.withLockedValue({ $0 }) { channel.close(promise: nil) }
        try await group.shutdownGracefully()
        if failures.withLockedValue({ $0 }) > 0 { throw ExitCode(1) }
    }
}

/// Connects to `host:port` and sends the upgrade `request`: the channel, and whether the answer was a 101.
func openWebSocket(
    group: any EventLoopGroup,
    host: String,
    port: Int,
    request: ByteBuffer
) async throws -> (channel: any Channel, upgraded: Bool) {
    let answered = group.next().makePromise(of: Bool.self)
    do {
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(answered: answered))
                }
            }
            .connect(host: host, port: port).get()
        try await channel.writeAndFlush(request)
        return (channel, try await answered.futureResult.get())
    } catch {
        answered.fail(error)  // a promise is always completed
        throw error
    }
}

/// `--target` and `--path` of the WebSocket generators.
struct WebSocketTarget: ParsableArguments {
    @Option(help: "Target host:port (loopback).")
    var target: String = "127.0.0.1:8080"

    @Option(help: "Request path of the WebSocket endpoint.")
    var path: String = "/ws"
}

/// Completes `answered` with whether the handshake got a 101, then ignores everything else.
final class HandshakeWatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let answered: EventLoopPromise<Bool>
    private var head = ByteBuffer()
    private var done = false

    init(answered: EventLoopPromise<Bool>) {
        self.answered = answered
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.done else { return }
        var buffer = Self.unwrapInboundIn(data)
        self.head.writeBuffer(&buffer)
        guard let upgraded = WebSocketWire.readHandshake(&self.head) else { return }
        self.done = true
        self.answered.succeed(upgraded)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.done { self.answered.succeed(false) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
