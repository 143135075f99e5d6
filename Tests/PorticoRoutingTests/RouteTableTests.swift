import NIOHTTP1
import PorticoBalancing
import PorticoConfig
import Testing

@testable import PorticoRouting

@Suite struct RouteTableTests {
    static let table = RouteTable([
        RouteConfiguration(host: "api.example.com", path: .prefix("/render"), pool: "render", stripPrefix: "/render"),
        RouteConfiguration(headers: ["x-service-1": .present], pool: "service1"),
        RouteConfiguration(headers: ["x-tenant": .equals("blue")], methods: ["POST"], pool: "blue"),
        RouteConfiguration(host: "*.example.com", path: .regex("^/v[0-9]+/"), pool: "versioned"),
        RouteConfiguration(path: .exact("/exact"), pool: "exact"),
        RouteConfiguration(host: "static.example.org", pool: "static"),
    ])

    static func head(
        _ uri: String,
        host: String? = nil,
        method: HTTPMethod = .GET,
        _ headers: [(String, String)] = []
    )
        -> HTTPRequestHead
    {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
        if let host { head.headers.add(name: "Host", value: host) }
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        return head
    }

    @Test func firstMatchWins() {
        #expect(Self.table.match(Self.head("/render/x", host: "api.example.com"))?.pool == "render")
        #expect(Self.table.match(Self.head("/render", host: "API.example.com:8080"))?.pool == "render")
        #expect(
            Self.table.match(Self.head("/render", host: "other.example.com", [("X-Service-1", "")]))?.pool == "service1"
        )
        #expect(Self.table.match(Self.head("/v2/users", host: "a.b.example.com"))?.pool == "versioned")
        #expect(Self.table.match(Self.head("/x/v2/", host: "a.example.com")) == nil)
        #expect(Self.table.match(Self.head("/v2/users", host: "example.com")) == nil)  // wildcard needs a label
        #expect(Self.table.match(Self.head("/exact?q=1"))?.pool == "exact")
        #expect(Self.table.match(Self.head("/exact/more")) == nil)
        #expect(Self.table.match(Self.head("/anything", host: "static.example.org."))?.pool == "static")
    }

    @Test func headersAndMethods() {
        #expect(Self.table.match(Self.head("/", method: .POST, [("x-tenant", "blue")]))?.pool == "blue")
        #expect(Self.table.match(Self.head("/", method: .GET, [("x-tenant", "blue")])) == nil)
        #expect(Self.table.match(Self.head("/", method: .POST, [("x-tenant", "green")])) == nil)
    }

    /// Matching compares bytes: every form a proxy meets (ports, IPv6, case, trailing dots, absolute-form,
    /// percent-encoding and non-ASCII) lands where it should.
    @Test(
        arguments: [
            ("/render/x", "api.example.com", "render"),
            ("/render", "[::1]:8080", nil),
            ("/renderer", "api.example.com", "render"),  // a prefix, as nginx's `location /render`
            ("http://api.example.com/render/x?y=1", "api.example.com", "render"),  // absolute-form
            ("/v12/", "ÜBER.example.com", "versioned"),  // lowercased, non-ASCII kept
            ("/v12/", "über.example.com:443", "versioned"),
            ("/v1", "x.example.com", nil),  // the regex needs the trailing slash
            ("/exact", "EXAMPLE.NET", "exact"),
            ("/exact%2F", nil, nil),
            ("/exäct", nil, nil),
            ("/anything", "STATIC.example.org.", "static"),
            ("/anything", "static.example.org.evil", nil),
            ("/anything", "xstatic.example.org", nil),
        ] as [(String, String?, String?)]
    )
    func bytewiseMatching(uri: String, host: String?, pool: String?) {
        #expect(Self.table.match(Self.head(uri, host: host))?.pool == pool)
    }

    @Test(arguments: [
        ("^/users/[0-9]+/avatar$", "/users/"),
        ("^/ab?c", "/a"),
        ("^/v[0-9]+/", "/v"),
        ("^/a+", "/a"),
        ("^/x.*|/y", ""),
        ("/anywhere", ""),
        ("^(?i)/users", ""),
        ("^\\d", ""),
    ])
    func regexLiteralPrefixes(pattern: String, prefix: String) {
        #expect(PathRegex.literalPrefix(of: pattern) == Array(prefix.utf8))
    }

    @Test func headerRulesIgnoreTheNamesCase() {
        #expect(Self.table.match(Self.head("/", [("X-Service-1", "")]))?.pool == "service1")
        #expect(Self.table.match(Self.head("/", method: .POST, [("X-TENANT", "blue")]))?.pool == "blue")
        #expect(Self.table.match(Self.head("/", method: .POST, [("x-tenant", "Blue")])) == nil)  // values exact
        #expect(
            Self.table.match(Self.head("/", method: .POST, [("x-tenant", "red"), ("x-tenant", "blue")]))?.pool == "blue"
        )
    }

    @Test func stripPrefixKeepsQuery() {
        let route = Self.table.routes[0]
        #expect(route.upstreamURI("/render/a/b?x=1") == "/a/b?x=1")
        #expect(route.upstreamURI("/render") == "/")
        #expect(route.upstreamURI("/render?x=1") == "/?x=1")
        #expect(route.upstreamURI("/other") == "/other")
    }

    @Test func hashKeySourcesInOrder() {
        let sources: [PoolConfiguration.HashKeySource] = [.query("room"), .cookie("sid"), .header("x-user"), .ip]
        let byQuery = PoolConfiguration.HashKeySource.key(
            sources,
            head: Self.head("/ws?room=lobby&x=1"),
            downstreamIP: "1.2.3.4"
        )
        #expect(byQuery == StableHash.hash("lobby"))
        let byCookie = PoolConfiguration.HashKeySource.key(
            sources,
            head: Self.head("/ws", [("Cookie", "a=1; sid=abc")]),
            downstreamIP: "1.2.3.4"
        )
        #expect(byCookie == StableHash.hash("abc"))
        let byHeader = PoolConfiguration.HashKeySource.key(
            sources,
            head: Self.head("/", [("X-User", "u7")]),
            downstreamIP: nil
        )
        #expect(byHeader == StableHash.hash("u7"))
        let byIP = PoolConfiguration.HashKeySource.key(sources, head: Self.head("/?room="), downstreamIP: "1.2.3.4")
        #expect(byIP == StableHash.hash("1.2.3.4"))
        #expect(PoolConfiguration.HashKeySource.key([.cookie("sid")], head: Self.head("/"), downstreamIP: nil) == nil)
    }
}
