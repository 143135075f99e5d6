import PorticoConfig
import Testing

/// The `admin:` section: allowed host names, its own connection limit and timeouts.
@Suite struct AdminConfigurationTests {
    static func yaml(_ admin: String) -> String {
        """
        listeners: [{ address: "127.0.0.1:8080" }]
        admin:
        \(admin)
        routes: [{ pool: web }]
        pools:
          web:
            backends: [{ address: "127.0.0.1:9001" }]
        """
    }

    static func errors(_ yaml: String) -> [ConfigurationError] {
        do {
            _ = try PorticoConfiguration.load(yaml: yaml, environment: [:])
            return []
        } catch {
            return error.errors
        }
    }

    @Test func defaults() throws {
        let admin = try #require(try PorticoConfiguration.load(yaml: Self.yaml("  address: \"127.0.0.1:9901\"")).admin)
        #expect(admin.allowedHosts.isEmpty)
        #expect(admin.maxConnections == 64)
        #expect(admin.headerTimeout == .seconds(10))
        #expect(admin.idleTimeout == .seconds(60))
        #expect(admin.token == nil)
    }

    @Test func parsesEveryKey() throws {
        let yaml = Self.yaml(
            """
              address: "127.0.0.1:9901"
              token: s3cret
              allowed_hosts: ["portico.internal", "Admin.Example.COM.", "portico.internal", "compose_admin"]
              max_connections: 8
              header_timeout: 250ms
              idle_timeout: 5s
            """
        )
        let admin = try #require(try PorticoConfiguration.load(yaml: yaml).admin)
        // Lower case, no trailing dot, no duplicates: the form the Host check compares.
        #expect(admin.allowedHosts == ["portico.internal", "admin.example.com", "compose_admin"])
        #expect(admin.maxConnections == 8)
        #expect(admin.headerTimeout == .milliseconds(250))
        #expect(admin.idleTimeout == .seconds(5))
        #expect(admin.token == "s3cret")
    }

    @Test func allowedHostsExpandsEnvironment() throws {
        let yaml = Self.yaml("  address: \"127.0.0.1:9901\"\n  allowed_hosts: [\"${ADMIN_HOST}\"]")
        let configuration = try PorticoConfiguration.load(yaml: yaml, environment: ["ADMIN_HOST": "ops.internal"])
        #expect(configuration.admin?.allowedHosts == ["ops.internal"])
    }

    @Test func badAllowedHostsNameTheKeyPath() {
        let yaml = Self.yaml(
            """
              address: "127.0.0.1:9901"
              allowed_hosts:
                - "portico.internal"
                - "portico.internal:9901"
                - "http://portico.internal"
                - "*.example.com"
                - ""
                - "-bad.example"
                - [nested]
            """
        )
        let errors = Self.errors(yaml)
        #expect(
            errors.map(\.path) == [
                "admin.allowed_hosts[1]", "admin.allowed_hosts[2]", "admin.allowed_hosts[3]",
                "admin.allowed_hosts[4]", "admin.allowed_hosts[5]", "admin.allowed_hosts[6]",
            ]
        )
        #expect(errors.first?.line == 6)
        #expect(errors.first?.message.contains("host name") == true)
        #expect(errors.first?.message.contains("portico.internal:9901") == true)
    }

    @Test func allowedHostsMustBeAList() {
        let errors = Self.errors(Self.yaml("  address: \"127.0.0.1:9901\"\n  allowed_hosts: portico.internal"))
        #expect(errors.map(\.path) == ["admin.allowed_hosts"])
        #expect(errors.first?.message == "expected a list")
    }

    @Test func limitsAndTimeoutsAreChecked() {
        let yaml = Self.yaml(
            """
              address: "127.0.0.1:9901"
              max_connections: 0
              header_timeout: 0s
              idle_timeout: soon
              allowed_host: ["typo.example"]
            """
        )
        let paths = Set(Self.errors(yaml).map(\.path))
        #expect(
            paths == [
                "admin.max_connections", "admin.header_timeout", "admin.idle_timeout", "admin.allowed_host",
            ]
        )
        let typo = Self.errors(yaml).first { $0.path == "admin.allowed_host" }
        #expect(typo?.message.contains("did you mean \"allowed_hosts\"") == true)
    }

    @Test func hostNameSyntax() {
        for name in ["localhost", "portico.internal", "a", "Admin-1.Example.com.", "compose_admin", "10.0.0.1"] {
            #expect(AdminConfiguration.isHostName(name), "\(name)")
        }
        let tooLongLabel = String(repeating: "a", count: 64) + ".example"
        let tooLongName = Array(repeating: String(repeating: "a", count: 60), count: 5).joined(separator: ".")
        for name in [
            "", ".", "a..b", ".a", "a.-b", "b-.example", "host:80", "[::1]", "::1", "*.example.com",
            "http://x", "a b", "a/b", "é.example", tooLongLabel, tooLongName, "example..",
        ] {
            #expect(!AdminConfiguration.isHostName(name), "\(name)")
        }
    }
}
