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
