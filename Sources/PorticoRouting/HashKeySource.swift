import NIOHTTP1
import PorticoBalancing
import PorticoConfig

extension PoolConfiguration.HashKeySource {
    /// The first source in `sources` that the request carries, hashed with ``StableHash``; `nil` if none.
    ///
    /// - Parameters:
    ///   - sources: `hash_key` fallbacks in order.
    ///   - head: the downstream request head.
    ///   - downstreamIP: the downstream peer's IP address text.
    public static func key(
        _ sources: [Self],
        head: HTTPRequestHead,
        downstreamIP: String?
    ) -> UInt64? {
        for source in sources {
            switch source {
            case .ip:
                if let ip = downstreamIP { return StableHash.hash(ip) }
            case .header(let name):
                if let value = head.headers.first(name: name), !value.isEmpty { return StableHash.hash(value) }
            case .cookie(let name):
                if let value = cookieValue(name, in: head.headers) { return StableHash.hash(value.utf8) }
            case .query(let name):
                if let query = RequestTarget(head.uri).query, let value = queryValue(name, in: query) {
                    return StableHash.hash(value.utf8)
                }
            }
        }
        return nil
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
public func cookieValue(_ name: String, in headers: HTTPHeaders) -> Substring? {
    for header in headers[canonicalForm: "cookie"] {
        for pair in header.split(separator: ";") {
            let trimmed = pair.drop { $0 == " " }
            guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals] == name else { continue }
            let value = trimmed[trimmed.index(after: equals)...]
            if !value.isEmpty { return value }
        }
    }
    return nil
}

/// The raw value of query parameter `name` (not percent-decoded: the key only needs to be stable).
public func queryValue(_ name: String, in query: Substring) -> Substring? {
    for pair in query.split(separator: "&") {
        if let equals = pair.firstIndex(of: "=") {
            if pair[..<equals] == name, equals < pair.endIndex {
                let value = pair[pair.index(after: equals)...]
                if !value.isEmpty { return value }
            }
        }
    }
    return nil
}
