import Logging
import NIOConcurrencyHelpers
import NIOCore
import PorticoBalancing
import PorticoConfig
import ServiceLifecycle

/// Runs the active health checks of every pool that has a `health` section, and releases held requests
/// as soon as their pool can take work again. A `Service`: it stops on graceful shutdown.
public struct HealthProber: Service {
    private let store: ConfigStore
    private let group: any EventLoopGroup
    private let logger: Logger
    /// How often due checks and held requests are looked at.
    private let tick: Duration

    public init(store: ConfigStore, group: any EventLoopGroup, logger: Logger, tick: Duration = .milliseconds(100)) {
        self.store = store
        self.group = group
        self.logger = logger
        self.tick = tick
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                var due: [ObjectIdentifier: ContinuousClock.Instant] = [:]
                var inFlight: Set<ObjectIdentifier> = []
                let done = DoneSet()
                while !Task.isCancelled {
                    let snapshot = self.store.snapshot
                    let now = ContinuousClock.now
                    for key in done.drain() { inFlight.remove(key) }
                    for pool in snapshot.pools.values {
                        if pool.state.held > 0 && !pool.state.isPaused && pool.hasUsableBackend {
                            pool.state.releaseAll()
                        }
                        guard let health = pool.configuration.health else { continue }
                        for state in pool.states {
                            let key = ObjectIdentifier(state)
                            guard !inFlight.contains(key), due[key, default: now] <= now else { continue }
                            due[key] = now + health.interval
                            inFlight.insert(key)
                            let check = HTTPHealthCheck(configuration: health, group: self.group)
                            group.addTask {
                                let result: (any Error)?
                                do {
                                    try await check.check(state.address)
                                    result = nil
                                } catch {
                                    result = error
                                }
                                self.record(result, for: state, in: pool)
                                done.insert(key)
                            }
                        }
                    }
                    // States of backends that left: their due times go too.
                    if due.count > snapshot.pools.values.reduce(0, { $0 + $1.states.count }) {
                        let current = Set(snapshot.pools.values.flatMap { $0.states.map(ObjectIdentifier.init) })
                        due = due.filter { current.contains($0.key) }
                    }
                    try? await Task.sleep(for: self.tick)
                }
            }
        }
    }

    private func record(_ error: (any Error)?, for state: BackendState, in pool: BackendPool) {
        let transition = state.health.withLockedValue { $0.record(success: error == nil) }
        switch transition {
        case .becameUnhealthy:
            state.setHealthy(false)
            ProxyMetrics.healthTransition(pool: pool.name, backend: state.id, to: "down")
            self.logger.warning(
                "backend down",
                metadata: [
                    "portico.pool": "\(pool.name)", "portico.backend": "\(state.id)",
                    "portico.reason": "\(error.map { "\($0)" } ?? "?")",
                ]
            )
        case .becameHealthy:
            state.setHealthy(true)
            ProxyMetrics.healthTransition(pool: pool.name, backend: state.id, to: "up")
            self.logger.notice(
                "backend up",
                metadata: ["portico.pool": "\(pool.name)", "portico.backend": "\(state.id)"]
            )
            if !pool.state.isPaused { pool.state.releaseAll() }
        case nil:
            break
        }
    }
}

/// Checks that finished, handed from the check tasks back to the prober loop.
private final class DoneSet: Sendable {
    private let keys = NIOLockedValueBox<[ObjectIdentifier]>([])

    func insert(_ key: ObjectIdentifier) {
        self.keys.withLockedValue { $0.append(key) }
    }

    func drain() -> [ObjectIdentifier] {
        self.keys.withLockedValue { keys in
            defer { keys = [] }
            return keys
        }
    }
}
