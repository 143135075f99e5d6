import NIOHTTP1
import PorticoConfig

/// The `match` part of a route, compiled.
struct RouteMatcher: Sendable {
    enum Host: Sendable {
        case any
        case exact(String)
        /// `*.example.com` is stored as `.example.com`: any name ending in it, with at least one label before.
        case suffix(String)
    }

    enum Path: Sendable {
        case any
        case exact(String)
        case prefix(String)
        case regex(PathRegex)
    }

    let host: Host
    let path: Path
    let headers: [(name: String, rule: RouteConfiguration.HeaderMatch)]
    let methods: [HTTPMethod]

    init(_ configuration: RouteConfiguration) {
        switch configuration.host {
        case nil: self.host = .any
        case let host? where host.hasPrefix("*."): self.host = .suffix(String(host.dropFirst()))
        case let host?: self.host = .exact(host)
        }
        switch configuration.path {
        case nil: self.path = .any
        case .exact(let path): self.path = .exact(path)
        case .prefix(let prefix): self.path = prefix == "/" ? .any : .prefix(prefix)
        case .regex(let pattern): self.path = .regex(PathRegex(pattern))
        }
        self.headers = configuration.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        self.methods = configuration.methods.map { HTTPMethod(rawValue: $0) }
    }

    func matches(method: HTTPMethod, host: Substring?, path: Substring, headers: HTTPHeaders) -> Bool {
        if !self.methods.isEmpty && !self.methods.contains(method) { return false }
        switch self.host {
        case .any: break
        case .exact(let expected):
            guard let host, host == expected else { return false }
        case .suffix(let suffix):
            guard let host, host.count > suffix.count, host.hasSuffix(suffix) else { return false }
        }
        switch self.path {
        case .any: break
        case .exact(let expected): if path != expected { return false }
        case .prefix(let prefix): if !path.hasPrefix(prefix) { return false }
        case .regex(let regex): if !regex.matches(path) { return false }
        }
        for (name, rule) in self.headers {
            switch rule {
            case .present:
                if !headers.contains(name: name) { return false }
            case .equals(let value):
                if !headers[name].contains(value) { return false }
            }
        }
        return true
    }

    /// The `Host` header without port, lowercased; `nil` when absent or empty.
    static func normalizedHost(_ header: String?) -> Substring? {
        guard let header, !header.isEmpty else { return nil }
        var host = header[...]
        if host.hasPrefix("[") {
            if let close = host.firstIndex(of: "]") { host = host[...close] }
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        if host.last == "." { host = host.dropLast() }  // "example.com." is the same name
        if host.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
            return Substring(host.lowercased())
        }
        return host
    }
}

/// A compiled `path_regex`, searched anywhere in the path unless anchored (as in nginx and Envoy).
struct PathRegex: @unchecked Sendable {
    // @unchecked: Regex is an immutable value once compiled; matching does not mutate it and the stdlib
    // documents it as safe to share (it is not yet annotated Sendable on every platform).
    let regex: Regex<AnyRegexOutput>?

    init(_ pattern: String) {
        self.regex = try? Regex(pattern)
    }

    func matches(_ path: Substring) -> Bool {
        guard let regex else { return false }
        return (try? regex.firstMatch(in: path)) != nil
    }
}
