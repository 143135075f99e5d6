import NIOCore

/// The one RESP client handler, under both ``RedisConnection`` (commands, pipelined publishes) and
/// ``RedisSubscriber`` (pub/sub): encodes what is written, decodes replies with hiredis (``RESPReader``) and
/// completes waiting commands in order. With ``Pushes``, a pub/sub message is handed over as the bytes Redis
/// sent, on the connection's event loop, and never mistaken for a reply.
///
/// One deadline for the whole connection, not a timer per command: while anything waits for a reply, a reply
/// must come within `timeout` of the previous one (or of the write that found nothing waiting), else the
/// connection is closed (a stopped Redis looks exactly like that) and everything waiting fails.
///
/// Stored `var`s are `@exclusivity(unchecked)`: only the channel's event loop touches them, and never two accesses
/// to one at once (the tests ran with the runtime's checks on first); those checks were about 13% of the relay's
/// CPU (perf, BENCHMARKS.md).
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Outbound
    typealias OutboundOut = ByteBuffer

    enum Outbound: Sendable {
        /// One command whose reply is wanted.
        case command([ByteBuffer], EventLoopPromise<RESPValue>)
        /// PUBLISH channel payload, for each entry; one promise for all of their replies.
        case publish([(channel: ByteBuffer, payload: ByteBuffer)], EventLoopPromise<Void>)
        /// A (un)subscription of `channels`: one confirmation per channel, each naming `kind` (the command in
        /// lower case) and the channel; the promise gets them all, or fails on the first error.
        case subscription(kind: String, channels: [String], EventLoopPromise<[RESPValue]>)
    }

    /// What a connection in pub/sub mode does with what Redis pushes.
    struct Pushes: Sendable {
        let onMessage: RedisSubscriber.MessageHandler
        /// Redis ended a subscription nobody asked to end (a cluster shard lost the channel's slot).
        let onUnsubscribed: RedisSubscriber.UnsubscribeHandler?
        /// The end of a read batch: after its last message.
        let onReadComplete: (@Sendable () -> Void)?
    }

    private enum Waiter {
        case reply(EventLoopPromise<RESPValue>)
        /// `remaining` replies still to come for one batch, and the first error among those that came.
        case counted(remaining: Int, error: String?, EventLoopPromise<Void>)
        /// A subscription's confirmations: the channels still to confirm (in the order Redis confirms them), those
        /// that came so far.
        case collected(kind: String, channels: ArraySlice<String>, [RESPValue], EventLoopPromise<[RESPValue]>)

        func fail(_ error: any Error) {
            switch self {
            case .reply(let promise): promise.fail(error)
            case .counted(_, _, let promise): promise.fail(error)
            case .collected(_, _, _, let promise): promise.fail(error)
            }
        }
    }

    private let reader = RESPReader()
    private let timeout: TimeAmount
    private let pushes: Pushes?
    @exclusivity(unchecked) private var waiting = CircularBuffer<Waiter>()
    /// When the oldest waiting command last saw progress: its write, or the reply before it.
    @exclusivity(unchecked) private var lastProgress = NIODeadline.now()
    @exclusivity(unchecked) private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount, pushes: Pushes? = nil) {
        self.timeout = timeout
        self.pushes = pushes
    }

    private static let publishCommand = ByteBuffer(string: "PUBLISH")

    /// Writes one command to `channel` (whose pipeline has this handler) and returns its reply's future.
    static func command(_ arguments: [ByteBuffer], on channel: any Channel) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        channel.writeAndFlush(Outbound.command(arguments, promise), promise: nil)
        return promise.futureResult
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let outbound = Self.unwrapOutboundIn(data)
        let waiter: Waiter
        var buffer: ByteBuffer
        switch outbound {
        case .command(let arguments, let reply):
            buffer = context.channel.allocator.buffer(capacity: 64)
            RESPEncoder.encode(arguments, into: &buffer)
            waiter = .reply(reply)
        case .publish(let batch, let confirmed):
            buffer = context.channel.allocator.buffer(
                capacity: batch.reduce(0) { $0 + $1.channel.readableBytes + $1.payload.readableBytes + 48 }
            )
            for entry in batch {
                RESPEncoder.encode([Self.publishCommand, entry.channel, entry.payload], into: &buffer)
            }
            waiter = .counted(remaining: batch.count, error: nil, confirmed)
        case .subscription(let kind, let channels, let confirmations):
            buffer = context.channel.allocator.buffer(capacity: 64)
            RESPEncoder.encode(
                [ByteBuffer(string: kind.uppercased())] + channels.map { ByteBuffer(string: $0) },
                into: &buffer
            )
            waiter = .collected(kind: kind, channels: channels[...], [], confirmations)
        }
        guard context.channel.isActive else {
            let error = RedisConnection.ConnectionError(message: "connection closed")
            waiter.fail(error)
            promise?.fail(error)
            return
        }
        if self.waiting.isEmpty { self.lastProgress = .now() }
        self.waiting.append(waiter)
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
                if let pushes = self.pushes, self.handledAsPush(reply, pushes) {
                    // Redis is alive and sending: a confirmation queued behind many messages is not late.
                    if !self.waiting.isEmpty { self.lastProgress = .now() }
                    continue
                }
                guard let waiter = self.waiting.first else { continue }
                self.lastProgress = .now()
                self.answer(waiter, with: reply)
            }
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }

    /// RESP2 pub/sub: `["message" or "smessage", channel, payload]` is a push (one of another shape is dropped,
    /// never taken for a reply); so is an `["sunsubscribe", channel, count]` that confirms nothing asked for
    /// (the shard lost the slot). Anything else answers the oldest command.
    private func handledAsPush(_ reply: RESPValue, _ pushes: Pushes) -> Bool {
        guard case .array(let parts?) = reply, parts.count == 3, case .bulkString(let kindBytes?) = parts[0] else {
            return false
        }
        let kind = kindBytes.readableBytesView
        if kind.elementsEqual("message".utf8) || kind.elementsEqual("smessage".utf8) {
            if case .bulkString(let channel?) = parts[1], case .bulkString(let payload?) = parts[2] {
                pushes.onMessage(channel, payload)
            }
            return true
        }
        guard case .bulkString(let channelBytes?) = parts[1] else { return false }
        let name = String(buffer: kindBytes)  // a confirmation or a lost slot: rare, not per message
        guard name.hasSuffix("unsubscribe") else { return false }
        // A confirmation of the waiting command names its kind and one of its channels; any other is Redis's own.
        let channel = String(buffer: channelBytes)
        // In order, the confirmation names the next channel: checked first, so a SUBSCRIBE of many is not O(n²).
        if case .collected(name, let channels, _, _)? = self.waiting.first,
            channels.first == channel || channels.contains(channel)
        {
            return false
        }
        pushes.onUnsubscribed?(channel)
        return true
    }

    private func answer(_ waiter: Waiter, with reply: RESPValue) {
        let first = self.waiting.startIndex
        switch waiter {
        case .reply(let promise):
            self.waiting.removeFirst()
            promise.succeed(reply)
        case .counted(let remaining, var error, let promise):
            if error == nil, case .error(let message) = reply { error = message }
            guard remaining <= 1 else {
                self.waiting[first] = .counted(remaining: remaining - 1, error: error, promise)
                return
            }
            self.waiting.removeFirst()
            if let error {
                promise.fail(RedisConnection.ServerError(message: error))
            } else {
                promise.succeed()
            }
        case .collected(let kind, var channels, var replies, let promise):
            if case .error(let message) = reply {
                self.waiting.removeFirst()
                promise.fail(RedisConnection.ServerError(message: message))
                return
            }
            replies.append(reply)
            // Confirmations come in the order the channels were named: the first is the one this names (any other
            // it names is taken off where it is; one that names none takes the first).
            if case .array(let parts?) = reply, parts.count == 3, case .bulkString(let named?) = parts[1],
                channels.first.map({ !named.readableBytesView.elementsEqual($0.utf8) }) ?? false,
                let index = channels.firstIndex(of: String(buffer: named))
            {
                channels.remove(at: index)
            } else if !channels.isEmpty {
                channels.removeFirst()
            }
            guard channels.isEmpty else {
                self.waiting[first] = .collected(kind: kind, channels: channels, replies, promise)
                return
            }
            self.waiting.removeFirst()
            promise.succeed(replies)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.pushes?.onReadComplete?()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.deadline?.cancel()
        self.deadline = nil
        let error = RedisConnection.ConnectionError(message: "connection to Redis closed")
        while let waiter = self.waiting.popFirst() { waiter.fail(error) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
