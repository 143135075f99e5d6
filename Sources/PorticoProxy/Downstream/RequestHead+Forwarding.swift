import NIOCore
import NIOHTTP1
import PorticoBalancing
import PorticoConfig
import PorticoRouting
import Synchronization

/// How a request's body is framed, decided once from its head.
enum RequestFraming: Equatable {
    case none
    case contentLength(Int)
    case chunked
}

/// Why a request head is refused before any backend sees it.
struct RequestRejection: Error, Equatable {
    let status: HTTPResponseStatus
    let reason: String
}

enum RequestInspection {
    /// Framing of a request head, or a rejection for ambiguous framing (request smuggling) and oversize heads.
    ///
    /// - Parameters:
    ///   - head: the decoded request head.
    ///   - limits: the configured size limits.
    static func inspect(
        _ head: HTTPRequestHead,
        limits: LimitsConfiguration
    ) -> Result<RequestFraming, RequestRejection> {
        if head.uri.utf8.count > limits.maxURIBytes {
            return .failure(RequestRejection(status: .uriTooLong, reason: "request target too long"))
        }
        if head.method == .CONNECT {
            // A reverse proxy is nobody's tunnel: CONNECT would open a raw TCP stream to wherever it names.
            return .failure(RequestRejection(status: .methodNotAllowed, reason: "CONNECT is not supported"))
        }
        var headBytes = head.uri.utf8.count + head.method.rawValue.utf8.count + 12
        var contentLengths: [Substring] = []
        var transferCodings: [Substring] = []
        var hosts = 0
        var host: String?
        for (name, value) in head.headers {
            headBytes += name.utf8.count + value.utf8.count + 4
            guard isValidName(name) else {
                return .failure(RequestRejection(status: .badRequest, reason: "invalid header name"))
            }
            guard isValidValue(value) else {
                return .failure(RequestRejection(status: .badRequest, reason: "invalid header value"))
            }
            if name.equalsLowercase("host") {
                hosts += value.utf8.contains(UInt8(ascii: ",")) ? 2 : 1  // a list of hosts is as ambiguous
                host = value
            } else if name.equalsLowercase("content-length") {
                contentLengths += value.split(separator: ",", omittingEmptySubsequences: false).map(trimmed)
            } else if name.equalsLowercase("transfer-encoding") {
                transferCodings += value.split(separator: ",", omittingEmptySubsequences: false).map(trimmed)
            }
        }
        if headBytes > limits.maxHeaderBytes {
            return .failure(RequestRejection(status: .requestHeaderFieldsTooLarge, reason: "request head too large"))
        }
        if hosts > 1 {
            return .failure(RequestRejection(status: .badRequest, reason: "more than one Host"))
        }
        if hosts == 0 && head.version == .http1_1 {
            return .failure(RequestRejection(status: .badRequest, reason: "no Host"))  // RFC 9112 §3.2
        }
        if hosts == 1, let host, !Authority.isValid(host[...]) {
            return .failure(RequestRejection(status: .badRequest, reason: "invalid Host"))
        }
        let framing: RequestFraming
        switch self.framing(head, contentLengths: contentLengths, transferCodings: transferCodings) {
        case .failure(let rejection): return .failure(rejection)
        case .success(let value): framing = value
        }
        if framing != .none {
            // NIO's encoder drops TRACE's framing headers while its body would still be forwarded: the backend
            // would read that body as the next request. RFC 9110 §9.3.8: a client must not send one.
            if head.method == .TRACE {
                return .failure(RequestRejection(status: .badRequest, reason: "TRACE with a body"))
            }
            // The parser stops after an upgrade request; a body there is either smuggled bytes or a tunnel's.
            if head.stopsTheParser {
                return .failure(RequestRejection(status: .badRequest, reason: "upgrade request with a body"))
            }
        }
        if head.isWebSocketUpgrade {
            let keys = head.headers["sec-websocket-key"]
            guard keys.count == 1, let key = keys.first, WebSocketAccept.isValidKey(key) else {
                return .failure(RequestRejection(status: .badRequest, reason: "invalid Sec-WebSocket-Key"))
            }
        }
        return .success(framing)
    }

    /// The body framing of a head whose headers passed the checks above (RFC 9112 §6).
    private static func framing(
        _ head: HTTPRequestHead,
        contentLengths: [Substring],
        transferCodings: [Substring]
    ) -> Result<RequestFraming, RequestRejection> {
        if !transferCodings.isEmpty {
            // RFC 9112 §6.1: both headers, or TE on HTTP/1.0, is a framing error; a request whose last coding is
            // not chunked cannot be delimited. Any of these is how request smuggling starts.
            if !contentLengths.isEmpty {
                return .failure(
                    RequestRejection(status: .badRequest, reason: "both Content-Length and Transfer-Encoding")
                )
            }
            if head.version.major == 1 && head.version.minor == 0 {
                return .failure(RequestRejection(status: .badRequest, reason: "Transfer-Encoding on HTTP/1.0"))
            }
            guard let last = transferCodings.last, last.lowercased() == "chunked",
                transferCodings.dropLast().allSatisfy({ $0.lowercased() != "chunked" && !$0.isEmpty })
            else {
                return .failure(RequestRejection(status: .badRequest, reason: "Transfer-Encoding must end in chunked"))
            }
            guard transferCodings.count == 1 else {
                // gzip, chunked: the proxy removes chunked and cannot re-express the rest for the next hop
                // (Transfer-Encoding is hop-by-hop), so it refuses what it cannot forward faithfully (RFC 9112 §6.1).
                return .failure(
                    RequestRejection(status: .notImplemented, reason: "transfer coding other than chunked")
                )
            }
            return .success(.chunked)
        }
        if let first = contentLengths.first {
            guard contentLengths.allSatisfy({ $0 == first }), first.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                !first.isEmpty, first.utf8.count <= 18, let length = Int(first)
            else {
                return .failure(RequestRejection(status: .badRequest, reason: "invalid or conflicting Content-Length"))
            }
            return .success(length == 0 ? .none : .contentLength(length))
        }
        return .success(.none)
    }

    private static func trimmed(_ text: Substring) -> Substring {
        var text = text
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }

    /// RFC 9110 token characters only.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { tokenTable[Int($0)] }
    }

    /// Field values: visible characters, obs-text, space and tab; never CR, LF, NUL or other controls.
    static func isValidValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }

    private static let tokenTable: [Bool] = (0..<256).map { byte in
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(UInt8(byte))
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy never forwards, plus the legacy `Proxy-Connection`.
private let hopByHopHeaders: [String] = [
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authenticate", "proxy-authorization",
]

/// What a `Connection` header may not name away: framing and Host. (`transfer-encoding` is hop-by-hop anyway;
/// the forwarded message gets framing headers from what the proxy parsed.)
private let protectedFromConnection = ["content-length", "transfer-encoding", "host"]

/// `headers` without hop-by-hop headers, without every header the `Connection` header names and without
/// `extra` (lowercase names). Headers that need none of that (most requests and responses) come back as they
/// are: no copy, and no header is lowercased or re-validated.
func removingHopByHop(_ headers: HTTPHeaders, alsoRemoving extra: [String] = []) -> HTTPHeaders {
    var doomed: [String] = []
    var connectionNamesMore = false
    for (name, _) in headers {
        guard
            hopByHopHeaders.contains(where: { name.equalsLowercase($0) })
                || extra.contains(where: { name.equalsLowercase($0) })
        else { continue }
        if name.equalsLowercase("connection") { connectionNamesMore = true }
        doomed.append(name)
    }
    if connectionNamesMore {
        // Connection names more headers that end at this hop (RFC 9110 §7.6.1), but never the message's framing
        // or its Host: the client controls Connection, and obeying it there would forward a body nobody frames.
        for name in headers[canonicalForm: "connection"]
        where !protectedFromConnection.contains(where: { name.equalsLowercase($0) }) {
            doomed.append(String(name))
        }
    }
    guard !doomed.isEmpty else { return headers }
    var result = headers
    for name in doomed { result.remove(name: name) }  // case-insensitive, every occurrence; absent names are no-ops
    return result
}

extension StringProtocol {
    /// Whether this equals `lowercase` (which must be lowercase ASCII) ignoring ASCII case, without allocating.
    func equalsLowercase(_ lowercase: String) -> Bool {
        guard self.utf8.count == lowercase.utf8.count else { return false }
        return zip(self.utf8, lowercase.utf8).allSatisfy { byte, lower in
            byte == lower || (byte >= 0x41 && byte <= 0x5A && byte | 0x20 == lower)
        }
    }
}

struct ForwardingContext {
    let downstreamIP: String?
    let requestID: String
    let scheme: String
}

extension HTTPRequestHead {
    /// Headers the proxy answers or sets itself: `Expect` (it reads the body itself) and `X-Request-Id`.
    private static let replacedOnTheWayUp = ["expect", "x-request-id"]

    /// The head to send upstream: HTTP/1.1, hop-by-hop headers gone, forwarding headers added, path rewritten.
    ///
    /// - Parameters:
    ///   - route: the matched route (`strip_prefix`, `preserve_host`).
    ///   - backendAddress: `host:port` of the chosen backend, for `preserve_host: false`.
    ///   - framing: the request's body framing, re-expressed for the upstream hop.
    ///   - forwarding: downstream IP, request id and scheme.
    func upstreamHead(
        route: Route,
        backendAddress: String,
        framing: RequestFraming,
        forwarding: ForwardingContext
    ) -> HTTPRequestHead {
        var headers = removingHopByHop(self.headers, alsoRemoving: Self.replacedOnTheWayUp)
        if self.isWebSocketUpgrade {
            // The one hop-by-hop exchange a proxy passes on: the WebSocket handshake.
            headers.add(name: "connection", value: "upgrade")
            headers.add(name: "upgrade", value: "websocket")
        }
        let originalHost = self.headers.first(name: "host")
        if !route.preserveHost || originalHost == nil {
            headers.replaceOrAdd(name: "host", value: backendAddress)
        }
        if let ip = forwarding.downstreamIP {
            let existing = self.headers["x-forwarded-for"]
            headers.replaceOrAdd(
                name: "x-forwarded-for",
                value: existing.isEmpty ? ip : "\(existing.joined(separator: ", ")), \(ip)"
            )
        }
        headers.replaceOrAdd(name: "x-forwarded-proto", value: forwarding.scheme)
        if let originalHost { headers.replaceOrAdd(name: "x-forwarded-host", value: originalHost) }
        headers.add(name: "x-request-id", value: forwarding.requestID)
        // The framing the backend reads is the framing the proxy parsed, written out every time: never what
        // survived header filtering. (Upstream encoders are told not to add or drop framing headers themselves.)
        headers.remove(name: "content-length")
        switch framing {
        case .none:
            if self.method == .POST || self.method == .PUT || self.method == .PATCH {
                headers.add(name: "content-length", value: "0")  // some servers answer 411 without one
            }
        case .contentLength(let length): headers.add(name: "content-length", value: String(length))
        case .chunked: headers.add(name: "transfer-encoding", value: "chunked")
        }
        // A copy shares the decoded head's storage; only a changed version or target copies it.
        var upstream = self
        upstream.headers = headers
        if upstream.version != .http1_1 { upstream.version = .http1_1 }
        if route.stripPrefix != nil { upstream.uri = route.upstreamURI(self.uri) }
        return upstream
    }

    /// The downstream's `X-Request-Id` when it is short and printable; otherwise a new one from `generator`.
    func requestID(generator: inout RequestIDGenerator) -> String {
        if let given = self.headers.first(name: "x-request-id"), !given.isEmpty, given.utf8.count <= 128,
            given.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        {
            return given
        }
        return generator.next()
    }

    /// A WebSocket opening handshake (RFC 6455 §4.1): GET, HTTP/1.1, `Connection` with the `upgrade` token and
    /// `Upgrade` with `websocket`, in any case and within token lists.
    var isWebSocketUpgrade: Bool {
        guard self.method == .GET, self.version == .http1_1, self.headers.contains(name: "upgrade") else {
            return false
        }
        return self.headers.hasToken("websocket", in: "upgrade") && self.headers.hasToken("upgrade", in: "connection")
    }

    /// The HTTP parser stops after this head (an upgrade request or CONNECT), so nothing after it on the
    /// connection can be read as a request: the connection must close after the response unless it tunnels.
    var stopsTheParser: Bool {
        // The cheap test first: nearly no request has an Upgrade header; `hasToken` splits a list.
        self.method == .CONNECT
            || (self.headers.contains(name: "upgrade") && self.headers.hasToken("upgrade", in: "connection"))
    }

    /// Methods RFC 9110 §9.2.2 calls idempotent: safe to send again to another backend.
    var isIdempotent: Bool {
        switch self.method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: return true
        default: return false
        }
    }
}

/// Request ids: 128 bits as 32 hex digits from xoshiro256**, seeded per connection from one random process seed
/// and a connection counter (SplitMix64), so neither a request nor a connection costs a system call (ids need
/// to be unique, not secret).
struct RequestIDGenerator {
    private var state: (UInt64, UInt64, UInt64, UInt64)
    /// Read from the system generator once per process.
    private static let processSeed: UInt64 = {
        var system = SystemRandomNumberGenerator()
        return system.next()
    }()
    private static let connections = Atomic<UInt64>(0)

    init() {
        var seed = Self.processSeed ^ Self.connections.add(1, ordering: .relaxed).newValue &* 0xD1B5_4A32_D192_ED03
        func splitMix() -> UInt64 {
            seed &+= 0x9E37_79B9_7F4A_7C15
            return mix64(seed)
        }
        self.state = (splitMix(), splitMix(), splitMix(), splitMix() | 1)
    }

    private mutating func next64() -> UInt64 {
        let result = rotate(self.state.1 &* 5, 7) &* 9
        let t = self.state.1 << 17
        self.state.2 ^= self.state.0
        self.state.3 ^= self.state.1
        self.state.1 ^= self.state.2
        self.state.0 ^= self.state.3
        self.state.2 ^= t
        self.state.3 = rotate(self.state.3, 45)
        return result
    }

    mutating func next() -> String {
        let high = self.next64()
        let low = self.next64()
        return String(unsafeUninitializedCapacity: 32) { buffer in
            for index in 0..<16 {
                buffer[index] = hexDigit(high >> (60 - 4 * UInt64(index)))
                buffer[16 + index] = hexDigit(low >> (60 - 4 * UInt64(index)))
            }
            return 32
        }
    }
}

/// The lowercase hex digit of the low four bits of `value`.
private func hexDigit(_ value: UInt64) -> UInt8 {
    let nibble = UInt8(truncatingIfNeeded: value & 0xF)
    return nibble < 10 ? 0x30 + nibble : 0x57 + nibble  // "0"…"9", "a"…"f"
}

private func rotate(_ value: UInt64, _ bits: UInt64) -> UInt64 {
    (value << bits) | (value >> (64 - bits))
}

extension HTTPHeaders {
    /// Whether header `name` lists `token` (comma-separated, case-insensitive).
    func hasToken(_ token: String, in name: String) -> Bool {
        // canonicalForm splits comma-separated lists and trims the whitespace around each element.
        self[canonicalForm: name].contains { $0.utf8.count == token.utf8.count && $0.lowercased() == token }
    }
}

extension HTTPResponseHead {
    /// The head to send downstream: hop-by-hop headers removed; the encoder reframes the body for the client.
    func downstreamHead(version: HTTPVersion, closing: Bool, requestID: String) -> HTTPResponseHead {
        var headers = removingHopByHop(self.headers)
        if self.status == .switchingProtocols {
            headers.add(name: "connection", value: "upgrade")
            headers.add(name: "upgrade", value: "websocket")
        } else if closing {
            headers.add(name: "connection", value: "close")
        } else if version.major == 1 && version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        if !headers.contains(name: "x-request-id") { headers.add(name: "x-request-id", value: requestID) }
        // A copy shares the decoded head's storage; only a changed version copies it.
        var downstream = self
        downstream.headers = headers
        if downstream.version != version { downstream.version = version }
        return downstream
    }

    /// Whether the body is delimited (Content-Length, chunked, or no body at all) rather than by closing.
    var hasDelimitedBody: Bool {
        let code = self.status.code
        if code < 200 || code == 204 || code == 304 { return true }
        return self.headers.contains(name: "content-length")
            || self.headers[canonicalForm: "transfer-encoding"].last?.lowercased() == "chunked"
    }
}
