import Yams

extension ConfigurationReader {
    mutating func configuration(_ root: Node) -> PorticoConfiguration? {
        guard
            let top = self.mapping(
                root,
                at: "",
                allowed: ["listeners", "admin", "limits", "routes", "pools", "workers"]
            )
        else { return nil }

        var listeners: [ListenerConfiguration] = []
        if let node = top["listeners"], let items = self.sequence(node, at: "listeners") {
            for (index, item) in items.enumerated() {
                if let listener = self.listener(item, at: "listeners[\(index)]") { listeners.append(listener) }
            }
        }
        let admin = top["admin"].flatMap { self.admin($0, at: "admin") }
        let limits = top["limits"].flatMap { self.limits($0, at: "limits") } ?? LimitsConfiguration()
        var pools: [PoolConfiguration] = []
        if let node = top["pools"], let mapping = self.mapping(node, at: "pools", allowed: poolNames(node)) {
            for name in poolNames(node) {
                if let value = mapping[name], let pool = self.pool(value, name: name, at: join("pools", name)) {
                    pools.append(pool)
                }
            }
        }
        var routes: [RouteConfiguration] = []
        if let node = top["routes"], let items = self.sequence(node, at: "routes") {
            for (index, item) in items.enumerated() {
                if let route = self.route(item, at: "routes[\(index)]") { routes.append(route) }
            }
        }
        let workers = top["workers"].flatMap { self.int($0, at: "workers", in: 1...256) }
        return PorticoConfiguration(
            listeners: listeners,
            admin: admin,
            limits: limits,
            routes: routes,
            pools: pools,
            workers: workers
        )
    }

    private func poolNames(_ node: Node) -> [String] {
        guard case .mapping(let mapping) = node else { return [] }
        return mapping.compactMap { $0.key.string }
    }

    mutating func listener(_ node: Node, at path: String) -> ListenerConfiguration? {
        guard let map = self.mapping(node, at: path, allowed: ["address", "tls", "redirect_https"]) else { return nil }
        guard
            let address = self.required(map, "address", at: path, node: node).flatMap({
                self.hostPort($0, at: join(path, "address"))
            })
        else { return nil }
        var listener = ListenerConfiguration(address: address)
        if let n = map["redirect_https"], let v = self.bool(n, at: join(path, "redirect_https")) {
            listener.redirectHTTPS = v
        }
        if let n = map["tls"] {
            let tlsPath = join(path, "tls")
            if let m = self.mapping(n, at: tlsPath, allowed: ["certificates"]),
                let list = self.required(m, "certificates", at: tlsPath, node: n),
                let items = self.sequence(list, at: join(tlsPath, "certificates"))
            {
                var certificates: [ListenerTLSConfiguration.Certificate] = []
                for (index, item) in items.enumerated() {
                    let itemPath = "\(join(tlsPath, "certificates"))[\(index)]"
                    guard let pair = self.mapping(item, at: itemPath, allowed: ["cert", "key"]),
                        let cert = self.required(pair, "cert", at: itemPath, node: item).flatMap({
                            self.string($0, at: join(itemPath, "cert"))
                        }),
                        let key = self.required(pair, "key", at: itemPath, node: item).flatMap({
                            self.string($0, at: join(itemPath, "key"))
                        })
                    else { continue }
                    certificates.append(.init(cert: cert, key: key))
                }
                if certificates.isEmpty {
                    self.fail(join(tlsPath, "certificates"), list, "name at least one certificate")
                }
                listener.tls = ListenerTLSConfiguration(certificates: certificates)
            }
        }
        return listener
    }

    mutating func admin(_ node: Node, at path: String) -> AdminConfiguration? {
        let keys = ["address", "token", "allowed_hosts", "max_connections", "header_timeout", "idle_timeout"]
        guard let map = self.mapping(node, at: path, allowed: keys) else { return nil }
        guard
            let address = self.required(map, "address", at: path, node: node).flatMap({
                self.hostPort($0, at: join(path, "address"))
            })
        else { return nil }
        let token = map["token"].flatMap { self.string($0, at: join(path, "token")) }
        var admin = AdminConfiguration(address: address, token: token?.isEmpty == true ? nil : token)
        if let n = map["allowed_hosts"], let items = self.sequence(n, at: join(path, "allowed_hosts")) {
            for (index, item) in items.enumerated() {
                let itemPath = "\(join(path, "allowed_hosts"))[\(index)]"
                guard let name = self.string(item, at: itemPath) else { continue }
                guard AdminConfiguration.isHostName(name) else {
                    self.fail(
                        itemPath,
                        item,
                        "expected a host name such as portico.internal (no port or scheme), got \"\(name)\""
                    )
                    continue
                }
                // Stored as compared: Host names are case-insensitive and "name." is "name".
                let lowered = name.lowercased()
                let normalized = lowered.hasSuffix(".") ? String(lowered.dropLast()) : lowered
                if !admin.allowedHosts.contains(normalized) { admin.allowedHosts.append(normalized) }
            }
        }
        if let n = map["max_connections"], let v = self.int(n, at: join(path, "max_connections"), in: 1...100_000) {
            admin.maxConnections = v
        }
        if let n = map["header_timeout"], let v = self.positiveDuration(n, at: join(path, "header_timeout")) {
            admin.headerTimeout = v
        }
        if let n = map["idle_timeout"], let v = self.positiveDuration(n, at: join(path, "idle_timeout")) {
            admin.idleTimeout = v
        }
        return admin
    }

    mutating func limits(_ node: Node, at path: String) -> LimitsConfiguration? {
        let keys = [
            "max_connections", "max_connections_per_ip", "header_timeout", "idle_timeout", "max_header_bytes",
            "max_uri_bytes", "shutdown_timeout", "body_timeout", "send_timeout", "ipv6_prefix",
        ]
        guard let map = self.mapping(node, at: path, allowed: keys) else { return nil }
        var limits = LimitsConfiguration()
        if let n = map["max_connections"], let v = self.int(n, at: join(path, "max_connections"), in: 1...10_000_000) {
            limits.maxConnections = v
        }
        if let n = map["max_connections_per_ip"],
            let v = self.int(n, at: join(path, "max_connections_per_ip"), in: 1...10_000_000)
        {
            limits.maxConnectionsPerIP = v
        }
        if let n = map["shutdown_timeout"], let v = self.duration(n, at: join(path, "shutdown_timeout")) {
            limits.shutdownTimeout = v
        }
        if let n = map["header_timeout"], let v = self.positiveDuration(n, at: join(path, "header_timeout")) {
            limits.headerTimeout = v
        }
        if let n = map["idle_timeout"], let v = self.positiveDuration(n, at: join(path, "idle_timeout")) {
            limits.idleTimeout = v
        }
        if let n = map["body_timeout"], let v = self.positiveDuration(n, at: join(path, "body_timeout")) {
            limits.bodyTimeout = v
        }
        if let n = map["send_timeout"], let v = self.positiveDuration(n, at: join(path, "send_timeout")) {
            limits.sendTimeout = v
        }
        if let n = map["ipv6_prefix"], let v = self.int(n, at: join(path, "ipv6_prefix"), in: 1...128) {
            limits.ipv6Prefix = v
        }
        if let n = map["max_header_bytes"],
            let v = self.int(n, at: join(path, "max_header_bytes"), in: 1024...1_048_576)
        {
            limits.maxHeaderBytes = v
        }
        if let n = map["max_uri_bytes"], let v = self.int(n, at: join(path, "max_uri_bytes"), in: 256...1_048_576) {
            limits.maxURIBytes = v
        }
        return limits
    }

    mutating func route(_ node: Node, at path: String) -> RouteConfiguration? {
        let keys = ["match", "pool", "strip_prefix", "preserve_host", "websocket", "hsts"]
        guard let map = self.mapping(node, at: path, allowed: keys) else { return nil }
        guard
            let pool = self.required(map, "pool", at: path, node: node).flatMap({
                self.string($0, at: join(path, "pool"))
            })
        else { return nil }
        var route = RouteConfiguration(pool: pool)
        if let matchNode = map["match"] {
            let matchPath = join(path, "match")
            let matchKeys = ["host", "path", "path_prefix", "path_regex", "headers", "methods"]
            if let match = self.mapping(matchNode, at: matchPath, allowed: matchKeys) {
                route.host = match["host"].flatMap { self.string($0, at: join(matchPath, "host")) }?.lowercased()
                let pathKinds = ["path", "path_prefix", "path_regex"].filter { match[$0] != nil }
                if pathKinds.count > 1 {
                    self.fail(matchPath, matchNode, "use only one of \(pathKinds.joined(separator: ", "))")
                }
                if let n = match["path"], let v = self.string(n, at: join(matchPath, "path")) {
                    route.path = .exact(v)
                } else if let n = match["path_prefix"], let v = self.string(n, at: join(matchPath, "path_prefix")) {
                    route.path = .prefix(v)
                } else if let n = match["path_regex"], let v = self.string(n, at: join(matchPath, "path_regex")) {
                    if (try? Regex(v)) == nil {
                        self.fail(join(matchPath, "path_regex"), n, "not a valid regular expression: \(v)")
                    }
                    route.path = .regex(v)
                }
                if let n = match["headers"] {
                    let headersPath = join(matchPath, "headers")
                    if case .mapping(let headers) = n {
                        self.remember(headersPath, n)
                        for (key, value) in headers {
                            guard let name = key.string, isToken(name) else {
                                self.fail(headersPath, key, "header names must be HTTP tokens")
                                continue
                            }
                            guard let v = self.string(value, at: join(headersPath, name)) else { continue }
                            route.headers[name.lowercased()] = v == "*" ? .present : .equals(v)
                        }
                    } else {
                        self.fail(headersPath, n, "expected a mapping of header name to value (\"*\" = present)")
                    }
                }
                if let n = match["methods"], let items = self.sequence(n, at: join(matchPath, "methods")) {
                    for (index, item) in items.enumerated() {
                        let itemPath = "\(join(matchPath, "methods"))[\(index)]"
                        guard let method = self.string(item, at: itemPath) else { continue }
                        guard isToken(method) else {
                            self.fail(itemPath, item, "not an HTTP method: \"\(method)\"")
                            continue
                        }
                        route.methods.append(method.uppercased())
                    }
                }
            }
        }
        if let n = map["strip_prefix"], let v = self.string(n, at: join(path, "strip_prefix")) {
            if !v.hasPrefix("/") { self.fail(join(path, "strip_prefix"), n, "must start with /") }
            route.stripPrefix = v
        }
        if let n = map["preserve_host"], let v = self.bool(n, at: join(path, "preserve_host")) {
            route.preserveHost = v
        }
        if let n = map["websocket"] {
            route.websocket = self.websocket(n, at: join(path, "websocket"))
        }
        if let n = map["hsts"], let text = self.string(n, at: join(path, "hsts")) {
            switch text {
            case "true", "yes", "on": route.hsts = "max-age=31536000"
            case "false", "no", "off": route.hsts = nil
            default:
                if text.hasPrefix("max-age=") {
                    route.hsts = text
                } else {
                    self.fail(
                        join(path, "hsts"),
                        n,
                        "expected true, false or a header value such as \"max-age=63072000; includeSubDomains\""
                    )
                }
            }
        }
        return route
    }

    mutating func websocket(_ node: Node, at path: String) -> WebSocketConfiguration? {
        guard let map = self.mapping(node, at: path, allowed: ["origins", "idle_timeout", "max_message_bytes"])
        else { return nil }
        var config = WebSocketConfiguration()
        if let n = map["origins"], let items = self.sequence(n, at: join(path, "origins")) {
            for (index, item) in items.enumerated() {
                if let origin = self.string(item, at: "\(join(path, "origins"))[\(index)]") {
                    config.origins.append(origin)
                }
            }
        }
        if let n = map["idle_timeout"], let v = self.positiveDuration(n, at: join(path, "idle_timeout")) {
            config.idleTimeout = v
        }
        if let n = map["max_message_bytes"],
            let v = self.int(n, at: join(path, "max_message_bytes"), in: 1...Int(Int32.max))
        {
            config.maxMessageBytes = v
        }
        return config
    }

    mutating func pool(_ node: Node, name: String, at path: String) -> PoolConfiguration? {
        let keys = [
            "policy", "hash_key", "bounded_load", "sticky_cookie", "backends", "discovery", "health", "passive",
            "hold", "retries", "connect_timeout", "response_timeout", "drain_timeout", "tls",
        ]
        guard let map = self.mapping(node, at: path, allowed: keys) else { return nil }
        var pool = PoolConfiguration(name: name)
        if let n = map["policy"], let text = self.string(n, at: join(path, "policy")) {
            if let policy = PoolConfiguration.Policy(rawValue: text) {
                pool.policy = policy
            } else {
                let names = PoolConfiguration.Policy.allCases.map(\.rawValue).joined(separator: ", ")
                self.fail(join(path, "policy"), n, "unknown policy \"\(text)\"; expected one of \(names)")
            }
        }
        if let n = map["hash_key"], let text = self.string(n, at: join(path, "hash_key")) {
            switch PoolConfiguration.HashKeySource.parseList(text) {
            case .success(let sources): pool.hashKey = sources
            case .failure(let error): self.fail(join(path, "hash_key"), n, error.message)
            }
        }
        if let n = map["bounded_load"] {
            pool.boundedLoad = self.double(n, at: join(path, "bounded_load"), above: 1.0)
        }
        if let n = map["sticky_cookie"], let v = self.string(n, at: join(path, "sticky_cookie")) {
            if isToken(v) {
                pool.stickyCookie = v
            } else {
                self.fail(join(path, "sticky_cookie"), n, "not a valid cookie name: \"\(v)\"")
            }
        }
        if let n = map["backends"], let items = self.sequence(n, at: join(path, "backends")) {
            for (index, item) in items.enumerated() {
                if let backend = self.backend(item, at: "\(join(path, "backends"))[\(index)]") {
                    pool.backends.append(backend)
                }
            }
        }
        if let n = map["discovery"] { pool.discovery = self.discovery(n, at: join(path, "discovery")) }
        if let n = map["health"] { pool.health = self.health(n, at: join(path, "health")) }
        if let n = map["passive"] {
            let p = join(path, "passive")
            if let m = self.mapping(n, at: p, allowed: ["failures", "eject"]) {
                var passive = PassiveHealthConfiguration()
                if let f = m["failures"], let v = self.int(f, at: join(p, "failures"), in: 1...1000) {
                    passive.failures = v
                }
                if let e = m["eject"], let v = self.positiveDuration(e, at: join(p, "eject")) { passive.eject = v }
                pool.passive = passive
            }
        }
        if let n = map["hold"] {
            let p = join(path, "hold")
            if let m = self.mapping(n, at: p, allowed: ["timeout", "max_queued"]) {
                var hold = HoldConfiguration()
                if let t = m["timeout"], let v = self.positiveDuration(t, at: join(p, "timeout")) { hold.timeout = v }
                if let q = m["max_queued"], let v = self.int(q, at: join(p, "max_queued"), in: 1...10_000_000) {
                    hold.maxQueued = v
                }
                pool.hold = hold
            }
        }
        if let n = map["retries"], let v = self.int(n, at: join(path, "retries"), in: 0...10) { pool.retries = v }
        if let n = map["tls"] {
            let p = join(path, "tls")
            if let m = self.mapping(n, at: p, allowed: ["ca", "server_name", "verify"]) {
                var tls = UpstreamTLSConfiguration()
                tls.ca = m["ca"].flatMap { self.string($0, at: join(p, "ca")) }
                tls.serverName = m["server_name"].flatMap { self.string($0, at: join(p, "server_name")) }
                if let v = m["verify"].flatMap({ self.bool($0, at: join(p, "verify")) }) { tls.verify = v }
                pool.tls = tls
            }
        }
        if let n = map["connect_timeout"], let v = self.positiveDuration(n, at: join(path, "connect_timeout")) {
            pool.connectTimeout = v
        }
        if let n = map["response_timeout"], let v = self.positiveDuration(n, at: join(path, "response_timeout")) {
            pool.responseTimeout = v
        }
        if let n = map["drain_timeout"], let v = self.positiveDuration(n, at: join(path, "drain_timeout")) {
            pool.drainTimeout = v
        }
        return pool
    }

    mutating func backend(_ node: Node, at path: String) -> BackendConfiguration? {
        guard let map = self.mapping(node, at: path, allowed: ["address", "id", "weight", "max_connections"])
        else { return nil }
        guard
            let address = self.required(map, "address", at: path, node: node).flatMap({
                self.hostPort($0, at: join(path, "address"))
            })
        else { return nil }
        if address.port == 0 { self.fail(join(path, "address"), map["address"], "a backend needs a real port, not 0") }
        let id = map["id"].flatMap { self.string($0, at: join(path, "id")) }
        let weight = map["weight"].flatMap { self.int($0, at: join(path, "weight"), in: 1...1000) } ?? 1
        let maxConnections = map["max_connections"].flatMap {
            self.int($0, at: join(path, "max_connections"), in: 1...10_000_000)
        }
        return BackendConfiguration(address: address, id: id, weight: weight, maxConnections: maxConnections)
    }

    mutating func discovery(_ node: Node, at path: String) -> DiscoveryConfiguration? {
        guard let map = self.mapping(node, at: path, allowed: ["dns", "redis"]) else { return nil }
        var discovery = DiscoveryConfiguration()
        if let n = map["dns"] {
            let p = join(path, "dns")
            if let m = self.mapping(n, at: p, allowed: ["name", "port", "interval"]),
                let name = self.required(m, "name", at: p, node: n).flatMap({ self.string($0, at: join(p, "name")) }),
                let port = self.required(m, "port", at: p, node: n).flatMap({
                    self.int($0, at: join(p, "port"), in: 1...65_535)
                })
            {
                var dns = DiscoveryConfiguration.DNS(name: name, port: port)
                if let i = m["interval"], let v = self.positiveDuration(i, at: join(p, "interval")) { dns.interval = v }
                discovery.dns = dns
            }
        }
        if let n = map["redis"] {
            let p = join(path, "redis")
            if let m = self.mapping(n, at: p, allowed: ["url", "service", "cluster"]),
                let url = self.required(m, "url", at: p, node: n).flatMap({ self.string($0, at: join(p, "url")) }),
                let service = self.required(m, "service", at: p, node: n).flatMap({
                    self.string($0, at: join(p, "service"))
                })
            {
                if !url.hasPrefix("redis://") { self.fail(join(p, "url"), m["url"], "expected a redis:// URL") }
                var redis = DiscoveryConfiguration.Redis(url: url, service: service)
                if let c = m["cluster"], let v = self.bool(c, at: join(p, "cluster")) { redis.cluster = v }
                discovery.redis = redis
            }
        }
        if discovery.dns == nil && discovery.redis == nil {
            self.fail(path, node, "name dns or redis (or remove discovery)")
        }
        return discovery
    }

    mutating func health(_ node: Node, at path: String) -> HealthConfiguration? {
        let keys = ["path", "interval", "timeout", "rise", "fall", "expect_status"]
        guard let map = self.mapping(node, at: path, allowed: keys) else { return nil }
        var health = HealthConfiguration()
        if let n = map["path"], let v = self.string(n, at: join(path, "path")) {
            if !v.hasPrefix("/") { self.fail(join(path, "path"), n, "must start with /") }
            health.path = v
        }
        if let n = map["interval"], let v = self.positiveDuration(n, at: join(path, "interval")) { health.interval = v }
        if let n = map["timeout"], let v = self.positiveDuration(n, at: join(path, "timeout")) { health.timeout = v }
        if let n = map["rise"], let v = self.int(n, at: join(path, "rise"), in: 1...100) { health.rise = v }
        if let n = map["fall"], let v = self.int(n, at: join(path, "fall"), in: 1...100) { health.fall = v }
        if let n = map["expect_status"], let text = self.string(n, at: join(path, "expect_status")) {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingSpaces) }
            if parts.count == 1, let a = parts[0], (100...599).contains(a) {
                health.expectStatus = a...a
            } else if parts.count == 2, let a = parts[0], let b = parts[1], 100 <= a, a <= b, b <= 599 {
                health.expectStatus = a...b
            } else {
                self.fail(join(path, "expect_status"), n, "expected a status or a range such as 200-399")
            }
        }
        return health
    }

    mutating func positiveDuration(_ node: Node, at path: String) -> Duration? {
        guard let value = self.duration(node, at: path) else { return nil }
        guard value > .zero else {
            self.fail(path, node, "must be greater than zero")
            return nil
        }
        return value
    }

    mutating func required(_ map: [String: Node], _ key: String, at path: String, node: Node) -> Node? {
        if let value = map[key] { return value }
        self.fail(join(path, key), node, "required")
        return nil
    }
}

/// An RFC 9110 token: header names, methods, cookie names.
func isToken(_ text: String) -> Bool {
    !text.isEmpty
        && text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            default:
                return "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
        }
}

extension PoolConfiguration.HashKeySource {
    /// Parses `ip`, `header:NAME`, `cookie:NAME`, `query:NAME`, or a comma list of them (fallbacks in order).
    public static func parseList(_ text: String) -> Result<[Self], HashKeyError> {
        var sources: [Self] = []
        for part in text.split(separator: ",") {
            let item = String(part.trimmingSpaces)
            if item == "ip" {
                sources.append(.ip)
                continue
            }
            let pieces = item.split(separator: ":", maxSplits: 1).map(String.init)
            guard pieces.count == 2, !pieces[1].isEmpty else {
                return .failure(
                    HashKeyError(message: "expected ip, header:NAME, cookie:NAME or query:NAME, got \"\(item)\"")
                )
            }
            switch pieces[0] {
            case "header": sources.append(.header(pieces[1].lowercased()))
            case "cookie": sources.append(.cookie(pieces[1]))
            case "query": sources.append(.query(pieces[1]))
            default:
                return .failure(HashKeyError(message: "unknown hash key source \"\(pieces[0])\" in \"\(item)\""))
            }
        }
        if sources.isEmpty { return .failure(HashKeyError(message: "hash_key is empty")) }
        return .success(sources)
    }
}

/// Why a `hash_key` did not parse.
public struct HashKeyError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { self.message }
}
