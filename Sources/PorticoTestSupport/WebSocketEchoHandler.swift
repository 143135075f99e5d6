import NIOCore
import NIOWebSocket

/// Echoes every WebSocket frame as it came (fragments stay fragments); "whoami" is answered with the backend's
/// name; pings get pongs; a Close is answered with the same code, then the connection closes.
final class WebSocketEchoHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let name: String

    init(name: String) {
        self.name = name
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var frame = Self.unwrapInboundIn(data)
        let payload = frame.unmaskedData
        switch frame.opcode {
        case .text where frame.fin && String(buffer: payload) == "whoami":
            let reply = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: self.name))
            context.writeAndFlush(Self.wrapOutboundOut(reply), promise: nil)
        case .text, .binary, .continuation:
            let echo = WebSocketFrame(fin: frame.fin, opcode: frame.opcode, data: payload)
            context.write(Self.wrapOutboundOut(echo), promise: nil)
        case .ping:
            context.writeAndFlush(
                Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)),
                promise: nil
            )
        case .connectionClose:
            let reply = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
            let channel = context.channel
            context.writeAndFlush(Self.wrapOutboundOut(reply)).whenComplete { _ in channel.close(promise: nil) }
        default:
            break
        }
        frame.data.clear()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}
