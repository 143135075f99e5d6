/// A `host:port` pair as written in configuration (`127.0.0.1:8080`, `[::1]:8080`, `chat:9000`).
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP literal, without brackets.
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[v6]:port`; `nil` when malformed or the port is not 0…65535.
    public init?(parsing text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }  // a bare IPv6 literal needs brackets
        }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }),
            let port = Int(portText), (0...65_535).contains(port), portText.allSatisfy(\.isASCII)
        else { return nil }
        self.host = String(host)
        self.port = port
    }

    /// `host:port`, with brackets around an IPv6 literal.
    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}
