import Foundation
import NIOCore
import PorticoRESP

/// A private `redis-server` on a free loopback port, for tests. Stopped with SIGKILL (a child process may
/// inherit a blocked SIGTERM, see TOOLCHAIN.md), always waited for.
public final class RedisServer: Sendable {
    public let port: Int
    /// What it was started with beyond the port: a restart on the same port uses them again.
    public let extraArguments: [String]
    private let pid: Int32

    private init(port: Int, extraArguments: [String], pid: Int32) {
        self.port = port
        self.extraArguments = extraArguments
        self.pid = pid
    }

    /// `redis://127.0.0.1:PORT`.
    public var url: RedisURL { RedisURL("redis://127.0.0.1:\(self.port)")! }

    /// Starts redis-server and waits until it answers PING.
    public static func start(port fixedPort: Int? = nil, extraArguments: [String] = []) async throws -> RedisServer {
        let executable = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        guard let executable else { throw RedisServerError.notInstalled }
        for _ in 0..<3 {
            let port = try fixedPort ?? freeLoopbackPort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments =
                [
                    "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
                ] + extraArguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let server = RedisServer(port: port, extraArguments: extraArguments, pid: process.processIdentifier)
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline {
                if let connection = try? await RedisConnection.connect(to: server.url) {
                    let pong = try? await connection.send(["PING"])
                    await connection.close()
                    if pong == .simpleString("PONG") { return server }
                }
                if !process.isRunning { break }  // the port was taken after all: try another
                try await Task.sleep(for: .milliseconds(20))
            }
            server.stop()
        }
        throw RedisServerError.didNotStart
    }

    /// Pauses the server (SIGSTOP): it keeps its sockets but answers nothing, like a hung Redis.
    public func pause() { kill(self.pid, SIGSTOP) }

    /// Undoes ``pause()``.
    public func resume() { kill(self.pid, SIGCONT) }

    /// Starts a new server on the same port with the same arguments (after ``stop()``: a crashed node back).
    public func restarted() async throws -> RedisServer {
        try await RedisServer.start(port: self.port, extraArguments: self.extraArguments)
    }

    public func stop() {
        kill(self.pid, SIGKILL)
        var status: Int32 = 0
        waitpid(self.pid, &status, 0)
    }
}

public enum RedisServerError: Error {
    case notInstalled
    case didNotStart
}

/// A loopback port nothing listens on right now (bound and released).
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw RedisServerError.didNotStart }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A Redis Cluster of private `redis-server` masters on loopback (no replicas), created with
/// `redis-cli --cluster create`, for tests. Each node has its own directory for `nodes.conf`.
public final class RedisClusterServers: Sendable {
    public let nodes: [RedisServer]
    private let directory: URL

    private init(nodes: [RedisServer], directory: URL) {
        self.nodes = nodes
        self.directory = directory
    }

    /// The node URLs, any of which is a seed.
    public var urls: [RedisURL] { self.nodes.map(\.url) }

    /// Starts `masters` nodes, joins them and waits until every node reports `cluster_state:ok`.
    public static func start(masters: Int = 3, extraArguments: [String] = []) async throws -> RedisClusterServers {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("portico-cluster-\(UUID())")
        var nodes: [RedisServer] = []
        do {
            for index in 0..<masters {
                let nodeDirectory = directory.appendingPathComponent("\(index)")
                try FileManager.default.createDirectory(at: nodeDirectory, withIntermediateDirectories: true)
                // The bus port defaults to port + 10000, which may be taken or out of range: pick one.
                nodes.append(
                    try await RedisServer.start(
                        extraArguments: [
                            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                            "--cluster-port", "\(try freeLoopbackPort())", "--dir", nodeDirectory.path,
                        ] + extraArguments
                    )
                )
            }
            let cluster = RedisClusterServers(nodes: nodes, directory: directory)
            try await cluster.create()
            return cluster
        } catch {
            for node in nodes { node.stop() }
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    private func create() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        process.arguments =
            ["--cluster", "create"] + self.nodes.map { "127.0.0.1:\($0.port)" } + [
                "--cluster-replicas", "0", "--cluster-yes",
            ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        while process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        guard process.terminationStatus == 0 else { throw RedisServerError.didNotStart }
        try await self.waitUntilConsistent()
    }

    /// Waits until every node says `cluster_state:ok` and agrees on the owner of every slot.
    public func waitUntilConsistent(timeout: Duration = .seconds(15)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var maps: Set<String> = []
            var ok = true
            for node in self.nodes {
                guard let connection = try? await RedisConnection.connect(to: node.url) else {
                    ok = false
                    break
                }
                defer { Task { await connection.close() } }
                guard case .bulkString(let info?)? = try? await connection.send(["CLUSTER", "INFO"]),
                    String(buffer: info).contains("cluster_state:ok"),
                    let slots = try? await connection.send(["CLUSTER", "SLOTS"])
                else {
                    ok = false
                    break
                }
                maps.insert(Self.owners(slots))
            }
            if ok && maps.count == 1 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw RedisServerError.didNotStart
    }

    /// The node (port) serving `slot`.
    public func owner(ofSlot slot: Int) async throws -> RedisServer {
        let connection = try await RedisConnection.connect(to: self.nodes[0].url)
        defer { Task { await connection.close() } }
        guard case .array(let ranges?) = try await connection.send(["CLUSTER", "SLOTS"]) else {
            throw RedisServerError.didNotStart
        }
        for case .array(let range?) in ranges {
            guard case .integer(let first) = range[0], case .integer(let last) = range[1],
                case .array(let master?) = range[2], case .integer(let port) = master[1],
                (Int(first)...Int(last)).contains(slot), let node = self.nodes.first(where: { $0.port == Int(port) })
            else { continue }
            return node
        }
        throw RedisServerError.didNotStart
    }

    /// Moves `slot` (it must hold no keys) to `target` the way `redis-cli --cluster reshard` does: IMPORTING
    /// on the target, MIGRATING on the source, then `SETSLOT NODE` everywhere.
    public func moveSlot(_ slot: Int, to target: RedisServer) async throws {
        let source = try await self.owner(ofSlot: slot)
        guard source.port != target.port else { return }
        func id(_ node: RedisServer) async throws -> String {
            let connection = try await RedisConnection.connect(to: node.url)
            defer { Task { await connection.close() } }
            guard case .bulkString(let id?) = try await connection.send(["CLUSTER", "MYID"]) else {
                throw RedisServerError.didNotStart
            }
            return String(buffer: id)
        }
        let sourceID = try await id(source)
        let targetID = try await id(target)
        let onTarget = try await RedisConnection.connect(to: target.url)
        let onSource = try await RedisConnection.connect(to: source.url)
        _ = try await onTarget.send(["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID])
        _ = try await onSource.send(["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID])
        _ = try await onTarget.send(["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
        _ = try await onSource.send(["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
        for node in self.nodes where node.port != source.port && node.port != target.port {
            let connection = try await RedisConnection.connect(to: node.url)
            _ = try await connection.send(["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
            await connection.close()
        }
        await onTarget.close()
        await onSource.close()
        try await self.waitUntilConsistent()
    }

    public func stop() {
        for node in self.nodes { node.stop() }
        try? FileManager.default.removeItem(at: self.directory)
    }

    private static func owners(_ slots: RESPValue) -> String {
        guard case .array(let ranges?) = slots else { return "" }
        var parts: [String] = []
        for case .array(let range?) in ranges {
            if case .integer(let first) = range[0], case .array(let master?) = range[2],
                case .integer(let port) = master[1]
            {
                parts.append("\(first)@\(port)")
            }
        }
        return parts.sorted().joined(separator: ",")
    }
}
