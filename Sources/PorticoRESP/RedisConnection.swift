import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One connection to Redis speaking RESP2: commands are pipelined and their replies matched in order.
///
/// All I/O is SwiftNIO; hiredis only parses. While commands wait, a reply must come within `commandTimeout` of
/// the one before, or the connection closes (a stopped Redis looks exactly like that), failing every pending
/// command.
public final class RedisConnection: Sendable {
    private let channel: any Channel

    /// The reply was a RESP error, such as `ERR unknown command`.
    public struct ServerError: Error, Sendable, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { self.message }

        public init(message: String) {
            self.message = message
        }

        /// A Redis Cluster `MOVED` or `ASK`: the key's slot is served elsewhere.
        public var isRedirection: Bool { Redirection(message: self.message) != nil }
    }

    /// The connection closed, or a reply did not come in time.
    public struct ConnectionError: Error, Sendable, CustomStringConvertible {
        public let message: String
        public var description: String { self.message }

        public init(message: String) {
            self.message = message
        }
    }

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Connects, authenticates and selects the database the URL names.
    ///
    /// - Parameters:
    ///   - url: where Redis is.
    ///   - group: the event loops to use.
    ///   - connectTimeout: default 2 s.
    ///   - commandTimeout: default 2 s.
    public static func connect(
        to url: RedisURL,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(2),
        commandTimeout: TimeAmount = .seconds(2)
    ) async throws -> RedisConnection {
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RESPClientHandler(timeout: commandTimeout))
                }
            }
        let channel = try await bootstrap.connect(hostOrAddress: url.host, port: url.port).get()
        let connection = RedisConnection(channel: channel)
        do {
            if let password = url.password {
                _ = try await connection.send(url.user.map { ["AUTH", $0, password] } ?? ["AUTH", password])
            }
            if url.database != 0 { _ = try await connection.send(["SELECT", String(url.database)]) }
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Sends one command and waits for its reply; a RESP error reply throws ``ServerError``.
    public func send(_ arguments: [String]) async throws -> RESPValue {
        let reply = try await self.sendRaw(arguments.map { ByteBuffer(string: $0) })
        if case .error(let message) = reply { throw ServerError(message: message) }
        return reply
    }

    /// Sends one command given as byte buffers.
    public func sendRaw(_ arguments: [ByteBuffer]) async throws -> RESPValue {
        try await self.enqueue(arguments).get()
    }

    /// Writes one command now and returns its reply's future: many commands go out back to back (pipelined)
    /// and their replies come back in the order they were written.
    public func enqueue(_ arguments: [ByteBuffer]) -> EventLoopFuture<RESPValue> {
        let promise = self.channel.eventLoop.makePromise(of: RESPValue.self)
        self.channel.writeAndFlush(RESPClientHandler.Outbound.command(arguments, promise), promise: nil)
        return promise.futureResult
    }

    /// Publishes every message of `batch` in one write, pipelined; the future succeeds once Redis answered
    /// them all (their replies are counted, not kept) and fails with the first error reply.
    public func publish(_ batch: [(channel: ByteBuffer, payload: ByteBuffer)]) -> EventLoopFuture<Void> {
        let promise = self.channel.eventLoop.makePromise(of: Void.self)
        guard !batch.isEmpty else {
            promise.succeed()
            return promise.futureResult
        }
        self.channel.writeAndFlush(RESPClientHandler.Outbound.publish(batch, promise), promise: nil)
        return promise.futureResult
    }

    public var isActive: Bool { self.channel.isActive }

    public func close() async {
        try? await self.channel.close()
    }
}

/// Encodes commands, decodes replies with hiredis, and completes waiting commands in order.
///
/// One deadline for the whole connection, not a timer per command: while anything waits for a reply, a reply
/// must come within `timeout` of the previous one (or of the write that found nothing waiting), else the
/// connection is closed (a stopped Redis looks exactly like that) and everything waiting fails.
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Outbound
    typealias OutboundOut = ByteBuffer

    enum Outbound: Sendable {
        /// One command whose reply is wanted.
        case command([ByteBuffer], EventLoopPromise<RESPValue>)
        /// PUBLISH channel payload, for each entry; one promise for all of their replies.
        case publish([(channel: ByteBuffer, payload: ByteBuffer)], EventLoopPromise<Void>)
    }

    private enum Waiter {
        case reply(EventLoopPromise<RESPValue>)
        /// `remaining` replies still to come for one batch, and the first error among those that came.
        case counted(remaining: Int, error: String?, EventLoopPromise<Void>)
    }

    private let reader = RESPReader()
    private let timeout: TimeAmount
    private var waiting = CircularBuffer<Waiter>()
    /// When the oldest waiting command last saw progress: its write, or the reply before it.
    private var lastProgress = NIODeadline.now()
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    private static let publishCommand = ByteBuffer(string: "PUBLISH")

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let outbound = Self.unwrapOutboundIn(data)
        guard context.channel.isActive else {
            let error = RedisConnection.ConnectionError(message: "connection closed")
            switch outbound {
            case .command(_, let waiter): waiter.fail(error)
            case .publish(_, let waiter): waiter.fail(error)
            }
            promise?.fail(error)
            return
        }
        if self.waiting.isEmpty { self.lastProgress = .now() }
        var buffer: ByteBuffer
        switch outbound {
        case .command(let arguments, let waiter):
            buffer = context.channel.allocator.buffer(capacity: 64)
            RESPEncoder.encode(arguments, into: &buffer)
            self.waiting.append(.reply(waiter))
        case .publish(let batch, let waiter):
            buffer = context.channel.allocator.buffer(
                capacity: batch.reduce(0) { $0 + $1.channel.readableBytes + $1.payload.readableBytes + 48 }
            )
            for entry in batch {
                RESPEncoder.encode([Self.publishCommand, entry.channel, entry.payload], into: &buffer)
            }
            self.waiting.append(.counted(remaining: batch.count, error: nil, waiter))
        }
        self.armDeadline(context: context)
        context.write(Self.wrapOutboundOut(buffer), promise: promise)
    }

    private func armDeadline(context: ChannelHandlerContext) {
        guard self.deadline == nil else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        self.deadline = context.eventLoop.scheduleTask(deadline: self.lastProgress + self.timeout) {
            let (handler, context) = loopBound.value
            handler.deadline = nil
            guard !handler.waiting.isEmpty else { return }  // idle: disarmed until the next write
            if NIODeadline.now() >= handler.lastProgress + handler.timeout {
                context.close(promise: nil)  // no reply in time: treat Redis as gone
            } else {
                handler.armDeadline(context: context)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try self.reader.feed(Self.unwrapInboundIn(data))
            while let reply = try self.reader.next() {
                guard let waiter = self.waiting.first else { continue }
                self.lastProgress = .now()
                switch waiter {
                case .reply(let promise):
                    self.waiting.removeFirst()
                    promise.succeed(reply)
                case .counted(let remaining, var error, let promise):
                    if error == nil, case .error(let message) = reply { error = message }
                    if remaining > 1 {
                        let first = self.waiting.startIndex
                        self.waiting[first] = .counted(remaining: remaining - 1, error: error, promise)
                        continue
                    }
                    self.waiting.removeFirst()
                    if let error {
                        promise.fail(RedisConnection.ServerError(message: error))
                    } else {
                        promise.succeed()
                    }
                }
            }
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.deadline?.cancel()
        self.deadline = nil
        let error = RedisConnection.ConnectionError(message: "connection to Redis closed")
        while let waiter = self.waiting.popFirst() {
            switch waiter {
            case .reply(let promise): promise.fail(error)
            case .counted(_, _, let promise): promise.fail(error)
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

extension RedisConnection {
    /// Every key matching `pattern`: `SCAN 0 MATCH pattern COUNT 1000` until the cursor comes back to 0.
    public func scanKeys(matching pattern: String) async throws -> [String] {
        var keys: [String] = []
        var cursor = "0"
        repeat {
            let reply = try await self.send(["SCAN", cursor, "MATCH", pattern, "COUNT", "1000"])
            guard case .array(let parts?) = reply, parts.count == 2, case .bulkString(let next?) = parts[0],
                case .array(let found?) = parts[1]
            else { throw ConnectionError(message: "unexpected SCAN reply") }
            cursor = String(buffer: next)
            for case .bulkString(let key?) in found { keys.append(String(buffer: key)) }
        } while cursor != "0"
        return keys
    }
}
