/// A route: what a request must look like, and the pool that serves it.
public struct RouteConfiguration: Sendable, Equatable {
    /// How a route matches the request path.
    public enum PathMatch: Sendable, Equatable {
        /// The path equals this string.
        case exact(String)
        /// The path starts with this string.
        case prefix(String)
        /// The path matches this regular expression (validated at load).
        case regex(String)
    }

    /// How a route matches one request header.
    public enum HeaderMatch: Sendable, Equatable {
        /// The header is present, with any value (`"*"` in YAML).
        case present
        /// The header has exactly this value.
        case equals(String)
    }

    /// `match.host`: exact (`api.example.com`) or a wildcard (`*.example.com`); `nil` matches any host.
    public var host: String?
    /// `match.path`, `match.path_prefix` or `match.path_regex`; `nil` matches any path.
    public var path: PathMatch?
    /// `match.headers`: lowercased header name → rule. Every rule must hold.
    public var headers: [String: HeaderMatch]
    /// `match.methods`: upper-case method names; empty matches every method.
    public var methods: [String]
    /// The pool that serves matching requests.
    public var pool: String
    /// Removed from the front of the path before forwarding.
    public var stripPrefix: String?
    /// Forward the downstream `Host` header (default), or send the backend's own `host:port`.
    public var preserveHost: Bool
    /// WebSocket rules for this route, if any.
    public var websocket: WebSocketConfiguration?
    /// `Strict-Transport-Security` value added to responses served over TLS, if any.
    public var hsts: String?

    public init(
        host: String? = nil,
        path: PathMatch? = nil,
        headers: [String: HeaderMatch] = [:],
        methods: [String] = [],
        pool: String,
        stripPrefix: String? = nil,
        preserveHost: Bool = true,
        websocket: WebSocketConfiguration? = nil
    ) {
        self.host = host
        self.path = path
        self.headers = headers
        self.methods = methods
        self.pool = pool
        self.stripPrefix = stripPrefix
        self.preserveHost = preserveHost
        self.websocket = websocket
    }
}

/// Per-route WebSocket rules.
public struct WebSocketConfiguration: Sendable, Equatable {
    /// Allowed `Origin` values; empty allows every origin.
    public var origins: [String] = []
    /// A tunnel with no frame in either direction for this long is closed. Default 300s.
    public var idleTimeout: Duration = .seconds(300)
    /// Largest message accepted. Default 1 MiB.
    public var maxMessageBytes: Int = 1_048_576

    public init() {}
}
