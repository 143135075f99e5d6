import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import PorticoRESP

/// The one RESP client handler in pub/sub mode, driven byte by byte on an embedded channel: which replies
/// confirm a waiting (un)subscription and which are Redis's own pushes.
@Suite struct RESPClientHandlerTests {
    final class Pushes: Sendable {
        let messages = NIOLockedValueBox<[String]>([])
        let unsubscribed = NIOLockedValueBox<[String]>([])

        var handler: RESPClientHandler.Pushes {
            .init(
                onMessage: { channel, payload in
                    self.messages.withLockedValue { $0.append("\(String(buffer: channel))=\(String(buffer: payload))") }
                },
                onUnsubscribed: { channel in self.unsubscribed.withLockedValue { $0.append(channel) } },
                onReadComplete: nil
            )
        }
    }

    static func channel(_ pushes: Pushes) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: RESPClientHandler(timeout: .seconds(2), pushes: pushes.handler))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return channel
    }

    static func push(_ channel: EmbeddedChannel, _ parts: [String?]) throws {
        var bytes = "*\(parts.count)\r\n"
        for part in parts {
            if let part {
                bytes += Int(part).map { ":\($0)\r\n" } ?? "$\(part.utf8.count)\r\n\(part)\r\n"
            } else {
                bytes += "$-1\r\n"
            }
        }
        try channel.writeInbound(ByteBuffer(string: bytes))
    }

    static func subscription(
        _ channel: EmbeddedChannel,
        _ kind: String,
        _ channels: [String]
    ) throws -> EventLoopFuture<[RESPValue]> {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        try channel.writeOutbound(RESPClientHandler.Outbound.subscription(kind: kind, channels: channels, promise))
        return promise.futureResult
    }

    /// Becomes true once `future` succeeds with replies that pass `check`.
    static func succeeded(
        _ future: EventLoopFuture<[RESPValue]>,
        _ check: @escaping @Sendable ([RESPValue]) -> Bool = { _ in true }
    ) -> NIOLockedValueBox<Bool> {
        let box = NIOLockedValueBox(false)
        future.whenSuccess { replies in box.withLockedValue { $0 = check(replies) } }
        return box
    }

    @Test func aSubscriptionOfSeveralChannelsWaitsForEveryConfirmation() throws {
        let pushes = Pushes()
        let channel = try Self.channel(pushes)
        let done = try Self.subscription(channel, "subscribe", ["a", "b"])
        let written = try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }
        #expect(written == "*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n")
        try Self.push(channel, ["subscribe", "a", "1"])
        try Self.push(channel, ["message", "a", "hi"])  // a message between confirmations is a message
        let confirmed = Self.succeeded(done) { $0.count == 2 }
        #expect(!confirmed.withLockedValue { $0 })
        try Self.push(channel, ["subscribe", "b", "2"])
        #expect(confirmed.withLockedValue { $0 })
        #expect(pushes.messages.withLockedValue { $0 } == ["a=hi"])
    }

    /// A shard that loses a slot ends that channel's subscription on its own: while an SUNSUBSCRIBE of another
    /// channel waits, that push is Redis's, not the confirmation.
    @Test func anUnaskedUnsubscriptionIsNotTakenForTheWaitingOne() throws {
        let pushes = Pushes()
        let channel = try Self.channel(pushes)
        let done = try Self.subscription(channel, "sunsubscribe", ["x"])
        _ = try channel.readOutbound(as: ByteBuffer.self)
        let confirmed = Self.succeeded(done)
        try Self.push(channel, ["sunsubscribe", "y", "1"])
        #expect(!confirmed.withLockedValue { $0 })
        #expect(pushes.unsubscribed.withLockedValue { $0 } == ["y"])
        try Self.push(channel, ["sunsubscribe", "x", "0"])
        #expect(confirmed.withLockedValue { $0 })
        #expect(pushes.unsubscribed.withLockedValue { $0 } == ["y"])
    }

    @Test func aMalformedMessageIsDroppedNotTakenForAReply() throws {
        let pushes = Pushes()
        let channel = try Self.channel(pushes)
        let done = try Self.subscription(channel, "subscribe", ["a"])
        let confirmed = Self.succeeded(done)
        try Self.push(channel, ["message", "a", nil])  // a null payload: no such message exists
        #expect(!confirmed.withLockedValue { $0 })
        try Self.push(channel, ["subscribe", "a", "1"])
        #expect(confirmed.withLockedValue { $0 })
        #expect(pushes.messages.withLockedValue { $0 }.isEmpty)
    }

    @Test func anErrorFailsTheSubscription() throws {
        let pushes = Pushes()
        let channel = try Self.channel(pushes)
        let done = try Self.subscription(channel, "ssubscribe", ["a"])
        let failure = NIOLockedValueBox<(any Error)?>(nil)
        done.whenFailure { error in failure.withLockedValue { $0 = error } }
        try channel.writeInbound(ByteBuffer(string: "-MOVED 15495 127.0.0.1:7002\r\n"))
        #expect((failure.withLockedValue { $0 } as? RedisConnection.ServerError)?.isRedirection == true)
    }
}
