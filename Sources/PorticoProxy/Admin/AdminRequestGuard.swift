import NIOCore
import NIOHTTP1
import PorticoConfig

/// Decides whether an admin request may be served, from its head alone: the checks that keep a web page from
/// driving the admin API. Browsers reach loopback, so "it listens on 127.0.0.1" protects nothing by itself.
///
/// In order:
/// 1. `Host` must be an IP literal, `localhost` or a name in `admin.allowed_hosts`, with an optional port
///    (DNS rebinding: a page on `evil.example`, re-resolved to 127.0.0.1, sends `Host: evil.example`).
///    HTTP/1.1 without `Host`, several `Host`s or a malformed one get 400; HTTP/1.0 may omit it.
/// 2. `Origin`, when present, must be the admin listener's own origin, `http://` + that `Host` (CSRF: a
///    cross-site `fetch(…, {method: "POST", mode: "no-cors"})` carries its page's origin). `null` is refused.
///    No `Origin` (curl, scripts, the status page's own navigations) passes.
/// 3. With `admin.token`, `Authorization: Bearer <token>`, compared in constant time.
///
/// Pure: no channel, so it is tested without sockets.
struct AdminRequestGuard: Sendable {
    /// Why a request is refused: its status and a short text for the body and the log (never a secret).
    struct Refusal: Equatable, Sendable {
        var status: HTTPResponseStatus
        var reason: String
    }

    private let token: [UInt8]?
    private let allowedHosts: Set<String>

    /// - Parameters:
    ///   - token: the bearer token every request must carry, or `nil` for none.
    ///   - allowedHosts: host names accepted in `Host` besides IP literals and `localhost`.
    init(token: String?, allowedHosts: [String]) {
        self.token = token.map { Array($0.utf8) }
        self.allowedHosts = Set(allowedHosts.map { Self.normalizedName(Substring($0)) })
    }

    /// - Returns: `nil` when the request may be served, else why not.
    func check(_ head: HTTPRequestHead) -> Refusal? {
        let hosts = head.headers["host"]
        let host: Authority?
        switch hosts.count {
        case 0:
            guard head.version.major == 1, head.version.minor == 0 else {
                return Refusal(status: .badRequest, reason: "a Host header is required")
            }
            host = nil
        case 1:
            guard let authority = Authority(parsing: hosts[0][...]) else {
                return Refusal(status: .badRequest, reason: "malformed Host header")
            }
            guard authority.isIPLiteral || self.isAllowed(name: authority.host) else {
                return Refusal(status: .forbidden, reason: "host not allowed (see admin.allowed_hosts)")
            }
            host = authority
        default:
            return Refusal(status: .badRequest, reason: "more than one Host header")
        }

        let origins = head.headers["origin"]
        if !origins.isEmpty {
            guard origins.count == 1, let host, Self.isOwnOrigin(origins[0], host: host) else {
                return Refusal(status: .forbidden, reason: "cross-origin request refused")
            }
        }

        if let token = self.token {
            let credentials = head.headers["authorization"]
            guard credentials.count == 1, let given = Self.bearerToken(credentials[0]),
                Self.constantTimeEqual(given, token)
            else {
                return Refusal(status: .unauthorized, reason: "a bearer token is required")
            }
        }
        return nil
    }

    private func isAllowed(name: String) -> Bool {
        let name = Self.normalizedName(name[...])
        return name == "localhost" || self.allowedHosts.contains(name)
    }

    /// Host names compare case-insensitively, and `name.` is `name`.
    private static func normalizedName(_ name: Substring) -> String {
        let lowered = name.lowercased()
        return lowered.hasSuffix(".") ? String(lowered.dropLast()) : lowered
    }

    /// `Origin: http://HOST[:PORT]` naming the same host and port as `Host` (port 80 when absent on either).
    private static func isOwnOrigin(_ origin: String, host: Authority) -> Bool {
        let scheme = "http://"
        guard origin.utf8.count > scheme.utf8.count,
            origin.prefix(scheme.count).lowercased() == scheme,
            let authority = Authority(parsing: origin.dropFirst(scheme.count))
        else { return false }
        return Self.normalizedName(authority.host[...]) == Self.normalizedName(host.host[...])
            && (authority.port ?? 80) == (host.port ?? 80)
    }

    /// The credentials of `Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
    private static func bearerToken(_ value: String) -> [UInt8]? {
        let bytes = Array(value.utf8)
        let scheme = Array("bearer ".utf8)
        guard bytes.count > scheme.count,
            zip(bytes, scheme).allSatisfy({ byte, expected in byte | 0x20 == expected || byte == expected })
        else { return nil }
        return Array(bytes[scheme.count...].drop { $0 == UInt8(ascii: " ") })
    }

    /// Whether `given` equals `expected`, in time that depends on `given.count` only: every byte is compared,
    /// with no early exit, so the time taken says nothing about how much of a guess was right. A length
    /// difference makes the answer `false` without a shorter loop (the loop runs over what the caller sent).
    static func constantTimeEqual(_ given: [UInt8], _ expected: [UInt8]) -> Bool {
        guard !expected.isEmpty else { return given.isEmpty }
        var difference = UInt(bitPattern: given.count ^ expected.count)
        for index in given.indices {
            difference |= UInt(given[index] ^ expected[index % expected.count])
        }
        return difference == 0
    }
}

extension AdminRequestGuard {
    /// `host[:port]` as in `Host` and the authority of `Origin`: a name, an IPv4 literal, or `[IPv6]`.
    struct Authority: Equatable, Sendable {
        /// The name or address, without brackets.
        var host: String
        var port: Int?
        /// An IPv4 or IPv6 address rather than a name.
        var isIPLiteral: Bool

        /// `nil` when malformed: empty host, bare or invalid IPv6, a port that is not 0…65535, stray characters.
        init?(parsing text: Substring) {
            let hostText: Substring
            let portText: Substring?
            if text.hasPrefix("[") {
                guard let close = text.firstIndex(of: "]") else { return nil }
                hostText = text[text.index(after: text.startIndex)..<close]
                let rest = text[text.index(after: close)...]
                if rest.isEmpty {
                    portText = nil
                } else {
                    guard rest.hasPrefix(":") else { return nil }
                    portText = rest.dropFirst()
                }
                // Only an IPv6 literal goes in brackets (no zone ids: a browser never sends one).
                guard hostText.contains(":"), (try? SocketAddress(ipAddress: String(hostText), port: 0)) != nil else {
                    return nil
                }
                self.isIPLiteral = true
            } else {
                if let colon = text.lastIndex(of: ":") {
                    hostText = text[..<colon]
                    portText = text[text.index(after: colon)...]
                } else {
                    hostText = text
                    portText = nil
                }
                guard
                    !hostText.isEmpty,
                    hostText.utf8.allSatisfy({ byte in
                        switch byte {
                        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                            UInt8(ascii: "."):
                            return true
                        default:
                            return false  // ":" too: a bare IPv6 literal needs brackets
                        }
                    })
                else { return nil }
                // Strict dotted quads only (inet_pton): "127.1" or "0x7f.0.0.1" are names, so not allowed.
                self.isIPLiteral = (try? SocketAddress(ipAddress: String(hostText), port: 0)) != nil
            }
            if let portText {
                guard (1...5).contains(portText.utf8.count),
                    portText.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                    let port = Int(portText), port <= 65_535
                else { return nil }
                self.port = port
            } else {
                self.port = nil
            }
            self.host = String(hostText)
        }
    }
}
