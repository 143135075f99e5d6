import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A Redis connection in pub/sub mode: messages of subscribed channels (and shard channels) go to `onMessage`
/// on the connection's event loop, and `onReadComplete` follows the last message of each read;
/// SUBSCRIBE, SSUBSCRIBE and their opposites wait for their confirmations.
public final class RedisSubscriber: Sendable {
    /// A message: its channel's name and its payload, as the bytes Redis sent (no String per message).
    public typealias MessageHandler = @Sendable (_ channel: ByteBuffer, _ payload: ByteBuffer) -> Void
    /// Redis ended a subscription on its own: a Redis Cluster shard lost the channel's slot.
    public typealias UnsubscribeHandler = @Sendable (_ channel: String) -> Void

    private let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Connects and authenticates; the connection then only subscribes.
    public static func connect(
        to url: RedisURL,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        connectTimeout: TimeAmount = .seconds(2),
        onUnsubscribed: UnsubscribeHandler? = nil,
        onReadComplete: (@Sendable () -> Void)? = nil,
        onMessage: @escaping MessageHandler
    ) async throws -> RedisSubscriber {
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        SubscriberHandler(
                            onMessage: onMessage,
                            onUnsubscribed: onUnsubscribed,
                            onReadComplete: onReadComplete
                        )
                    )
                }
            }
        let channel = try await bootstrap.connect(hostOrAddress: url.host, port: url.port).get()
        let subscriber = RedisSubscriber(channel: channel)
        if let password = url.password {
            do {
                _ = try await subscriber.command(
                    url.user.map { ["AUTH", $0, password] } ?? ["AUTH", password],
                    replies: 1
                )
            } catch {
                await subscriber.close()
                throw error
            }
        }
        return subscriber
    }

    /// SUBSCRIBE to `channels`; returns once Redis confirmed every one.
    public func subscribe(_ channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        _ = try await self.command(["SUBSCRIBE"] + channels, replies: channels.count)
    }

    public func unsubscribe(_ channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        _ = try await self.command(["UNSUBSCRIBE"] + channels, replies: channels.count)
    }

    /// SSUBSCRIBE to shard `channels` (Redis Cluster; all in one slot, or Redis answers CROSSSLOT or MOVED).
    public func ssubscribe(_ channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        _ = try await self.command(["SSUBSCRIBE"] + channels, replies: channels.count)
    }

    public func sunsubscribe(_ channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        _ = try await self.command(["SUNSUBSCRIBE"] + channels, replies: channels.count)
    }

    private func command(_ arguments: [String], replies: Int) async throws -> [RESPValue] {
        let promise = self.channel.eventLoop.makePromise(of: [RESPValue].self)
        let command = SubscriberHandler.Command(
            kind: arguments[0].lowercased(),
            arguments: arguments.map { ByteBuffer(string: $0) },
            replies: replies,
            promise: promise
        )
        self.channel.writeAndFlush(command, promise: nil)
        return try await promise.futureResult.get()
    }

    public var isActive: Bool { self.channel.isActive }

    /// Completes when the connection closes.
    public var closeFuture: EventLoopFuture<Void> { self.channel.closeFuture }

    public func close() async {
        try? await self.channel.close()
    }
}

private final class SubscriberHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Command
    typealias OutboundOut = ByteBuffer

    struct Command: Sendable {
        /// The command's name in lower case: confirmations of (un)subscriptions carry it.
        let kind: String
        let arguments: [ByteBuffer]
        let replies: Int
        let promise: EventLoopPromise<[RESPValue]>
    }

    private let reader = RESPReader()
    private let onMessage: RedisSubscriber.MessageHandler
    private let onUnsubscribed: RedisSubscriber.UnsubscribeHandler?
    private let onReadComplete: (@Sendable () -> Void)?
    private var waiting = CircularBuffer<
        (kind: String, remaining: Int, replies: [RESPValue], promise: EventLoopPromise<[RESPValue]>)
    >()

    init(
        onMessage: @escaping RedisSubscriber.MessageHandler,
        onUnsubscribed: RedisSubscriber.UnsubscribeHandler?,
        onReadComplete: (@Sendable () -> Void)?
    ) {
        self.onMessage = onMessage
        self.onUnsubscribed = onUnsubscribed
        self.onReadComplete = onReadComplete
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.onReadComplete?()
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = Self.unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(command.arguments, into: &buffer)
        self.waiting.append((command.kind, command.replies, [], command.promise))
        context.write(Self.wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try self.reader.feed(Self.unwrapInboundIn(data))
            while let reply = try self.reader.next() {
                // RESP2 pub/sub: ["message" or "smessage", channel, payload] is a push; so is an
                // ["sunsubscribe", channel, count] nobody asked for (the shard lost the slot). Anything else
                // answers the oldest command.
                if case .array(let parts?) = reply, parts.count == 3, case .bulkString(let kindBytes?) = parts[0],
                    case .bulkString(let channel?) = parts[1]
                {
                    let kind = kindBytes.readableBytesView
                    if kind.elementsEqual("message".utf8) || kind.elementsEqual("smessage".utf8),
                        case .bulkString(let payload?) = parts[2]
                    {
                        self.onMessage(channel, payload)
                        continue
                    }
                    let name = String(buffer: kindBytes)  // a confirmation or a lost slot: rare, not per message
                    if name.hasSuffix("unsubscribe"), self.waiting.first?.kind != name {
                        self.onUnsubscribed?(String(buffer: channel))
                        continue
                    }
                }
                guard var waiter = self.waiting.popFirst() else { continue }
                waiter.replies.append(reply)
                waiter.remaining -= 1
                if case .error(let message) = reply {
                    waiter.promise.fail(RedisConnection.ServerError(message: message))
                } else if waiter.remaining > 0 {
                    self.waiting.prepend(waiter)
                } else {
                    waiter.promise.succeed(waiter.replies)
                }
            }
        } catch {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let waiter = self.waiting.popFirst() {
            waiter.promise.fail(RedisConnection.ConnectionError(message: "connection to Redis closed"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
