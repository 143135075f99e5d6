import Logging
import NIOCore
import PorticoBalancing

/// One half of a WebSocket tunnel: reads bytes from its own channel and writes them, untouched, to its
/// partner's. Both halves run on the same event loop and call each other directly.
///
/// Reads are taken only while the partner can write (backpressure), an end of input becomes a half-close on
/// the partner, and every read passes through a ``WebSocketFrameTracker`` so the session can count messages,
/// enforce limits and put Close frames in at frame boundaries.
final class TunnelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side {
        /// Faces the client.
        case downstream
        /// Faces the backend.
        case upstream
    }

    let side: Side
    private(set) var tracker: WebSocketFrameTracker
    var partner: TunnelHandler?
    let session: TunnelSession
    private(set) var context: ChannelHandlerContext?
    private var pendingRead = false
    /// A Close frame waiting for the partner's inbound stream to reach a frame boundary before it is written
    /// to this side.
    private var pendingClose: ByteBuffer?
    /// Stop forwarding what this side sends (after a violation or once the session closes).
    var isDraining = false
    private(set) var inputClosed = false

    init(
        side: Side,
        session: TunnelSession,
        maxMessageBytes: Int,
        reservedBits: WebSocketFrameTracker.ReservedBits = .none
    ) {
        self.side = side
        self.session = session
        self.tracker = WebSocketFrameTracker(
            sender: side == .downstream ? .client : .server,
            maxMessageBytes: maxMessageBytes,
            reservedBits: reservedBits
        )
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        self.session.activity()
        guard !self.isDraining, let partner = self.partner else { return }
        let messagesBefore = self.tracker.messages

        if partner.pendingClose != nil {
            // A Close must go to the partner's peer at the next frame boundary of this stream.
            let outcome = self.tracker.consume(buffer, stopAtBoundary: true)
            if outcome.forwardable > 0 {
                partner.write(buffer.getSlice(at: buffer.readerIndex, length: outcome.forwardable)!)
            }
            if self.tracker.isAtFrameBoundary { partner.writePendingClose() }
            self.session.count(
                from: self.side,
                bytes: outcome.forwardable,
                messages: self.tracker.messages - messagesBefore
            )
            return
        }

        let outcome = self.tracker.consume(buffer)
        if outcome.forwardable == buffer.readableBytes {
            partner.write(buffer)
        } else if outcome.forwardable > 0 {
            partner.write(buffer.getSlice(at: buffer.readerIndex, length: outcome.forwardable)!)
        }
        self.session.count(
            from: self.side,
            bytes: outcome.forwardable,
            messages: self.tracker.messages - messagesBefore
        )
        if let violation = outcome.violation {
            self.session.violation(violation, from: self.side, boundaryIsClean: outcome.isBoundaryClean)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.partner?.flush()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ProxyShutdownEvent {
            self.session.close(code: 1001, reason: "going away")
            return
        }
        if case ChannelEvent.inputClosed = event {
            // Half-close: pass the end of this direction on, keep the other one open.
            self.inputClosed = true
            self.partner?.closeOutput()
            if self.partner?.inputClosed ?? true { self.session.closeBoth() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.session.halfInactive(self)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if let partner = self.partner, partner.isWritable {
            context.read()
        } else {
            self.pendingRead = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            if self.side == .downstream { self.session.downstreamWritable() }
            self.partner?.resumeReading()
        } else if self.side == .downstream {
            self.session.downstreamBlocked()
        }
        context.fireChannelWritabilityChanged()
    }

    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func resumeReading() {
        guard self.pendingRead, let context = self.context else { return }
        self.pendingRead = false
        context.read()
    }

    // MARK: Used by the partner and the session

    func write(_ buffer: ByteBuffer) {
        self.context?.write(Self.wrapOutboundOut(buffer), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func closeOutput() {
        guard let context = self.context else { return }
        context.flush()
        context.close(mode: .output, promise: nil)
    }

    func close() {
        guard let context = self.context else { return }
        context.flush()
        context.close(promise: nil)
    }

    /// Writes a Close frame to this side's peer now if the stream into it is between frames, else as soon as
    /// it gets there; then closes this side once the frame is out.
    func sendClose(code: UInt16, reason: String) {
        guard let context = self.context else { return }
        let frame = WebSocketFrameTracker.closeFrame(
            code: code,
            reason: reason,
            masked: self.side == .upstream,
            allocator: context.channel.allocator
        )
        self.pendingClose = frame
        if self.partner?.tracker.isAtFrameBoundary ?? true {
            self.writePendingClose()
        } else {
            self.partner?.resumeReading()  // keep the partner reading until its stream reaches a boundary
        }
    }

    fileprivate func writePendingClose() {
        guard let frame = self.pendingClose, let context = self.context else { return }
        self.pendingClose = nil
        self.partner?.isDraining = true
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(frame)).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
    }
}
