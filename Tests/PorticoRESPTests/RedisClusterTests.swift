import NIOCore
import PorticoRESP
import PorticoTestSupport
import Testing

@Suite struct RedisClusterSlotTests {
    @Test(arguments: [
        ("123456789", 12_739),  // CRC16-XMODEM's check value 0x31C3
        ("foo", 12_182),
        ("bar", 5_061),
        ("hello", 866),
        ("{bar}foo", 5_061),  // only the tag is hashed
        ("foo{bar}{zap}", 5_061),  // the first tag
    ])
    func slotsMatchRedis(key: String, slot: Int) {
        #expect(RedisClusterSlot.of(key) == slot)
    }

    @Test func anEmptyTagHashesTheWholeKey() {
        #expect(RedisClusterSlot.of("foo{}{bar}") != RedisClusterSlot.of("bar"))
        #expect(RedisClusterSlot.of("{user1000}.following") == RedisClusterSlot.of("{user1000}.followers"))
    }
}

@Suite(.serialized) struct RedisClusterClientTests {
    @Test func slotsAgreeWithClusterKeyslot() async throws {
        let cluster = try await RedisClusterServers.start()
        defer { cluster.stop() }
        let connection = try await RedisConnection.connect(to: cluster.urls[0])
        for key in ["portico:v1:room:lobby", "a{b}c", "{}x", "x{}", "{{a}}", "é{ü}", "room-42", "", "{", "foo{}{bar}"] {
            let reply = try await connection.send(["CLUSTER", "KEYSLOT", key])
            #expect(reply == .integer(Int64(RedisClusterSlot.of(key))), "\(key)")
        }
        await connection.close()
    }

    @Test func commandsGoToTheOwnerAndRedirectionsAreFollowed() async throws {
        let cluster = try await RedisClusterServers.start()
        defer { cluster.stop() }
        let client = try await RedisClusterClient.connect(seeds: [cluster.urls[1]])
        #expect(await client.masters.count == 3)
        // Keys spread over every master, written pipelined and read back one by one.
        let keys = (0..<60).map { "key-\($0)" }
        let replies = try await client.sendBatch(
            keys.map { key in (["SET", key, "value-\(key)"].map { ByteBuffer(string: $0) }, RedisClusterSlot.of(key)) }
        )
        #expect(replies.allSatisfy { $0 == .simpleString("OK") })
        for key in keys {
            #expect(try await client.send(["GET", key], key: key) == .bulkString(ByteBuffer(string: "value-\(key)")))
        }
        #expect(await client.redirections == 0)

        // An empty slot moves to another master: the client's map is stale, MOVED sends it to the new owner.
        let key = "moving"
        let slot = RedisClusterSlot.of(key)
        let source = try await cluster.owner(ofSlot: slot)
        let target = cluster.nodes.first { $0.port != source.port }!
        try await cluster.moveSlot(slot, to: target)
        #expect(try await client.send(["SET", key, "1"], key: key) == .simpleString("OK"))
        #expect(await client.redirections == 1)
        #expect(await client.owner(ofSlot: slot)?.port == target.port)

        // A slot being migrated: the source answers ASK for a key it does not hold; the client asks the target.
        let asked = "asked"
        let askedSlot = RedisClusterSlot.of(asked)
        let from = try await cluster.owner(ofSlot: askedSlot)
        let to = cluster.nodes.first { $0.port != from.port }!
        let onFrom = try await RedisConnection.connect(to: from.url)
        let onTo = try await RedisConnection.connect(to: to.url)
        guard case .bulkString(let fromID?) = try await onFrom.send(["CLUSTER", "MYID"]),
            case .bulkString(let toID?) = try await onTo.send(["CLUSTER", "MYID"])
        else {
            Issue.record("no node ids")
            return
        }
        _ = try await onTo.send(["CLUSTER", "SETSLOT", "\(askedSlot)", "IMPORTING", String(buffer: fromID)])
        _ = try await onFrom.send(["CLUSTER", "SETSLOT", "\(askedSlot)", "MIGRATING", String(buffer: toID)])
        #expect(try await client.send(["SET", asked, "there"], key: asked) == .simpleString("OK"))
        #expect(await client.redirections == 2)
        #expect(try await onTo.send(["ASKING"]) == .simpleString("OK"))
        #expect(try await onTo.send(["GET", asked]) == .bulkString(ByteBuffer(string: "there")))
        await onFrom.close()
        await onTo.close()
        await client.close()
    }
}
