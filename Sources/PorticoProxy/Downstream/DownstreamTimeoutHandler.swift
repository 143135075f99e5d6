import NIOCore

/// Sits in front of the HTTP decoder and enforces `header_timeout` (slowloris) and `idle_timeout`.
///
/// It sees raw bytes, so it knows when a request head *starts*: from then the whole head must arrive within
/// `header_timeout`. Between requests on a keep-alive connection, `idle_timeout` applies.
final class DownstreamTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Phase {
        /// Waiting for the first byte of a request.
        case idle
        /// Some bytes of a head are here; the rest must follow before the header timer fires.
        case readingHead
        /// A request is being served; timers are the exchange's business.
        case busy
    }

    private let headerTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var phase = Phase.idle
    private var bytesWhileBusy = false
    /// One lazily re-armed timer for both timeouts: requests on a busy connection schedule nothing.
    private var timer: LazyTimer?
    private var context: ChannelHandlerContext?

    init(headerTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.timer = LazyTimer(
            eventLoop: context.eventLoop,
            period: min(self.headerTimeout, self.idleTimeout),
            onExpiry: { self.fire() }  // strongly, like DownstreamHandler's timer; handlerRemoved breaks the cycle
        )
        // A new connection must start its first request promptly: nginx's client_header_timeout.
        self.arm(self.headerTimeout, phase: .idle)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.phase {
        case .idle: self.arm(self.headerTimeout, phase: .readingHead)
        case .readingHead: break
        case .busy: self.bytesWhileBusy = true
        }
        context.fireChannelRead(data)
    }

    /// The decoder produced a complete head.
    func headReceived() {
        self.timer?.clear()
        self.phase = .busy
        self.bytesWhileBusy = false
    }

    /// The response ended and the connection stays open for the next request.
    func exchangeFinished() {
        if self.bytesWhileBusy {
            self.arm(self.headerTimeout, phase: .readingHead)  // a pipelined head is already on its way
        } else {
            self.arm(self.idleTimeout, phase: .idle)
        }
    }

    private func arm(_ timeout: TimeAmount, phase: Phase) {
        self.phase = phase
        self.timer?.set(in: timeout)
    }

    private func fire() {
        guard let context = self.context else { return }
        switch self.phase {
        case .readingHead:
            // Written below the HTTP encoder, so as raw bytes.
            var buffer = context.channel.allocator.buffer(capacity: 96)
            buffer.writeString("HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            let channel = context.channel
            context.writeAndFlush(NIOAny(buffer)).whenComplete { _ in channel.close(promise: nil) }
        case .idle:
            context.close(promise: nil)
        case .busy:
            break
        }
    }
}
