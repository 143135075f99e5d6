import Logging
import PorticoConfig

/// Re-reads the configuration file and swaps it in: validate first, then open and close listeners as the
/// diff says, install the new snapshot, and drain (never cut) the backends it removed. Serialised: one reload
/// at a time.
public actor ConfigReloader {
    private let path: String?
    private let store: ConfigStore
    private let server: ProxyServer
    private let logger: Logger
    private let environment: @Sendable () -> [String: String]

    /// Why a reload was refused; the old configuration keeps serving.
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { self.message }
    }

    /// - Parameters:
    ///   - path: the configuration file; `nil` when portico runs without one (`portico proxy`).
    ///   - store: where the new snapshot goes.
    ///   - server: whose listeners follow the configuration.
    ///   - logger: for reload outcomes.
    public init(
        path: String?,
        store: ConfigStore,
        server: ProxyServer,
        logger: Logger,
        environment: @escaping @Sendable () -> [String: String] = { ProcessEnvironment.current }
    ) {
        self.path = path
        self.store = store
        self.server = server
        self.logger = logger
        self.environment = environment
    }

    /// Reloads from the file.
    ///
    /// - Returns: the new generation.
    public func reload() async throws(Failure) -> Int {
        guard let path = self.path else {
            throw Failure(message: "portico runs without a configuration file; nothing to reload")
        }
        let configuration: PorticoConfiguration
        do {
            configuration = try PorticoConfiguration.load(path: path, environment: self.environment())
        } catch {
            ProxyMetrics.reload(succeeded: false)
            self.logger.error("reload refused: configuration errors", metadata: ["portico.errors": "\(error)"])
            throw Failure(message: "\(error)")
        }
        return try await self.install(configuration)
    }

    /// Installs an already validated configuration (reload from the file, or discovery).
    public func install(_ configuration: PorticoConfiguration) async throws(Failure) -> Int {
        let old = self.store.snapshot
        let next = ProxySnapshot(configuration: configuration, generation: old.generation + 1, runtime: old.runtime)
        do {
            try await self.server.reconcileListeners(configuration.listeners)
        } catch {
            ProxyMetrics.reload(succeeded: false)
            self.logger.error("reload refused: cannot open listeners", metadata: ["portico.error": "\(error)"])
            throw Failure(message: "cannot open listeners: \(error)")
        }
        let kept = Set(next.pools.values.flatMap { $0.states.map(ObjectIdentifier.init) })
        for pool in next.pools.values { for state in pool.states { state.restoreIfRemoved() } }
        self.store.install(next)
        // Backends the new configuration dropped: no new work, in-flight requests finish, sockets get 1012.
        for pool in old.pools.values {
            for state in pool.states where !kept.contains(ObjectIdentifier(state)) {
                state.markRemoved()
                let drain = pool.configuration.drainTimeout
                state.closeTunnels(code: 1012, reason: "service restart", spread: drain * 0.8, cutAfter: drain)
                self.logger.info(
                    "backend removed: draining",
                    metadata: ["portico.pool": "\(pool.name)", "portico.backend": "\(state.id)"]
                )
            }
        }
        ProxyMetrics.reload(succeeded: true)
        self.logger.info("configuration reloaded", metadata: ["portico.generation": "\(next.generation)"])
        return next.generation
    }
}
