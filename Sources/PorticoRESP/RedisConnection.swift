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
        RESPClientHandler.command(arguments, on: self.channel)
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
