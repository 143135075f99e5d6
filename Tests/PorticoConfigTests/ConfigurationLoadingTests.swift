import PorticoConfig
import Testing

@Suite struct ConfigurationLoadingTests {
    static let full = """
        workers: 2
        listeners:
          - address: "127.0.0.1:8080"
          - address: "[::1]:8081"
        admin:
          address: "127.0.0.1:9901"
          token: "${PORTICO_ADMIN_TOKEN}"
        limits:
          max_connections: 50000
          header_timeout: 10s
          idle_timeout: 60s
          max_header_bytes: 16384
        routes:
          - match:
              host: "api.example.com"
              path_prefix: "/render"
              headers: { x-service-1: "*", x-tenant: "blue" }
              methods: [GET, post]
            pool: render
            strip_prefix: "/render"
            preserve_host: false
            websocket:
              origins: ["https://chat.example.com"]
              idle_timeout: 300s
              max_message_bytes: 1048576
          - match: { path_prefix: "/" }
            pool: api
        pools:
          render:
            policy: least_conn
            backends:
              - { address: "127.0.0.1:9001", id: "render-1", weight: 3 }
              - { address: "127.0.0.1:9002" }
            health: { path: "/healthz", interval: 2s, timeout: 1s, rise: 2, fall: 3, expect_status: "200-399" }
            passive: { failures: 3, eject: 10s }
            hold: { timeout: 30s, max_queued: 10000 }
            retries: 2
            connect_timeout: 2s
            response_timeout: 60s
            drain_timeout: 30s
          api:
            policy: consistent_hash
            hash_key: "query:room,ip"
            bounded_load: 1.25
            discovery:
              dns: { name: "chat", port: 9000, interval: 5s }
        """

    @Test func parsesTheFullExample() throws {
        let config = try PorticoConfiguration.load(yaml: Self.full, environment: ["PORTICO_ADMIN_TOKEN": "s3cret"])
        #expect(config.workers == 2)
        #expect(config.listeners.map(\.address.description) == ["127.0.0.1:8080", "[::1]:8081"])
        #expect(config.admin?.token == "s3cret")
        #expect(config.limits.headerTimeout == .seconds(10))
        #expect(config.routes.count == 2)
        let render = config.routes[0]
        #expect(render.host == "api.example.com")
        #expect(render.path == .prefix("/render"))
        #expect(render.headers == ["x-service-1": .present, "x-tenant": .equals("blue")])
        #expect(render.methods == ["GET", "POST"])
        #expect(render.stripPrefix == "/render")
        #expect(render.preserveHost == false)
        #expect(render.websocket?.origins == ["https://chat.example.com"])
        #expect(config.pools.map(\.name) == ["render", "api"])
        let pool = try #require(config.pool(named: "render"))
        #expect(pool.policy == .leastConnections)
        #expect(pool.backends.map(\.id) == ["render-1", "127.0.0.1:9002"])
        #expect(pool.backends.map(\.weight) == [3, 1])
        #expect(pool.health?.expectStatus == 200...399)
        #expect(pool.passive?.eject == .seconds(10))
        let api = try #require(config.pool(named: "api"))
        #expect(api.hashKey == [.query("room"), .ip])
        #expect(api.boundedLoad == 1.25)
        #expect(api.discovery?.dns?.port == 9000)
    }

    @Test func redisDiscoveryOnACluster() throws {
        let yaml = """
            listeners: [{ address: "127.0.0.1:8080" }]
            routes: [{ pool: chat }]
            pools:
              chat:
                discovery: { redis: { url: "redis://10.0.0.2:7000", service: chat, cluster: true } }
            """
        let config = try PorticoConfiguration.load(yaml: yaml)
        #expect(config.pool(named: "chat")?.discovery?.redis?.cluster == true)
        let errors = Self.errors(yaml.replacing("cluster: true", with: "cluster: sometimes"))
        #expect(errors.map(\.path) == ["pools.chat.discovery.redis.cluster"])
        #expect(errors.first?.line == 5)
    }

    /// Fuzz findings (Fuzz/Findings/config-*): a broken section is reported once, with its line, and no error
    /// names an entry by an index that moved because an earlier entry was broken.
    @Test func aBrokenSectionIsReportedOnceWithItsLine() {
        let notAList = Self.errors(
            "listeners: chat\nroutes: [{ pool: p }]\npools: { p: { backends: [{ address: \"127.0.0.1:1\" }] } }"
        )
        #expect(notAList.map(\.path) == ["listeners"])
        #expect(notAList.first?.line == 1)
        let shifted = Self.errors(
            """
            listeners: [{ address: "127.0.0.1:8080" }]
            routes:
              - oops
              - match: { path_prefix: "/" }
                pool: chat
            pools: {}
            """
        )
        #expect(shifted.map(\.path) == ["routes[0]"])
        #expect(shifted.allSatisfy { $0.line != nil })
    }

    @Test func unknownKeyNamesPathAndPlace() {
        let yaml = """
            listeners:
              - address: "127.0.0.1:8080"
            routes:
              - match: { path_prefix: "/" }
                pool: api
            pools:
              api:
                polcy: round_robin
                backends: [{ address: "127.0.0.1:9001" }]
            """
        let errors = Self.errors(yaml)
        #expect(errors.count == 1)
        #expect(errors.first?.path == "pools.api.polcy")
        #expect(errors.first?.line == 8)
        #expect(errors.first?.column == 5)
        #expect(errors.first?.description.contains("did you mean \"policy\"") == true)
    }

    @Test func reportsEveryErrorAtOnce() {
        let yaml = """
            listeners:
              - address: "127.0.0.1:99999"
            limits:
              header_timeout: 10 seconds
            routes:
              - match: { path_prefix: "/" }
                pool: nowhere
            pools:
              api:
                policy: fastest
                backends: []
            """
        let errors = Self.errors(yaml)
        let paths = errors.map(\.path)
        #expect(paths.contains("listeners[0].address"))
        #expect(paths.contains("limits.header_timeout"))
        #expect(paths.contains("pools.api.policy"))
        #expect(paths.contains("routes[0].pool"))
        #expect(paths.contains("pools.api"))  // empty pool without discovery
        let timeout = errors.first { $0.path == "limits.header_timeout" }
        #expect(timeout?.line == 4)
        #expect(timeout?.message.contains("duration") == true)
        let route = errors.first { $0.path == "routes[0].pool" }
        #expect(route?.line == 7)
        #expect(route?.message.contains("no pool named \"nowhere\"") == true)
    }

    @Test func environmentExpansion() throws {
        let yaml = """
            listeners: [{ address: "${HOST:-127.0.0.1}:${PORT}" }]
            routes: [{ pool: api }]
            pools: { api: { backends: [{ address: "${BACKEND}" }] } }
            """
        let config = try PorticoConfiguration.load(yaml: yaml, environment: ["PORT": "8088", "BACKEND": "10.0.0.1:80"])
        #expect(config.listeners.first?.address == HostPort(host: "127.0.0.1", port: 8088))
        #expect(config.pools.first?.backends.first?.address.host == "10.0.0.1")
        let missing = Self.errors(yaml, environment: ["PORT": "1"])
        #expect(missing.contains { $0.message == "environment variable BACKEND is not set" && $0.line == 3 })
    }

    @Test func yamlSyntaxErrorHasAPlace() {
        let errors = Self.errors("listeners:\n  - address: [unclosed\n")
        #expect(errors.count == 1)
        #expect(errors.first?.line != nil)
        #expect(errors.first?.message.hasPrefix("YAML") == true)
    }

    @Test func stickyPoliciesNeedTheirKeys() {
        let yaml = """
            listeners: [{ address: "127.0.0.1:8080" }]
            routes: [{ pool: a }]
            pools:
              a: { policy: consistent_hash, backends: [{ address: "127.0.0.1:1" }] }
              b: { policy: round_robin, bounded_load: 1.5, backends: [{ address: "127.0.0.1:1" }] }
              c: { backends: [{ address: "127.0.0.1:1", id: x }, { address: "127.0.0.1:2", id: x }] }
            """
        let errors = Self.errors(yaml)
        #expect(errors.contains { $0.path == "pools.a.policy" && $0.message.contains("hash_key") })
        #expect(errors.contains { $0.path == "pools.b.bounded_load" })
        #expect(errors.contains { $0.path == "pools.c.backends[1]" && $0.message.contains("twice") })
    }

    @Test func rejectsBadRegexAndMissingRequiredKeys() {
        let yaml = """
            listeners: [{ }]
            routes:
              - match: { path_regex: "([a-" }
                pool: a
            pools:
              a: { backends: [{ id: only-an-id }] }
            """
        let errors = Self.errors(yaml)
        #expect(errors.contains { $0.path == "listeners[0].address" && $0.message == "required" })
        #expect(errors.contains { $0.path == "routes[0].match.path_regex" })
        #expect(errors.contains { $0.path == "pools.a.backends[0].address" })
    }

    static func errors(_ yaml: String, environment: [String: String] = [:]) -> [ConfigurationError] {
        do {
            _ = try PorticoConfiguration.load(yaml: yaml, environment: environment)
            return []
        } catch {
            return error.errors
        }
    }
}

@Suite struct ValueParsingTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("2s", .seconds(2)), ("5m", .seconds(300)), ("1h", .seconds(3600)),
        ("0s", .zero),
    ])
    func durations(text: String, expected: Duration) {
        #expect(Duration.parsing(text) == expected)
    }

    @Test(arguments: ["", "5", "s", "-1s", "1.5s", "2 days", "10sec"])
    func badDurations(text: String) {
        #expect(Duration.parsing(text) == nil)
    }

    @Test func hostPorts() {
        #expect(HostPort(parsing: "127.0.0.1:8080") == HostPort(host: "127.0.0.1", port: 8080))
        #expect(HostPort(parsing: "[::1]:443") == HostPort(host: "::1", port: 443))
        #expect(HostPort(parsing: "chat:9000") == HostPort(host: "chat", port: 9000))
        #expect(HostPort(parsing: "[::1]:443")?.description == "[::1]:443")
        for bad in ["127.0.0.1", ":80", "::1:80", "host:65536", "host:-1", "host:http", "[::1]80"] {
            #expect(HostPort(parsing: bad) == nil, "\(bad)")
        }
    }

    @Test func hashKeys() throws {
        #expect(try PoolConfiguration.HashKeySource.parseList("ip").get() == [.ip])
        #expect(
            try PoolConfiguration.HashKeySource.parseList("header:X-User, cookie:sid,query:room").get() == [
                .header("x-user"), .cookie("sid"), .query("room"),
            ]
        )
        #expect((try? PoolConfiguration.HashKeySource.parseList("path:x").get()) == nil)
        #expect((try? PoolConfiguration.HashKeySource.parseList("header:").get()) == nil)
    }
}
