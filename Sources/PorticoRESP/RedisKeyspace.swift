import NIOCore

/// Reading keys from one Redis, or from every master of a Redis Cluster (where keys of different slots cannot
/// share a command). Used by the balancer's Redis discovery and the relay's presence.
public enum RedisKeyspace: Sendable {
    case single(RedisConnection)
    case cluster(RedisClusterClient)

    public var isActive: Bool {
        get async {
            switch self {
            case .single(let connection): connection.isActive
            case .cluster(let client): await client.isActive
            }
        }
    }

    public func close() async {
        switch self {
        case .single(let connection): await connection.close()
        case .cluster(let client): await client.close()
        }
    }

    /// Keys matching `pattern` on every node that holds keys.
    public func scanKeys(matching pattern: String) async throws -> [String] {
        switch self {
        case .single(let connection): try await connection.scanKeys(matching: pattern)
        case .cluster(let client): try await client.scanKeys(matching: pattern)
        }
    }

    /// The values of `keys` in order, a null bulk string for each missing one.
    public func values(of keys: [String]) async throws -> [RESPValue] {
        guard !keys.isEmpty else { return [] }
        switch self {
        case .single(let connection):
            guard case .array(let values?) = try await connection.send(["MGET"] + keys), values.count == keys.count
            else { throw RedisConnection.ConnectionError(message: "unexpected MGET reply") }
            return values
        case .cluster(let client):
            // One pipelined GET per key, each to its slot's master.
            return try await client.sendBatch(
                keys.map { (["GET", $0].map { ByteBuffer(string: $0) }, RedisClusterSlot.of($0)) }
            )
        }
    }
}
