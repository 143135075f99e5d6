import NIOHTTP1
import PorticoConfig

/// The routes of one configuration, compiled once: first match wins, no match means 404.
public struct RouteTable: Sendable {
    public let routes: [Route]

    /// Compiles the routes of a validated configuration.
    ///
    /// - Parameters:
    ///   - configuration: the routes to compile, in match order.
    public init(_ configuration: [RouteConfiguration]) {
        self.routes = configuration.enumerated().map { Route(index: $0.offset, configuration: $0.element) }
    }

    /// The first route that matches the request head, or `nil` (404).
    ///
    /// - Parameters:
    ///   - head: the downstream request head.
    public func match(_ head: HTTPRequestHead) -> Route? {
        let target = RequestTarget(head.uri)
        let host = RouteMatcher.normalizedHost(head.headers.first(name: "host"))
        return self.routes.first {
            $0.matcher.matches(method: head.method, host: host, path: target.path, headers: head.headers)
        }
    }
}

/// One compiled route.
public struct Route: Sendable {
    /// Position in the configuration, for logs and metrics.
    public let index: Int
    public let pool: String
    public let stripPrefix: String?
    public let preserveHost: Bool
    public let websocket: WebSocketConfiguration?
    /// `Strict-Transport-Security` for responses over TLS.
    public let hsts: String?
    let matcher: RouteMatcher

    init(index: Int, configuration: RouteConfiguration) {
        self.index = index
        self.pool = configuration.pool
        self.stripPrefix = configuration.stripPrefix
        self.preserveHost = configuration.preserveHost
        self.websocket = configuration.websocket
        self.hsts = configuration.hsts
        self.matcher = RouteMatcher(configuration)
    }

    /// The request target to send upstream: `strip_prefix` removed from the path, the query kept.
    ///
    /// - Parameters:
    ///   - uri: the downstream request target.
    public func upstreamURI(_ uri: String) -> String {
        guard let prefix = self.stripPrefix, uri.hasPrefix(prefix) else { return uri }
        let rest = uri.dropFirst(prefix.count)
        if rest.isEmpty { return "/" }
        if rest.first == "?" { return "/" + rest }
        return rest.first == "/" ? String(rest) : "/" + rest
    }
}

/// The path and query of a request target (`/a/b?x=1`); an absolute-form target keeps only its path.
public struct RequestTarget: Sendable {
    public let path: Substring
    public let query: Substring?

    public init(_ uri: String) {
        var rest = uri[...]
        if rest.utf8.first != UInt8(ascii: "/"), let scheme = rest.firstRange(of: "://") {
            // absolute-form (http://host/path): routing uses the path
            let afterScheme = rest[scheme.upperBound...]
            rest = afterScheme.utf8.firstIndex(of: UInt8(ascii: "/")).map { afterScheme[$0...] } ?? "/"
        }
        if let question = rest.utf8.firstIndex(of: UInt8(ascii: "?")) {
            self.path = rest[..<question]
            self.query = rest[rest.utf8.index(after: question)...]
        } else {
            self.path = rest
            self.query = nil
        }
    }
}
