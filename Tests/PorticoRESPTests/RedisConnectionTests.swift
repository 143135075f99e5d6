import NIOConcurrencyHelpers
import NIOCore
import PorticoRESP
import PorticoTestSupport
import Testing

@Suite(.serialized) struct RedisConnectionTests {
    @Test func pipelinedCommandsAgainstARealRedis() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let connection = try await RedisConnection.connect(to: redis.url)
        #expect(try await connection.send(["SET", "k", "v"]) == .simpleString("OK"))
        // Many commands in flight at once come back matched to the right caller.
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                group.addTask { try await connection.send(["INCRBY", "n", "\(index)"]) != .integer(-1) }
            }
            for try await ok in group { #expect(ok) }
        }
        #expect(
            try await connection.send(["GET", "n"]) == .bulkString(ByteBuffer(string: "\((0..<200).reduce(0, +))"))
        )
        await #expect(throws: RedisConnection.ServerError.self) { try await connection.send(["NOSUCHCOMMAND"]) }
        #expect(try await connection.send(["GET", "missing"]) == .bulkString(nil))
        await connection.close()
    }

    @Test func aHungRedisIsDetected() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let connection = try await RedisConnection.connect(to: redis.url, commandTimeout: .milliseconds(300))
        redis.pause()
        defer { redis.resume() }
        let started = ContinuousClock.now
        await #expect(throws: RedisConnection.ConnectionError.self) { try await connection.send(["PING"]) }
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(!connection.isActive)
    }

    /// A batch of publishes is one write with one promise: every message arrives, in order, and the batch's
    /// future completes once Redis answered them all.
    @Test func aPublishBatchArrivesWholeAndInOrder() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let received = NIOLockedValueBox<[String]>([])
        let subscriber = try await RedisSubscriber.connect(to: redis.url) { _, payload in
            received.withLockedValue { $0.append(String(buffer: payload)) }
        }
        try await subscriber.subscribe(["c"])
        let connection = try await RedisConnection.connect(to: redis.url)
        let channel = ByteBuffer(string: "c")
        for round in 0..<4 {
            let batch = (0..<500).map { (channel: channel, payload: ByteBuffer(string: "\(round)-\($0)")) }
            try await connection.publish(batch).get()
        }
        try await connection.publish([]).get()
        let expected = (0..<4).flatMap { round in (0..<500).map { "\(round)-\($0)" } }
        #expect(await eventually { received.withLockedValue { $0.count } == expected.count })
        #expect(received.withLockedValue { $0 } == expected)
        #expect(try await connection.send(["PING"]) == .simpleString("PONG"))  // replies still matched after
        await subscriber.close()
        await connection.close()
    }

    /// The deadline is for silence while something waits, not for time spent: an idle connection longer than
    /// the timeout stays open, and so does a busy one whose replies keep coming.
    @Test func theDeadlineMeasuresSilenceNotAge() async throws {
        let redis = try await RedisServer.start()
        defer { redis.stop() }
        let connection = try await RedisConnection.connect(to: redis.url, commandTimeout: .milliseconds(200))
        try await Task.sleep(for: .milliseconds(500))  // idle past the timeout
        #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .milliseconds(600) {  // busy past the timeout
            let futures = (0..<100).map { _ in connection.enqueue([ByteBuffer(string: "PING")]) }
            for future in futures { #expect(try await future.get() == .simpleString("PONG")) }
        }
        #expect(connection.isActive)
        await connection.close()
    }

    @Test func urls() {
        let full = RedisURL("redis://user:pw@10.0.0.1:6380/2")
        #expect(full?.host == "10.0.0.1" && full?.port == 6380 && full?.user == "user" && full?.password == "pw")
        #expect(full?.database == 2)
        #expect(full?.description == "redis://user:***@10.0.0.1:6380/2")
        #expect(RedisURL("redis://localhost")?.port == 6379)
        #expect(RedisURL("redis://[::1]:7000")?.host == "::1")
        #expect(RedisURL("http://x") == nil)
        #expect(RedisURL("redis://host:notaport") == nil)
    }
}
