import Foundation
import NIOCore
import PorticoRESP

/// A private `redis-server` on a free loopback port, for tests. Stopped with SIGKILL (a child process may
/// inherit a blocked SIGTERM, see TOOLCHAIN.md), always waited for.
public final class RedisServer: Sendable {
    public let port: Int
    private let pid: Int32

    private init(port: Int, pid: Int32) {
        self.port = port
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
            let server = RedisServer(port: port, pid: process.processIdentifier)
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
