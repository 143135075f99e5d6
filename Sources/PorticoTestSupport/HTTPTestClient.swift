import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A keep-alive HTTP/1.1 client over one connection, for integration tests.
public final class HTTPTestClient: Sendable {
    /// A complete response.
    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: String
    }

    private let channel: any Channel
    private let handler: NIOLoopBound<ResponseCollector>

    private init(channel: any Channel, handler: NIOLoopBound<ResponseCollector>) {
        self.channel = channel
        self.handler = handler
    }

    /// Opens a connection to `127.0.0.1:port`.
    public static func connect(port: Int, tls: TestTLS? = nil) async throws -> HTTPTestClient {
        let group = MultiThreadedEventLoopGroup.singleton
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(try tls.makeHandler()) }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector())
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: ResponseCollector.self),
                eventLoop: channel.eventLoop
            )
        }.get()
        return HTTPTestClient(channel: channel, handler: handler)
    }

    /// One request on a fresh connection, closed afterwards.
    public static func request(
        port: Int,
        _ method: HTTPMethod = .GET,
        _ uri: String,
        headers: [(String, String)] = [],
        body: String? = nil
    ) async throws -> Response {
        let client = try await HTTPTestClient.connect(port: port)
        defer { Task { await client.close() } }
        return try await client.request(method, uri, headers: headers, body: body)
    }

    /// Sends one request on this connection and waits for its response.
    public func request(
        _ method: HTTPMethod = .GET,
        _ uri: String,
        headers: [(String, String)] = [],
        body: String? = nil
    ) async throws -> Response {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        head.headers.add(name: "host", value: "localhost")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.replaceOrAdd(name: "content-length", value: String(body.utf8.count)) }
        let handler = self.handler
        let requestHead = head
        let channel = self.channel
        let future = channel.eventLoop.flatSubmit {
            let promise = channel.eventLoop.makePromise(of: Response.self)
            handler.value.waiting.append(promise)
            channel.write(HTTPClientRequestPart.head(requestHead), promise: nil)
            if let body {
                channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            return promise.futureResult
        }
        return try await future.get()
    }

    public var isActive: Bool { self.channel.isActive }

    /// The certificate the server presented (TLS connections only).
    public func peerCertificate() async throws -> NIOSSLCertificate? {
        try await self.channel.nioSSL_peerCertificate().get()
    }

    public func close() async {
        try? await self.channel.close()
    }
}

final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    var waiting: [EventLoopPromise<HTTPTestClient.Response>] = []
    private var current: HTTPTestClient.Response?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.current = HTTPTestClient.Response(status: Int(head.status.code), headers: head.headers, body: "")
        case .body(var buffer):
            self.current?.body += buffer.readString(length: buffer.readableBytes) ?? ""
        case .end:
            if let response = self.current, !self.waiting.isEmpty {
                self.waiting.removeFirst().succeed(response)
            }
            self.current = nil
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        for promise in self.waiting { promise.fail(ChannelError.ioOnClosedChannel) }
        self.waiting = []
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        for promise in self.waiting { promise.fail(error) }
        self.waiting = []
        context.close(promise: nil)
    }
}
