import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A WebSocket client that writes raw bytes, so tests can also send what a real client must not
/// (unmasked frames, reserved opcodes, bytes before the handshake is answered).
public final class WebSocketTestClient: Sendable {
    /// One frame as received from the server.
    public struct Frame: Sendable, Equatable {
        public var fin: Bool
        public var opcode: UInt8
        public var payload: [UInt8]

        public var text: String { String(decoding: self.payload, as: UTF8.self) }
        /// For Close frames: the status code, if any.
        public var closeCode: UInt16? {
            self.payload.count >= 2 ? UInt16(self.payload[0]) << 8 | UInt16(self.payload[1]) : nil
        }
    }

    /// The handshake answer.
    public let status: Int
    public let responseHead: String
    private let channel: any Channel
    private let inbox: Inbox

    private init(status: Int, responseHead: String, channel: any Channel, inbox: Inbox) {
        self.status = status
        self.responseHead = responseHead
        self.channel = channel
        self.inbox = inbox
    }

    /// Connects to `127.0.0.1:port` and sends a WebSocket handshake for `path`.
    ///
    /// - Parameters:
    ///   - port: the server's loopback port.
    ///   - path: the request target.
    ///   - headers: extra handshake headers (Origin, Cookie, …).
    ///   - early: bytes sent right after the handshake, before its answer.
    public static func connect(
        port: Int,
        path: String = "/ws",
        headers: [(String, String)] = [],
        early: ByteBuffer? = nil,
        tls: TestTLS? = nil
    ) async throws -> WebSocketTestClient {
        let inbox = Inbox()
        let group = MultiThreadedEventLoopGroup.singleton
        let handshake = group.next().makePromise(of: (Int, String).self)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls.makeHandler()) }
                    try channel.pipeline.syncOperations.addHandler(
                        WebSocketClientHandler(handshake: handshake, inbox: inbox)
                    )
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        var request = "GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        request += "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        request += "\r\n"
        var bytes = ByteBuffer(string: request)
        if var early { bytes.writeBuffer(&early) }
        try await channel.writeAndFlush(bytes)
        let timer = channel.eventLoop.scheduleTask(in: .seconds(5)) {
            handshake.fail(ChannelError.connectTimeout(.seconds(5)))
        }
        let (status, head) = try await handshake.futureResult.get()
        timer.cancel()
        return WebSocketTestClient(status: status, responseHead: head, channel: channel, inbox: inbox)
    }

    /// An encoded frame; client frames are masked unless `masked` is false.
    public static func frame(opcode: UInt8, payload: [UInt8], fin: Bool = true, masked: Bool = true) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8((fin ? 0x80 : 0) | opcode))
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            buffer.writeInteger(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            buffer.writeInteger(maskBit | 126)
            buffer.writeInteger(UInt16(payload.count))
        } else {
            buffer.writeInteger(maskBit | 127)
            buffer.writeInteger(UInt64(payload.count))
        }
        if masked {
            let key: [UInt8] = [0x37, 0xfa, 0x21, 0x3d]
            buffer.writeBytes(key)
            buffer.writeBytes(payload.enumerated().map { $0.element ^ key[$0.offset % 4] })
        } else {
            buffer.writeBytes(payload)
        }
        return buffer
    }

    public func send(text: String) async throws {
        try await self.sendRaw(Self.frame(opcode: 0x1, payload: Array(text.utf8)))
    }

    public func send(binary: [UInt8], fin: Bool = true, continuation: Bool = false) async throws {
        try await self.sendRaw(Self.frame(opcode: continuation ? 0x0 : 0x2, payload: binary, fin: fin))
    }

    public func sendRaw(_ bytes: ByteBuffer) async throws {
        try await self.channel.writeAndFlush(bytes)
    }

    /// Ends the client's sending direction (TCP half-close).
    public func shutdownOutput() async throws {
        try await self.channel.close(mode: .output)
    }

    /// The next frame, or `nil` once the connection has closed; fails after `timeout`.
    public func receive(timeout: Duration = .seconds(5)) async throws -> Frame? {
        let deadline = ContinuousClock.now + timeout
        while true {
            switch self.inbox.take() {
            case .frame(let frame): return frame
            case .closed: return nil
            case .empty:
                guard ContinuousClock.now < deadline else { throw ChannelError.connectTimeout(.seconds(5)) }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
    }

    /// Receives until a whole message (fragments joined) arrives; control frames are returned on their own.
    public func receiveMessage(timeout: Duration = .seconds(10)) async throws -> Frame? {
        var message: Frame?
        while let frame = try await self.receive(timeout: timeout) {
            if frame.opcode >= 0x8 { return frame }
            if message == nil { message = frame } else { message!.payload += frame.payload }
            if frame.fin { return message }
        }
        return message
    }

    public var isActive: Bool { self.channel.isActive }

    public func close() async {
        try? await self.channel.close()
    }
}

/// Frames received and not yet taken, shared by the channel handler and the test.
final class Inbox: Sendable {
    enum Item {
        case frame(WebSocketTestClient.Frame)
        case closed
        case empty
    }

    private let state = NIOLockedValueBox<(frames: [WebSocketTestClient.Frame], closed: Bool)>(([], false))

    func yield(_ frame: WebSocketTestClient.Frame) {
        self.state.withLockedValue { $0.frames.append(frame) }
    }

    func finish() {
        self.state.withLockedValue { $0.closed = true }
    }

    func take() -> Item {
        self.state.withLockedValue { state in
            if !state.frames.isEmpty { return .frame(state.frames.removeFirst()) }
            return state.closed ? .closed : .empty
        }
    }
}

private final class WebSocketClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let handshake: EventLoopPromise<(Int, String)>
    private let frames: Inbox
    private var buffer = ByteBuffer()
    private var handshakeDone = false

    init(handshake: EventLoopPromise<(Int, String)>, inbox: Inbox) {
        self.handshake = handshake
        self.frames = inbox
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        self.buffer.writeBuffer(&incoming)
        if !self.handshakeDone {
            guard let end = self.buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let length = end.upperBound - self.buffer.readerIndex
            let head = self.buffer.readString(length: length) ?? ""
            self.handshakeDone = true
            let status = Int(head.dropFirst(9).prefix(3)) ?? 0
            self.handshake.succeed((status, head))
            if status != 101 {
                // Not a WebSocket: whatever follows is an HTTP body, delivered as one binary "frame".
                if self.buffer.readableBytes > 0 {
                    self.frames.yield(.init(fin: true, opcode: 0xFF, payload: Array(self.buffer.readableBytesView)))
                    self.buffer.clear()
                }
                return
            }
        }
        self.parseFrames()
    }

    private func parseFrames() {
        while self.buffer.readableBytes >= 2 {
            let start = self.buffer.readerIndex
            let first = self.buffer.getInteger(at: start, as: UInt8.self)!
            let second = self.buffer.getInteger(at: start + 1, as: UInt8.self)!
            var length = Int(second & 0x7F)
            var headerLength = 2
            if length == 126 {
                guard let extended = self.buffer.getInteger(at: start + 2, as: UInt16.self) else { return }
                length = Int(extended)
                headerLength = 4
            } else if length == 127 {
                guard let extended = self.buffer.getInteger(at: start + 2, as: UInt64.self) else { return }
                length = Int(extended)
                headerLength = 10
            }
            if second & 0x80 != 0 { headerLength += 4 }
            guard self.buffer.readableBytes >= headerLength + length else { return }
            self.buffer.moveReaderIndex(forwardBy: headerLength)
            let payload = self.buffer.readBytes(length: length) ?? []
            self.frames.yield(.init(fin: first & 0x80 != 0, opcode: first & 0x0F, payload: payload))
        }
        self.buffer.discardReadBytes()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            self.frames.finish()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.handshake.fail(ChannelError.ioOnClosedChannel)
        self.frames.finish()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
