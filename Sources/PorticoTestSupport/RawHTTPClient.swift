import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Sends raw bytes to a server and collects what comes back: for tests that need exact bytes on the wire
/// (request smuggling, pipelining, malformed heads) that an HTTP client library would refuse to send.
public enum RawHTTPClient {
    /// What a raw exchange returned.
    public struct Reply: Sendable {
        /// Everything received, as text.
        public var text: String
        /// The server closed the connection (rather than the collection timing out or being satisfied).
        public var closedByServer: Bool

        /// Status codes of every response in `text`, in order.
        public var statuses: [Int] {
            // Status lines only: "HTTP/1.x NNN" at the start of the text or of a line.
            self.text.utf8.split(separator: UInt8(ascii: "\n")).compactMap { bytes in
                let line = String(decoding: bytes, as: UTF8.self)
                guard line.hasPrefix("HTTP/1."), line.utf8.count >= 12 else { return nil }
                return Int(line.dropFirst(9).prefix(3))
            }
        }
    }

    /// Connects to `127.0.0.1:port`, writes `request` (optionally in pieces with pauses), and reads until the
    /// server closes, `until` is satisfied, or `timeout` passes.
    ///
    /// - Parameters:
    ///   - request: the bytes to send, as text.
    ///   - port: the server's loopback port.
    ///   - pieces: send the request in this many parts, `pause` apart (for slow clients).
    ///   - pause: the time between pieces.
    ///   - timeout: give up reading after this long.
    ///   - until: stop once the received text satisfies this.
    public static func send(
        _ request: String,
        port: Int,
        pieces: Int = 1,
        pause: TimeAmount = .zero,
        timeout: TimeAmount = .seconds(5),
        until: (@Sendable (String) -> Bool)? = nil
    ) async throws -> Reply {
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: Reply.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CollectingHandler(promise: promise, until: until))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let bytes = Array(request.utf8)
        let size = max(1, (bytes.count + pieces - 1) / max(pieces, 1))
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + size)
            do {
                try await channel.writeAndFlush(ByteBuffer(bytes: bytes[offset..<end]))
            } catch {
                break  // the server closed first; what it sent before that is the reply
            }
            offset = end
            if offset < bytes.count && pause > .zero {
                try await Task.sleep(nanoseconds: UInt64(pause.nanoseconds))
            }
        }
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            channel.close(promise: nil)
        }
        let reply = try await promise.futureResult.get()
        timer.cancel()
        try? await channel.close()
        return reply
    }
}

private final class CollectingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let promise: EventLoopPromise<RawHTTPClient.Reply>
    private let until: (@Sendable (String) -> Bool)?
    private var received = ""
    private var done = false

    init(promise: EventLoopPromise<RawHTTPClient.Reply>, until: (@Sendable (String) -> Bool)?) {
        self.promise = promise
        self.until = until
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = Self.unwrapInboundIn(data)
        self.received += buffer.readString(length: buffer.readableBytes) ?? ""
        if !self.done, let until = self.until, until(self.received) {
            self.done = true
            self.promise.succeed(RawHTTPClient.Reply(text: self.received, closedByServer: false))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !self.done {
            self.done = true
            self.promise.succeed(RawHTTPClient.Reply(text: self.received, closedByServer: true))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
