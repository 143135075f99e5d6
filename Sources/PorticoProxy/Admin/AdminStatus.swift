import NIOCore
import PorticoBalancing
import PorticoConfig

#if canImport(Glibc)
import Glibc
#endif

/// What `GET /status`, the HTML page and `GET /config` show, built from the current snapshot.
enum AdminStatus {
    static func status(
        snapshot: ProxySnapshot,
        server: ProxyServer,
        version: String,
        started: ContinuousClock.Instant
    )
        -> JSONValue
    {
        let uptime = ContinuousClock.now - started
        let pools: [(String, JSONValue)] = snapshot.configuration.pools.compactMap { configuration in
            guard let pool = snapshot.pools[configuration.name] else { return nil }
            let backends: [JSONValue] = pool.backends.map { backend in
                let state = pool.states[backend.index]
                return .object([
                    ("id", .string(backend.id)),
                    ("address", .string(state.address.description)),
                    ("weight", .int(backend.weight)),
                    ("state", .string(state.status.rawValue)),
                    ("active_connections", .int(state.activeConnections)),
                    ("websocket_connections", .int(state.tunnels.live)),
                    ("requests_total", .int(state.requestsTotal)),
                    ("failures_total", .int(state.failuresTotal)),
                    ("websocket_messages_in", .int(state.tunnels.clientMessages)),
                    ("websocket_messages_out", .int(state.tunnels.backendMessages)),
                ])
            }
            var members: [(String, JSONValue)] = [
                ("policy", .string(configuration.policy.rawValue)),
                ("paused", .bool(pool.state.isPaused)),
                ("held", .int(pool.state.held)),
            ]
            if let fingerprint = pool.selector.fingerprint {
                members.append(("ring_fingerprint", .string(fingerprint)))
            }
            members.append(("backends", .array(backends)))
            return (configuration.name, .object(members))
        }
        return .object([
            ("version", .string(version)),
            ("generation", .int(snapshot.generation)),
            ("uptime_s", .int(Int(uptime.components.seconds))),
            ("load_average", .array(loadAverage().map { .double($0) })),
            ("connections", .int(server.activeConnections)),
            ("listeners", .array(snapshot.configuration.listeners.map { .string($0.address.description) })),
            ("pools", .object(pools)),
        ])
    }

    /// The effective configuration: every value after defaults and `${ENV}` expansion (the admin token hidden).
    static func configuration(_ configuration: PorticoConfiguration) -> JSONValue {
        func duration(_ value: Duration) -> JSONValue { .string("\(value.milliseconds)ms") }
        let limits = configuration.limits
        return .object([
            ("workers", configuration.workers.map { .int($0) } ?? .null),
            (
                "listeners",
                .array(configuration.listeners.map { .object([("address", .string($0.address.description))]) })
            ),
            (
                "admin",
                configuration.admin.map {
                    .object([
                        ("address", .string($0.address.description)), ("token", .bool($0.token != nil)),
                        ("allowed_hosts", .array($0.allowedHosts.map { .string($0) })),
                        ("max_connections", .int($0.maxConnections)),
                        ("header_timeout", duration($0.headerTimeout)), ("idle_timeout", duration($0.idleTimeout)),
                    ])
                } ?? .null
            ),
            (
                "limits",
                .object([
                    ("max_connections", .int(limits.maxConnections)),
                    ("max_connections_per_ip", limits.maxConnectionsPerIP.map { .int($0) } ?? .null),
                    ("header_timeout", duration(limits.headerTimeout)),
                    ("idle_timeout", duration(limits.idleTimeout)),
                    ("max_header_bytes", .int(limits.maxHeaderBytes)),
                    ("max_uri_bytes", .int(limits.maxURIBytes)),
                    ("shutdown_timeout", duration(limits.shutdownTimeout)),
                ])
            ),
            ("routes", .array(configuration.routes.map(Self.route))),
            ("pools", .object(configuration.pools.map { ($0.name, Self.pool($0)) })),
        ])
    }

    private static func route(_ route: RouteConfiguration) -> JSONValue {
        var match: [(String, JSONValue)] = []
        if let host = route.host { match.append(("host", .string(host))) }
        switch route.path {
        case .exact(let path): match.append(("path", .string(path)))
        case .prefix(let prefix): match.append(("path_prefix", .string(prefix)))
        case .regex(let regex): match.append(("path_regex", .string(regex)))
        case nil: break
        }
        if !route.headers.isEmpty {
            match.append(
                (
                    "headers",
                    .object(
                        route.headers.sorted { $0.key < $1.key }.map { name, rule in
                            switch rule {
                            case .present: return (name, .string("*"))
                            case .equals(let value): return (name, .string(value))
                            }
                        }
                    )
                )
            )
        }
        if !route.methods.isEmpty { match.append(("methods", .array(route.methods.map { .string($0) }))) }
        var members: [(String, JSONValue)] = [("match", .object(match)), ("pool", .string(route.pool))]
        if let strip = route.stripPrefix { members.append(("strip_prefix", .string(strip))) }
        members.append(("preserve_host", .bool(route.preserveHost)))
        if let websocket = route.websocket {
            members.append(
                (
                    "websocket",
                    .object([
                        ("origins", .array(websocket.origins.map { .string($0) })),
                        ("idle_timeout", .string("\(websocket.idleTimeout.milliseconds)ms")),
                        ("max_message_bytes", .int(websocket.maxMessageBytes)),
                    ])
                )
            )
        }
        return .object(members)
    }

    private static func pool(_ pool: PoolConfiguration) -> JSONValue {
        func duration(_ value: Duration) -> JSONValue { .string("\(value.milliseconds)ms") }
        var members: [(String, JSONValue)] = [("policy", .string(pool.policy.rawValue))]
        if !pool.hashKey.isEmpty {
            let text = pool.hashKey.map { source -> String in
                switch source {
                case .ip: return "ip"
                case .header(let name): return "header:\(name)"
                case .cookie(let name): return "cookie:\(name)"
                case .query(let name): return "query:\(name)"
                }
            }
            members.append(("hash_key", .string(text.joined(separator: ","))))
        }
        if let bound = pool.boundedLoad { members.append(("bounded_load", .double(bound))) }
        if let cookie = pool.stickyCookie { members.append(("sticky_cookie", .string(cookie))) }
        members.append(
            (
                "backends",
                .array(
                    pool.backends.map {
                        .object([
                            ("address", .string($0.address.description)), ("id", .string($0.id)),
                            ("weight", .int($0.weight)),
                            ("max_connections", $0.maxConnections.map { .int($0) } ?? .null),
                        ])
                    }
                )
            )
        )
        if let health = pool.health {
            members.append(
                (
                    "health",
                    .object([
                        ("path", .string(health.path)), ("interval", duration(health.interval)),
                        ("timeout", duration(health.timeout)), ("rise", .int(health.rise)), ("fall", .int(health.fall)),
                        (
                            "expect_status",
                            .string("\(health.expectStatus.lowerBound)-\(health.expectStatus.upperBound)")
                        ),
                    ])
                )
            )
        }
        if let passive = pool.passive {
            members.append(
                (
                    "passive",
                    .object([("failures", .int(passive.failures)), ("eject", duration(passive.eject))])
                )
            )
        }
        if let hold = pool.hold {
            members.append(
                ("hold", .object([("timeout", duration(hold.timeout)), ("max_queued", .int(hold.maxQueued))]))
            )
        }
        members += [
            ("retries", .int(pool.retries)), ("connect_timeout", duration(pool.connectTimeout)),
            ("response_timeout", duration(pool.responseTimeout)), ("drain_timeout", duration(pool.drainTimeout)),
        ]
        return .object(members)
    }

    static func loadAverage() -> [Double] {
        var values = [Double](repeating: 0, count: 3)
        let count = getloadavg(&values, 3)
        return count == 3 ? values : [0, 0, 0]
    }
}
