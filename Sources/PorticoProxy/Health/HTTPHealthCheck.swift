import NIOCore
import NIOPosix
import PorticoConfig
import PorticoRESP

/// One active health check: `GET path` on a fresh connection; healthy when the status is in `expect_status`.
/// Times out by itself.
struct HTTPHealthCheck: Sendable {
    let configuration: HealthConfiguration
    let group: any EventLoopGroup

    enum Failure: Error, CustomStringConvertible {
        case timeout
        case status(Int)
        case malformed

        var description: String {
            switch self {
            case .timeout: return "timed out"
            case .status(let code): return "status \(code)"
            case .malformed: return "not an HTTP response"
            }
        }
    }

    func check(_ address: HostPort) async throws {
        let timeout = TimeAmount.milliseconds(self.configuration.timeout.milliseconds)
        let loop = self.group.next()
        let promise = loop.makePromise(of: Int.self)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(StatusLineHandler(promise: promise))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(hostOrAddress: address.host, port: address.port).get()
        } catch {
            promise.fail(error)  // a promise must never be left unfulfilled
            throw error
        }
        let timer = loop.scheduleTask(in: timeout) {
            promise.fail(Failure.timeout)
            channel.close(promise: nil)
        }
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        var request = ByteBuffer()
        request.writeString(
            "GET \(self.configuration.path) HTTP/1.1\r\nHost: \(address)\r\nUser-Agent: portico-health\r\n"
                + "Connection: close\r\n\r\n"
        )
        channel.writeAndFlush(request, promise: nil)
        let status = try await promise.futureResult.get()
        guard self.configuration.expectStatus.contains(status) else { throw Failure.status(status) }
    }
}

/// Reads up to the end of the status line and reports the code.
private final class StatusLineHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let promise: EventLoopPromise<Int>
    private var received = ByteBuffer()

    init(promise: EventLoopPromise<Int>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        self.received.writeBuffer(&buffer)
        guard let end = self.received.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if self.received.readableBytes > 1024 { self.promise.fail(HTTPHealthCheck.Failure.malformed) }
            return
        }
        let line = self.received.getString(at: self.received.readerIndex, length: end - self.received.readerIndex) ?? ""
        let parts = line.split(separator: " ")
        if parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) {
            self.promise.succeed(code)
        } else {
            self.promise.fail(HTTPHealthCheck.Failure.malformed)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.promise.fail(HTTPHealthCheck.Failure.malformed)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.promise.fail(error)
        context.close(promise: nil)
    }
}
