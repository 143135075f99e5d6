import NIOCore
import NIOHTTP1

/// What an upstream connection reports to the exchange that is using it. Called on the shared event loop.
protocol UpstreamDelegate: AnyObject {
    func upstreamResponsePart(_ part: HTTPClientResponsePart)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
    /// The connection closed or failed; `error` is `nil` for a clean close by the backend.
    func upstreamClosed(error: (any Error)?)
    /// Whether the downstream can take more bytes now; when not, the upstream stops reading (backpressure).
    var isDownstreamWritable: Bool { get }
}

/// The last handler of an upstream (proxy → backend) pipeline: hands responses to the current exchange,
/// and holds reads while the downstream is not writable.
final class UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// The exchange using this connection, or `nil` while idle in the pool. Strong, and cleared on every way
    /// out (park, close, error, removal from the pipeline): a weak reference would give the downstream
    /// handler a side table, which makes every retain and release of it slower, on every request.
    var delegate: (any UpstreamDelegate)?
    let backendKey: UpstreamConnectionPool.Key
    private(set) var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Closes the connection when it stays parked too long; lazily re-armed, so lease and park cost nothing.
    private var idleTimer: LazyTimer?
    /// Requests sent on this connection, to tell a stale reused connection from a fresh one.
    private(set) var requestsSent = 0
    var onClose: ((UpstreamHandler) -> Void)?

    /// Sees the connection's bytes before the response decoder; closes it if any arrive while it is parked.
    private let idleGuard: UpstreamIdleGuard?

    init(backendKey: UpstreamConnectionPool.Key, idleGuard: UpstreamIdleGuard? = nil) {
        self.backendKey = backendKey
        self.idleGuard = idleGuard
    }

    var channel: (any Channel)? { self.context?.channel }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var isActive: Bool { self.context?.channel.isActive ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Captured strongly (no side table, see `delegate`); handlerRemoved breaks the cycle.
        self.idleTimer = LazyTimer(eventLoop: context.eventLoop, period: .seconds(60)) { self.close() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.idleTimer?.cancel()
        self.idleTimer = nil
        self.delegate = nil
        self.onClose = nil
        self.context = nil
    }

    // MARK: Used by the exchange

    func write(_ part: HTTPClientRequestPart) {
        guard let context = self.context else { return }
        if case .head = part { self.requestsSent += 1 }
        context.write(Self.wrapOutboundOut(part), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    /// Resumes reading after the downstream became writable again.
    func resumeReading() {
        guard self.pendingRead, let context = self.context else { return }
        self.pendingRead = false
        context.read()
    }

    func close() {
        self.context?.close(promise: nil)
    }

    /// Parks the connection in the pool: closes it after `timeout` unless leased again.
    func park(timeout: TimeAmount) {
        self.delegate = nil
        self.idleGuard?.isParked = true
        self.renewDecoder()
        self.idleTimer?.set(in: timeout)
        self.resumeReading()  // keep reading while idle, so a close by the backend is noticed at once
    }

    /// Gives a parked connection a fresh response decoder. Bytes the backend sent after the response in the same
    /// read (a partial head that the old decoder would keep and glue to the next exchange's answer: response
    /// queue poisoning) never reach the next exchange: the old decoder leaves with them, and bytes it still
    /// buffers raise an error that closes the connection. Runs within the old decoder's decode call; NIO
    /// completes its removal before that call returns, so it never sees another read.
    private func renewDecoder() {
        guard let context = self.context else { return }
        let pipeline = context.pipeline.syncOperations
        guard let old = try? pipeline.context(handlerType: ByteToMessageHandler<HTTPResponseDecoder>.self) else {
            return
        }
        do {
            try pipeline.addHandler(
                ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .fireError)),
                position: .after(old.handler)
            )
            pipeline.removeHandler(context: old, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    func lease(to delegate: any UpstreamDelegate) {
        self.idleGuard?.isParked = false
        self.idleTimer?.clear()
        self.delegate = delegate
    }

    // MARK: Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = Self.unwrapInboundIn(data)
        guard let delegate = self.delegate else {
            // Bytes from a backend nobody asked anything: the connection is out of step; never reuse it.
            context.close(promise: nil)
            return
        }
        delegate.upstreamResponsePart(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.upstreamReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if let delegate = self.delegate, !delegate.isDownstreamWritable {
            self.pendingRead = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.delegate?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.idleTimer?.cancel()
        let delegate = self.delegate
        self.delegate = nil
        self.onClose?(self)
        self.onClose = nil
        delegate?.upstreamClosed(error: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamClosed(error: error)
        context.close(promise: nil)
    }
}

/// First in an upstream pipeline (after TLS): a parked connection must stay silent. A byte from the backend
/// while nobody asked anything (the rest of an extra response, a partial head the decoder would keep and glue
/// to the next exchange's answer) means the connection is out of step: it is closed, never leased again.
/// The decoder behind it only reports such bytes once they form a whole head.
final class UpstreamIdleGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    var isParked = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.isParked {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}
