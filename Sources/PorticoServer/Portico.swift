import ArgumentParser
import Logging
import Metrics
import NIOCore
import NIOPosix
import PorticoConfig
import PorticoProxy
import Prometheus
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The `portico` command line: run, check, proxy, version.
@main
struct Portico: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portico",
        abstract: "A WebSocket-aware HTTP/1.1 reverse proxy and load balancer.",
        version: PorticoVersion.current,
        subcommands: [Run.self, Check.self, Proxy.self, Version.self]
    )
}

enum PorticoVersion {
    static let current = "0.1.0"
}

struct LoggingOptions: ParsableArguments {
    @Option(help: "Log line format: text or json.")
    var logFormat: PorticoLogHandler.Format = .text

    @Option(help: "Lowest log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func bootstrap() {
        let format = self.logFormat
        let level = self.logLevel
        LoggingSystem.bootstrap { label in PorticoLogHandler(label: label, format: format, level: level) }
    }
}

extension PorticoLogHandler.Format: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve with a configuration file. SIGTERM/SIGINT stop accepting and exit."
    )

    @Option(name: .shortAndLong, help: "The configuration file.")
    var config: String = "portico.yml"

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        self.logging.bootstrap()
        let configuration: PorticoConfiguration
        do {
            configuration = try PorticoConfiguration.load(path: self.config)
        } catch {
            printError("\(self.config): configuration errors:\n\(error)")
            throw ExitCode(1)
        }
        try await serve(configuration, path: self.config)
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a configuration file: prints \"configuration OK\" (exit 0) or every error (exit 1)."
    )

    @Option(name: .shortAndLong, help: "The configuration file.")
    var config: String = "portico.yml"

    func run() throws {
        do throws(ConfigurationErrors) {
            let configuration = try PorticoConfiguration.load(path: self.config)
            let tlsErrors = configuration.checkTLSMaterial()
            guard tlsErrors.isEmpty else { throw ConfigurationErrors(tlsErrors) }
            print("configuration OK")
        } catch {
            for problem in error.errors {
                // Problems inside the file have a line; problems with files it names do not.
                printError(problem.line == nil ? "\(self.config): \(problem)" : "\(self.config):\(problem)")
            }
            throw ExitCode(1)
        }
    }
}

struct Proxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Zero-configuration proxy: one listener, one pool, no file needed."
    )

    @Option(help: "Address to listen on (host:port).")
    var listen: String = "127.0.0.1:8080"

    @Option(name: .customLong("to"), help: "A backend address (host:port); repeat for more.")
    var backends: [String] = []

    @Option(help: "Balancing policy: round_robin, least_conn, random_two, consistent_hash.")
    var policy: String = "round_robin"

    @Option(help: "Hash key for consistent_hash: ip, header:NAME, cookie:NAME, query:NAME, or a comma list.")
    var hashKey: String?

    @Option(help: "Event loop threads (default: one per core).")
    var workers: Int?

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        self.logging.bootstrap()
        var errors: [String] = []
        let listen = HostPort(parsing: self.listen)
        if listen == nil { errors.append("--listen: expected host:port, got \"\(self.listen)\"") }
        if self.backends.isEmpty { errors.append("--to: name at least one backend") }
        var pool = PoolConfiguration(name: "default")
        for text in self.backends {
            if let address = HostPort(parsing: text), address.port != 0 {
                pool.backends.append(BackendConfiguration(address: address))
            } else {
                errors.append("--to: expected host:port, got \"\(text)\"")
            }
        }
        if let policy = PoolConfiguration.Policy(rawValue: self.policy) {
            pool.policy = policy
        } else {
            errors.append("--policy: unknown policy \"\(self.policy)\"")
        }
        if let hashKey = self.hashKey {
            switch PoolConfiguration.HashKeySource.parseList(hashKey) {
            case .success(let sources): pool.hashKey = sources
            case .failure(let error): errors.append("--hash-key: \(error.message)")
            }
        }
        if let workers = self.workers, !(1...256).contains(workers) { errors.append("--workers: expected 1…256") }
        var configuration = PorticoConfiguration(
            listeners: listen.map { [ListenerConfiguration(address: $0)] } ?? [],
            routes: [RouteConfiguration(path: .prefix("/"), pool: "default")],
            pools: [pool],
            workers: self.workers
        )
        configuration.workers = self.workers
        errors += configuration.validate().map { "\($0)" }
        guard errors.isEmpty else {
            for error in errors { printError(error) }
            throw ExitCode(1)
        }
        try await serve(configuration)
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")

    func run() {
        print("portico \(PorticoVersion.current)")
    }
}

/// Runs the proxy until SIGTERM or SIGINT; SIGHUP reloads `path`.
func serve(_ configuration: PorticoConfiguration, path: String? = nil) async throws {
    let logger = Logger(label: "portico")
    MetricsSystem.bootstrap(PrometheusMetricsFactory())
    let threads = configuration.workers ?? System.coreCount
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    let runtime: PorticoRuntime
    do {
        runtime = try PorticoRuntime(
            configuration: configuration,
            path: path,
            group: group,
            logger: logger,
            accessLogger: Logger(label: "portico.access"),
            version: PorticoVersion.current
        )
    } catch {
        printError("configuration errors:\n\(error)")
        try? await group.shutdownGracefully()
        throw ExitCode(1)
    }
    let services = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: runtime.services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
    )
    logger.info(
        "starting",
        metadata: ["portico.workers": "\(threads)", "portico.version": "\(PorticoVersion.current)"]
    )
    do {
        try await services.run()
    } catch {
        logger.error("stopped with an error", metadata: ["portico.error": "\(error)"])
        try? await group.shutdownGracefully()
        throw ExitCode(1)
    }
    try await group.shutdownGracefully()
}

func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
