import Logging
import NIOCore
import NIOPosix
import PorticoConfig
import PorticoProxy
import PorticoTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A real ProxyServer on a free loopback port, in front of real backends; stopped by `stop()`.
struct ProxyHarness {
    let server: ProxyServer
    let store: ConfigStore
    let group: MultiThreadedEventLoopGroup
    let port: Int

    /// Starts portico with `yaml`, whose `LISTEN` placeholder becomes a free loopback listener.
    static func start(_ yaml: String, environment: [String: String] = [:]) async throws -> ProxyHarness {
        let text = yaml.replacingPlaceholder("LISTEN", with: "127.0.0.1:0")
        let configuration = try PorticoConfiguration.load(yaml: text, environment: environment)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var logger = Logger(label: "portico.test")
        logger.logLevel = .critical
        let store = ConfigStore(try ProxySnapshot(configuration: configuration))
        let server = ProxyServer(store: store, group: group, logger: logger)
        let addresses = try await server.start()
        return ProxyHarness(server: server, store: store, group: group, port: addresses.first?.port ?? 0)
    }

    func stop() async {
        await self.server.stop()
        try? await self.group.shutdownGracefully()
    }
}

/// Stops every backend, then the harness.
func withBackends<T>(
    _ names: [String],
    delays: [TimeAmount]? = nil,
    _ body: ([TestBackend]) async throws -> T
) async throws -> T {
    var backends: [TestBackend] = []
    for (index, name) in names.enumerated() {
        backends.append(try await TestBackend.start(name: name, responseDelay: delays?[index] ?? .zero))
    }
    do {
        let result = try await body(backends)
        for backend in backends { await backend.stop() }
        return result
    } catch {
        for backend in backends { await backend.stop() }
        throw error
    }
}

/// Runs `body` against a started harness and always stops it.
func withProxy<T>(_ yaml: String, _ body: (ProxyHarness) async throws -> T) async throws -> T {
    let harness = try await ProxyHarness.start(yaml)
    do {
        let result = try await body(harness)
        await harness.stop()
        return result
    } catch {
        await harness.stop()
        throw error
    }
}

/// Runs `body` against a proxy whose one pool `p` is a ``CannedBackend`` answering `reply`, and stops both.
///
/// - Parameters:
///   - keepOpen: the backend keeps its connections open after replying.
///   - poolOptions: more keys of pool `p` in YAML flow style, such as `response_timeout: 400ms`.
func withProxy<T>(
    toCanned reply: String,
    keepOpen: Bool = false,
    poolOptions: String = "",
    _ body: (ProxyHarness) async throws -> T
) async throws -> T {
    let backend = try await CannedBackend.start(reply: reply, keepOpen: keepOpen)
    let port = backend.localAddress?.port ?? 0
    let options = poolOptions.isEmpty ? "" : ", \(poolOptions)"
    let yaml = """
        listeners: [{ address: "LISTEN" }]
        routes: [{ pool: p }]
        pools: { p: { backends: [{ address: "127.0.0.1:\(port)" }]\(options) } }
        """
    do {
        let result = try await withProxy(yaml, body)
        try await backend.close()
        return result
    } catch {
        try? await backend.close()
        throw error
    }
}

/// Resident memory of this process, in bytes.
func residentBytes() -> Int {
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var size = 0
    var resident = 0
    _ = withUnsafeMutablePointer(to: &size) { sizePointer in
        withUnsafeMutablePointer(to: &resident) { residentPointer in
            withVaList([sizePointer, residentPointer]) { vfscanf(file, "%ld %ld", $0) }
        }
    }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
}

extension String {
    func replacingPlaceholder(_ name: String, with value: String) -> String {
        self.split(separator: name, omittingEmptySubsequences: false).joined(separator: value)
    }

    /// Lines of a test backend's answer that start with `prefix`, prefix removed.
    func lines(_ prefix: String) -> [String] {
        self.split(separator: "\n").filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }
}

/// A backend that answers every read with the same raw bytes and closes: for responses NIO's encoder would
/// never produce. Stop it with `close()`.
final class CannedBackend: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let reply: String
    let keepOpen: Bool

    init(reply: String, keepOpen: Bool) {
        self.reply = reply
        self.keepOpen = keepOpen
    }

    /// - Parameter keepOpen: keep the connection open after replying (a backend that pretends to keep alive).
    static func start(reply: String, keepOpen: Bool = false) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(CannedBackend(reply: reply, keepOpen: keepOpen))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let channel = context.channel
        let keepOpen = self.keepOpen
        context.writeAndFlush(NIOAny(ByteBuffer(string: self.reply))).whenComplete { _ in
            if !keepOpen { channel.close(promise: nil) }
        }
    }
}
