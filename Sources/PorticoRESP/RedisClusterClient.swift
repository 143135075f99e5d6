import NIOCore
import NIOPosix

/// A client for Redis Cluster: one pipelined ``RedisConnection`` per master, commands routed by the slot of
/// their key, `MOVED` (the slot has a new owner: remember it and refresh the map) and `ASK` (the slot is
/// being migrated: send `ASKING` and the command to the target, once) followed.
public actor RedisClusterClient {
    /// A cluster node's address, as `CLUSTER SLOTS` and redirections name it.
    public struct NodeAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
        public let host: String
        public let port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String {
            self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
        }

        public static func < (lhs: NodeAddress, rhs: NodeAddress) -> Bool {
            (lhs.host, lhs.port) < (rhs.host, rhs.port)
        }
    }

    private let seeds: [RedisURL]
    private let group: any EventLoopGroup
    private var owners: [NodeAddress?] = Array(repeating: nil, count: RedisClusterSlot.count)
    private var connections: [NodeAddress: RedisConnection] = [:]
    /// `MOVED` and `ASK` replies followed so far.
    public private(set) var redirections = 0
    /// Told the slot map (the owner of each slot) whenever it changes.
    private var slotMapObserver: (@Sendable ([NodeAddress?]) -> Void)?
    /// When a connection failure last made the client reread the slot map (at most once a second).
    private var lastFailureRefresh: ContinuousClock.Instant?
    /// After ``close()``: no connection opens again (a batch in flight when it closed must not reopen one).
    private var closed = false

    private init(seeds: [RedisURL], group: any EventLoopGroup) {
        self.seeds = seeds
        self.group = group
    }

    /// Connects to the first seed that answers and reads the slot map.
    ///
    /// - Parameter seeds: any nodes of the cluster; credentials of the first apply to every node.
    public static func connect(
        seeds: [RedisURL],
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RedisClusterClient {
        precondition(!seeds.isEmpty, "a cluster client needs a seed node")
        let client = RedisClusterClient(seeds: seeds, group: group)
        do {
            try await client.refreshSlots()
        } catch {
            await client.close()
            throw error
        }
        return client
    }

    /// Every master that owns slots.
    public var masters: [NodeAddress] { Set(self.owners.compactMap { $0 }).sorted() }

    /// The master owning `slot`, by the last map read.
    public func owner(ofSlot slot: Int) -> NodeAddress? { self.owners[slot] }

    /// Whether every connection opened so far is still open.
    public var isActive: Bool { !self.connections.isEmpty && self.connections.values.allSatisfy(\.isActive) }

    /// Calls `observer` with the slot map now and whenever it changes.
    public func observeSlotMap(_ observer: @escaping @Sendable ([NodeAddress?]) -> Void) {
        self.slotMapObserver = observer
        observer(self.owners)
    }

    /// Reads `CLUSTER SLOTS` from any node that answers (open connections first, then every master of the last
    /// map, then the seeds) and replaces the slot map: one master down, or a seed gone, is no reason to fail.
    public func refreshSlots() async throws {
        let open = self.connections.filter { $0.value.isActive }.keys.sorted()
        let seeds = self.seeds.map { NodeAddress(host: $0.host, port: $0.port) }
        var tried: Set<NodeAddress> = []
        for address in open + self.masters + seeds where tried.insert(address).inserted {
            guard let connection = try? await self.connection(to: address),
                case .array(let ranges?)? = try? await connection.send(["CLUSTER", "SLOTS"])
            else { continue }
            var owners = [NodeAddress?](repeating: nil, count: RedisClusterSlot.count)
            for case .array(let range?) in ranges where range.count >= 3 {
                guard case .integer(let first) = range[0], case .integer(let last) = range[1],
                    case .array(let master?) = range[2], master.count >= 2,
                    case .bulkString(let hostBytes?) = master[0], case .integer(let port) = master[1],
                    first >= 0, last < RedisClusterSlot.count, first <= last
                else { continue }
                // An empty or "?" host means "the address you asked".
                let host = String(buffer: hostBytes)
                let owner = NodeAddress(host: host.isEmpty || host == "?" ? address.host : host, port: Int(port))
                for slot in Int(first)...Int(last) { owners[slot] = owner }
            }
            self.setOwners(owners)
            return
        }
        throw RedisConnection.ConnectionError(message: "no Redis Cluster node answered CLUSTER SLOTS")
    }

    /// Sends one command to the owner of `key`'s slot; a RESP error reply throws ``RedisConnection/ServerError``.
    public func send(_ arguments: [String], key: String) async throws -> RESPValue {
        let reply = try await self.send(arguments.map { ByteBuffer(string: $0) }, slot: RedisClusterSlot.of(key))
        if case .error(let message) = reply { throw RedisConnection.ServerError(message: message) }
        return reply
    }

    /// Sends one command to the owner of `slot`, following redirections; returns the final reply (errors too).
    public func send(_ arguments: [ByteBuffer], slot: Int) async throws -> RESPValue {
        var asking: NodeAddress?
        for _ in 0..<5 {
            let reply: RESPValue
            if let target = asking {
                let connection = try await self.connection(to: target)
                let ask = connection.enqueue([ByteBuffer(string: "ASKING")])
                reply = try await connection.enqueue(arguments).get()
                _ = try await ask.get()
            } else {
                guard let owner = try await self.ownerRefreshingIfUnknown(slot) else {
                    throw RedisConnection.ConnectionError(message: "no Redis Cluster node serves slot \(slot)")
                }
                reply = try await self.connection(to: owner).enqueue(arguments).get()
            }
            switch Redirection(reply) {
            case .moved(let movedSlot, let target)?:
                self.redirections += 1
                var owners = self.owners
                owners[movedSlot] = target
                self.setOwners(owners)
                asking = nil
                try? await self.refreshSlots()
            case .ask(_, let target)?:
                self.redirections += 1
                asking = target
            case nil:
                return reply
            }
        }
        throw RedisConnection.ConnectionError(message: "too many redirections for slot \(slot)")
    }

    /// Sends many commands pipelined, each to the owner of its slot; replies come back in the given order.
    /// Commands that were redirected are sent again one by one, in order, after the batch. A command whose
    /// master cannot be reached gets an error reply (`CONNECTIONDOWN …`) and the rest go on: one master down
    /// fails only its own commands.
    public func sendBatch(_ commands: [(arguments: [ByteBuffer], slot: Int)]) async throws -> [RESPValue] {
        var futures: [Result<EventLoopFuture<RESPValue>, any Error>] = []
        futures.reserveCapacity(commands.count)
        var byOwner: [NodeAddress: Result<RedisConnection, any Error>] = [:]
        var refreshed = false
        for command in commands {
            // A slot with no known owner rereads the map once per batch, not once per command.
            if self.owners[command.slot] == nil, !refreshed {
                refreshed = true
                try? await self.refreshSlots()
            }
            guard let owner = self.owners[command.slot] else {
                futures.append(
                    .failure(RedisConnection.ConnectionError(message: "no node serves slot \(command.slot)"))
                )
                continue
            }
            let connection: Result<RedisConnection, any Error>
            if let known = byOwner[owner] {
                connection = known
            } else {
                do {
                    connection = .success(try await self.connection(to: owner))
                } catch {
                    connection = .failure(error)
                }
                byOwner[owner] = connection
            }
            futures.append(connection.map { $0.enqueue(command.arguments) })
        }
        var replies: [RESPValue] = []
        replies.reserveCapacity(commands.count)
        var unreachable = false
        for future in futures {
            do {
                replies.append(try await future.get().get())
            } catch {
                unreachable = true
                replies.append(.error("CONNECTIONDOWN \(error)"))
            }
        }
        if unreachable { await self.refreshAfterFailure() }
        for index in replies.indices where Redirection(replies[index]) != nil {
            replies[index] = try await self.send(commands[index].arguments, slot: commands[index].slot)
        }
        return replies
    }

    /// A master could not be reached: it may have failed over. Rereads the slot map, at most once a second.
    private func refreshAfterFailure() async {
        let now = ContinuousClock.now
        if let last = self.lastFailureRefresh, now - last < .seconds(1) { return }
        self.lastFailureRefresh = now
        try? await self.refreshSlots()
    }

    private func setOwners(_ owners: [NodeAddress?]) {
        guard owners != self.owners, !self.closed else { return }
        self.owners = owners
        self.slotMapObserver?(owners)
    }

    /// Sends a command to every master, for commands that look at one node's own data (`SCAN`, `PUBSUB`).
    public func sendToEveryMaster(_ arguments: [String]) async throws -> [(NodeAddress, RESPValue)] {
        var replies: [(NodeAddress, RESPValue)] = []
        for master in self.masters {
            replies.append((master, try await self.connection(to: master).send(arguments)))
        }
        return replies
    }

    /// Every key matching `pattern` on every master.
    public func scanKeys(matching pattern: String) async throws -> [String] {
        var keys: [String] = []
        for master in self.masters {
            keys += try await self.connection(to: master).scanKeys(matching: pattern)
        }
        return keys
    }

    /// Writes one command to the owner of `slot` and returns its reply's future without waiting for it (a
    /// probe: the caller learns of it another way). No redirection is followed.
    public func enqueue(_ arguments: [ByteBuffer], slot: Int) async throws -> EventLoopFuture<RESPValue> {
        guard let owner = try await self.ownerRefreshingIfUnknown(slot) else {
            throw RedisConnection.ConnectionError(message: "no Redis Cluster node serves slot \(slot)")
        }
        return try await self.connection(to: owner).enqueue(arguments)
    }

    /// The open connection to `address`, opened if needed.
    public func connection(to address: NodeAddress) async throws -> RedisConnection {
        if let existing = self.connections[address], existing.isActive { return existing }
        guard !self.closed else { throw RedisConnection.ConnectionError(message: "cluster client closed") }
        let connection = try await RedisConnection.connect(to: self.url(of: address), group: self.group)
        if self.closed {
            await connection.close()
            throw RedisConnection.ConnectionError(message: "cluster client closed")
        }
        // Another caller may have connected while this one waited: keep one connection per node.
        if let raced = self.connections[address], raced.isActive {
            await connection.close()
            return raced
        }
        self.connections[address] = connection
        return connection
    }

    /// The URL of `address` with the seed's credentials (for this client's connections and for subscribers).
    public func url(of address: NodeAddress) -> RedisURL {
        var url = self.seeds[0]
        url.host = address.host
        url.port = address.port
        url.database = 0  // a cluster has only database 0
        return url
    }

    public func close() async {
        self.closed = true
        let connections = self.connections.values
        self.connections = [:]
        for connection in connections { await connection.close() }
    }

    private func ownerRefreshingIfUnknown(_ slot: Int) async throws -> NodeAddress? {
        if let owner = self.owners[slot] { return owner }
        try await self.refreshSlots()
        return self.owners[slot]
    }
}

/// A `MOVED` or `ASK` error reply.
enum Redirection: Equatable {
    case moved(slot: Int, to: RedisClusterClient.NodeAddress)
    case ask(slot: Int, to: RedisClusterClient.NodeAddress)

    init?(_ reply: RESPValue) {
        guard case .error(let message) = reply else { return nil }
        self.init(message: message)
    }

    /// Parses `MOVED 3999 127.0.0.1:6381` and `ASK 3999 127.0.0.1:6381`.
    init?(message: String) {
        let parts = message.split(separator: " ")
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let slot = Int(parts[1]),
            (0..<RedisClusterSlot.count).contains(slot), let colon = parts[2].lastIndex(of: ":"),
            let port = Int(parts[2][parts[2].index(after: colon)...])
        else { return nil }
        var host = String(parts[2][..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let target = RedisClusterClient.NodeAddress(host: host, port: port)
        self = parts[0] == "MOVED" ? .moved(slot: slot, to: target) : .ask(slot: slot, to: target)
    }
}
