import NIOHTTP1
import Testing

@testable import PorticoProxy

/// The admin API's request checks without sockets: Host allow-list, same-origin `Origin`, bearer token.
@Suite struct AdminRequestGuardTests {
    static let open = AdminRequestGuard(token: nil, allowedHosts: ["portico.internal"])
    static let locked = AdminRequestGuard(token: "s3cret-token", allowedHosts: [])

    static func head(
        _ headers: [(String, String)],
        method: HTTPMethod = .POST,
        version: HTTPVersion = .http1_1
    ) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: "/pools/chat/pause", headers: HTTPHeaders(headers))
    }

    static func status(_ requestGuard: AdminRequestGuard, _ head: HTTPRequestHead) -> HTTPResponseStatus? {
        requestGuard.check(head)?.status
    }

    @Test func hostsThatPass() {
        for host in [
            "127.0.0.1", "127.0.0.1:9901", "10.1.2.3:80", "[::1]", "[::1]:9901", "[2001:DB8::1]:9901", "localhost",
            "localhost:9901", "LocalHost:9901", "localhost.:9901", "portico.internal", "PORTICO.internal.:9901",
        ] {
            #expect(Self.status(Self.open, Self.head([("Host", host)], method: .GET)) == nil, "\(host)")
        }
    }

    @Test func namesOutsideTheListAreForbidden() {
        for host in [
            "evil.example", "evil.example:9901", "localhost.evil.example", "127.0.0.1.evil.example", "127.1",
            "0x7f.0.0.1:9901", "portico.internal.evil", "sub.portico.internal",
        ] {
            #expect(Self.status(Self.open, Self.head([("Host", host)], method: .GET)) == .forbidden, "\(host)")
        }
    }

    @Test func malformedOrMissingHostIsABadRequest() {
        for host in [
            "", ":9901", "::1", "[::1", "[::1]x", "[evil.example]:9901", "[127.0.0.1]", "localhost:", "localhost:99999",
            "localhost:9x", "localhost:+80", "local host", "localhost/x", "[fe80::1%25eth0]",
        ] {
            #expect(Self.status(Self.open, Self.head([("Host", host)], method: .GET)) == .badRequest, "\(host)")
        }
        #expect(Self.status(Self.open, Self.head([], method: .GET)) == .badRequest)
        #expect(
            Self.status(Self.open, Self.head([("Host", "localhost"), ("Host", "localhost")], method: .GET))
                == .badRequest
        )
        // HTTP/1.0 had no Host; without one there is no own origin, so any Origin is refused.
        #expect(Self.status(Self.open, Self.head([], method: .GET, version: .http1_0)) == nil)
        #expect(
            Self.status(Self.open, Self.head([("Origin", "http://127.0.0.1:9901")], version: .http1_0)) == .forbidden
        )
    }

    @Test func originMustBeTheListenersOwn() {
        let same: [(host: String, origin: String)] = [
            ("127.0.0.1:9901", "http://127.0.0.1:9901"),
            ("localhost:9901", "HTTP://LOCALHOST:9901"),
            ("[::1]:9901", "http://[::1]:9901"),
            ("portico.internal", "http://portico.internal"),
            ("portico.internal", "http://portico.internal:80"),
            ("portico.internal:80", "http://Portico.Internal"),
        ]
        for (host, origin) in same {
            #expect(Self.status(Self.open, Self.head([("Host", host), ("Origin", origin)])) == nil, "\(origin)")
        }
        let cross: [(host: String, origin: String)] = [
            ("127.0.0.1:9901", "http://evil.example"),
            ("127.0.0.1:9901", "null"),
            ("127.0.0.1:9901", "http://127.0.0.1:8080"),
            ("127.0.0.1:9901", "http://127.0.0.1"),
            ("127.0.0.1:9901", "https://127.0.0.1:9901"),
            ("127.0.0.1:9901", "http://127.0.0.1:9901/"),
            ("127.0.0.1:9901", "http://localhost:9901"),
            ("127.0.0.1:9901", "http://"),
            ("127.0.0.1:9901", ""),
            ("localhost:9901", "http://localhost:9901.evil.example"),
        ]
        for (host, origin) in cross {
            #expect(Self.status(Self.open, Self.head([("Host", host), ("Origin", origin)])) == .forbidden, "\(origin)")
        }
        let twice = Self.head([
            ("Host", "127.0.0.1:9901"), ("Origin", "http://127.0.0.1:9901"), ("Origin", "http://127.0.0.1:9901"),
        ])
        #expect(Self.status(Self.open, twice) == .forbidden)
        // Every method, GET too: one rule.
        #expect(
            Self.status(Self.open, Self.head([("Host", "localhost"), ("Origin", "null")], method: .GET)) == .forbidden
        )
    }

    @Test func tokenIsCheckedAfterHostAndOrigin() {
        func status(_ authorization: [String], host: String = "localhost:9901") -> HTTPResponseStatus? {
            Self.status(Self.locked, Self.head([("Host", host)] + authorization.map { ("Authorization", $0) }))
        }
        #expect(status(["Bearer s3cret-token"]) == nil)
        #expect(status(["bearer s3cret-token"]) == nil)
        #expect(status(["BEARER  s3cret-token"]) == nil)
        for wrong in [
            [], ["Bearer s3cret-tokeN"], ["Bearer s3cret-toke"], ["Bearer s3cret-token!"], ["Bearer "], ["Bearer"],
            ["Basic s3cret-token"], ["s3cret-token"], ["Bearer s3cret-token", "Bearer s3cret-token"],
        ] {
            #expect(status(wrong) == .unauthorized, "\(wrong)")
        }
        // A right token does not open the door to a foreign Host or Origin.
        #expect(status(["Bearer s3cret-token"], host: "evil.example") == .forbidden)
        let crossOrigin = Self.head([
            ("Host", "localhost:9901"), ("Origin", "http://evil.example"), ("Authorization", "Bearer s3cret-token"),
        ])
        #expect(Self.status(Self.locked, crossOrigin) == .forbidden)
    }

    @Test func constantTimeCompare() {
        let token = Array("s3cret-token".utf8)
        #expect(AdminRequestGuard.constantTimeEqual(token, token))
        #expect(!AdminRequestGuard.constantTimeEqual(Array("s3cret-tokeX".utf8), token))
        #expect(!AdminRequestGuard.constantTimeEqual(Array("X3cret-token".utf8), token))
        #expect(!AdminRequestGuard.constantTimeEqual(Array("s3cret".utf8), token))
        #expect(!AdminRequestGuard.constantTimeEqual(Array("s3cret-tokens3cret-token".utf8), token))  // repeats it
        #expect(!AdminRequestGuard.constantTimeEqual(Array("s3cret-token-".utf8), token))
        #expect(!AdminRequestGuard.constantTimeEqual([], token))
        #expect(AdminRequestGuard.constantTimeEqual([], []))
        #expect(!AdminRequestGuard.constantTimeEqual([0], []))
        // Lengths whose difference is a multiple of 256 must not cancel out.
        let long = Array(repeating: UInt8(ascii: "a"), count: 300)
        #expect(!AdminRequestGuard.constantTimeEqual(Array(long.prefix(44)), long))
        #expect(!AdminRequestGuard.constantTimeEqual(long, Array(long.prefix(44))))
    }
}
