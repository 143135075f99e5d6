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

    /// Byte-wise comparisons on UTF-8 (as proxies compare hosts and paths): no Unicode work per request.
    func matches(method: HTTPMethod, host: Substring?, path: Substring, headers: HTTPHeaders) -> Bool {
        if !self.methods.isEmpty && !self.methods.contains(method) { return false }
        switch self.host {
        case .any: break
        case .exact(let expected):
            guard let host, host.utf8.elementsEqual(expected.utf8) else { return false }
        case .suffix(let suffix):
            guard let host, host.utf8.count > suffix.utf8.count, host.utf8.hasSuffix(suffix.utf8) else { return false }
        }
        switch self.path {
        case .any: break
        case .exact(let expected): if !path.utf8.elementsEqual(expected.utf8) { return false }
        case .prefix(let prefix): if !path.utf8.starts(with: prefix.utf8) { return false }
        case .regex(let regex): if !regex.matches(path) { return false }
        }
        for (name, rule) in self.headers {
            switch rule {
            case .present:
                if !headers.contains(name: name) { return false }
            case .equals(let value):
                let found = headers.contains { $0.name.utf8.equalsLowercased(name.utf8) && $0.value == value }
                if !found { return false }
            }
        }
        return true
    }

    /// The `Host` header without port, lowercased; `nil` when absent or empty.
    static func normalizedHost(_ header: String?) -> Substring? {
        guard let header, !header.isEmpty else { return nil }
        var host = header[...]
        let bytes = host.utf8
        if bytes.first == UInt8(ascii: "[") {
            if let close = bytes.firstIndex(of: UInt8(ascii: "]")) { host = host[...close] }
        } else if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
            host = host[..<colon]
        }
        if host.utf8.last == UInt8(ascii: ".") { host = host.dropLast() }  // "example.com." is the same name
        if host.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
            return Substring(host.lowercased())
        }
        return host
    }
}

extension Collection where Element == UInt8 {
    /// Whether the collection equals `lowercased` ignoring ASCII case (`lowercased` must be lower case).
    func equalsLowercased(_ lowercased: some Collection<UInt8>) -> Bool {
        guard self.count == lowercased.count else { return false }
        return zip(self, lowercased).allSatisfy { byte, expected in
            (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == expected
        }
    }

    /// Whether the collection ends with `suffix`, byte for byte.
    func hasSuffix(_ suffix: some Collection<UInt8>) -> Bool {
        let count = self.count
        let suffixCount = suffix.count
        guard count >= suffixCount else { return false }
        return self.dropFirst(count - suffixCount).elementsEqual(suffix)
    }
}

/// A compiled `path_regex`, searched anywhere in the path unless anchored (as in nginx and Envoy).
struct PathRegex: @unchecked Sendable {
    // @unchecked: Regex is an immutable value once compiled; matching does not mutate it and the stdlib
    // documents it as safe to share (it is not yet annotated Sendable on every platform).
    let regex: Regex<AnyRegexOutput>?
    /// For a pattern anchored with `^`, the literal text it starts with: a path without it cannot match,
    /// and checking bytes is far cheaper than running the regex.
    let literalPrefix: [UInt8]

    init(_ pattern: String) {
        self.regex = try? Regex(pattern)
        self.literalPrefix = Self.literalPrefix(of: pattern)
    }

    func matches(_ path: Substring) -> Bool {
        guard let regex, path.utf8.starts(with: self.literalPrefix) else { return false }
        return (try? regex.firstMatch(in: path)) != nil
    }

    /// `^/users/[0-9]+` → `/users/`; `^/ab?` → `/a`; no `^` (or `^` then a metacharacter) → empty.
    static func literalPrefix(of pattern: String) -> [UInt8] {
        // An alternation anywhere may not share the prefix ("^/a.*|/b"): give up on it.
        guard pattern.utf8.first == UInt8(ascii: "^"), !pattern.utf8.contains(UInt8(ascii: "|")) else { return [] }
        var prefix: [UInt8] = []
        for byte in pattern.utf8.dropFirst() {
            switch byte {
            case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "{"):
                if !prefix.isEmpty { prefix.removeLast() }  // the last literal is optional
                return prefix
            case UInt8(ascii: "\\"), UInt8(ascii: "."), UInt8(ascii: "["), UInt8(ascii: "("), UInt8(ascii: "$"),
                UInt8(ascii: "+"), UInt8(ascii: "^"), UInt8(ascii: ")"), UInt8(ascii: "]"), UInt8(ascii: "}"):
                return prefix  // `+` keeps its literal: it occurs at least once
            default:
                guard byte < 0x80 else { return prefix }  // stop at non-ASCII: keep it simple
                prefix.append(byte)
            }
        }
        return prefix
    }
}
