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
    /// The configuration as the file says, before discovered backends are added.
    private var base: PorticoConfiguration
    /// Backends found by discovery, by pool and source (`dns`, `redis`).
    private var discovered: [String: [String: [BackendConfiguration]]] = [:]

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
        self.base = store.snapshot.configuration
    }

    /// The configuration from the file, without discovered backends.
    public var baseConfiguration: PorticoConfiguration { self.base }

    /// Replaces the backends `source` found for `pool`; installs a new snapshot when they changed.
    /// Removed ones drain like backends a reload removed.
    public func discovered(_ backends: [BackendConfiguration], pool: String, source: String) async {
        guard self.discovered[pool]?[source] != backends else { return }
        self.discovered[pool, default: [:]][source] = backends
        self.logger.info(
            "discovery changed backends",
            metadata: [
                "portico.pool": "\(pool)", "portico.source": "\(source)",
                "portico.backends": "\(backends.map(\.id).joined(separator: ","))",
            ]
        )
        _ = try? await self.install(self.base)
    }

    /// `configuration` with every pool's discovered backends added (static ones win on a clashing id).
    private func merged(_ configuration: PorticoConfiguration) -> PorticoConfiguration {
        var merged = configuration
        for index in merged.pools.indices {
            guard let sources = self.discovered[merged.pools[index].name] else { continue }
            var ids = Set(merged.pools[index].backends.map(\.id))
            for source in sources.keys.sorted() {
                for backend in sources[source] ?? [] where ids.insert(backend.id).inserted {
                    merged.pools[index].backends.append(backend)
                }
            }
        }
        return merged
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
        self.base = configuration
        return try await self.install(configuration)
    }

    /// Installs an already validated configuration, plus what discovery found.
    public func install(_ base: PorticoConfiguration) async throws(Failure) -> Int {
        let configuration = self.merged(base)
        let tlsErrors = configuration.checkTLSMaterial()
        guard tlsErrors.isEmpty else {
            ProxyMetrics.reload(succeeded: false)
            let errors = ConfigurationErrors(tlsErrors)
            self.logger.error("reload refused: TLS material", metadata: ["portico.errors": "\(errors)"])
            throw Failure(message: "\(errors)")
        }
        do {
            try await self.server.reconcileListeners(configuration.listeners)
        } catch {
            ProxyMetrics.reload(succeeded: false)
            self.logger.error("reload refused: cannot open listeners", metadata: ["portico.error": "\(error)"])
            throw Failure(message: "cannot open listeners: \(error)")
        }
        // Read after the await: the actor may have installed another snapshot meanwhile.
        let old = self.store.snapshot
        let next: ProxySnapshot
        do {
            next = try ProxySnapshot(configuration: configuration, generation: old.generation + 1, runtime: old.runtime)
        } catch {
            ProxyMetrics.reload(succeeded: false)
            throw Failure(message: "\(error)")
        }
        let kept = Set(next.pools.values.flatMap { $0.states.map(ObjectIdentifier.init) })
        for pool in next.pools.values { for state in pool.states { state.restoreIfRemoved() } }
        self.store.install(next)
        // Backends dropped by an earlier reload that have drained since: forget them.
        next.runtime.forgetDeparted(keeping: kept)
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
