import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A Redis connection in pub/sub mode: messages of subscribed channels (and shard channels) go to `onMessage`
/// on the connection's event loop, and `onReadComplete` follows the last message of each read;
/// SUBSCRIBE, SSUBSCRIBE and their opposites wait for their confirmations (within `commandTimeout` of each
/// other, or the connection closes). The same ``RESPClientHandler`` as ``RedisConnection``'s, with pushes.
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
        commandTimeout: TimeAmount = .seconds(2),
        onUnsubscribed: UnsubscribeHandler? = nil,
        onReadComplete: (@Sendable () -> Void)? = nil,
        onMessage: @escaping MessageHandler
    ) async throws -> RedisSubscriber {
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        RESPClientHandler(
                            timeout: commandTimeout,
                            pushes: .init(
                                onMessage: onMessage,
                                onUnsubscribed: onUnsubscribed,
                                onReadComplete: onReadComplete
                            )
                        )
                    )
                }
            }
        let channel = try await bootstrap.connect(hostOrAddress: url.host, port: url.port).get()
        let subscriber = RedisSubscriber(channel: channel)
        if let password = url.password {
            do {
                let arguments = url.user.map { ["AUTH", $0, password] } ?? ["AUTH", password]
                let reply = RESPClientHandler.command(arguments.map { ByteBuffer(string: $0) }, on: channel)
                if case .error(let message) = try await reply.get() {
                    throw RedisConnection.ServerError(message: message)
                }
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
        _ = try await self.command("subscribe", channels)
    }

    public func unsubscribe(_ channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        _ = try await self.command("unsubscribe", channels)
    }

    /// SSUBSCRIBE to shard `channels` (Redis Cluster; all in one slot, or Redis answers CROSSSLOT or MOVED).
    public func ssubscribe(_ channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        _ = try await self.command("ssubscribe", channels)
    }

    public func sunsubscribe(_ channels: [String]) async throws {
        guard !channels.isEmpty else { return }
        _ = try await self.command("sunsubscribe", channels)
    }

    /// `kind` (`subscribe`, `ssubscribe`, …) of `channels`; returns their confirmations.
    private func command(_ kind: String, _ channels: [String]) async throws -> [RESPValue] {
        let promise = self.channel.eventLoop.makePromise(of: [RESPValue].self)
        let command = RESPClientHandler.Outbound.subscription(kind: kind, channels: channels, promise)
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
