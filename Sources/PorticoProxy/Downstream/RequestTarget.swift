import Crypto
import NIOHTTP1

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `host [":" port]` as a Host header or an absolute-form target carries it (RFC 9110 §4.2.3, RFC 3986 §3.2.2):
/// a registered name, an IPv4 address or a bracketed IPv6 literal, and an optional decimal port. Nothing else
/// (no userinfo, no path, no spaces, no list) may reach routing, the `Location` of a redirect or a backend.
enum Authority {
    static func isValid(_ text: Substring) -> Bool {
        let bytes = text.utf8
        guard !bytes.isEmpty else { return false }  // an origin-form request's target has an authority
        var index = bytes.startIndex
        if bytes[index] == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")), bytes.distance(from: index, to: close) > 1
            else { return false }
            let inside = bytes[bytes.index(after: index)..<close]
            guard inside.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") }) else {
                return false
            }
            index = bytes.index(after: close)
        } else {
            while index < bytes.endIndex, bytes[index] != UInt8(ascii: ":") {
                guard regNameTable[Int(bytes[index])] else { return false }
                index = bytes.index(after: index)
            }
        }
        guard index < bytes.endIndex else { return true }
        guard bytes[index] == UInt8(ascii: ":") else { return false }
        let port = bytes[bytes.index(after: index)...]
        return !port.isEmpty && port.count <= 5
            && port.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    /// unreserved / sub-delims without ",": a comma would make a list of hosts. No percent-encoding either: a
    /// router compares bytes, and a backend that decodes `internal%2etest` would see another host than routing did.
    private static let regNameTable: [Bool] = (0..<256).map { byte in
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        default: return "-._~!$&'()*+;=".utf8.contains(UInt8(byte))
        }
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x66)
    }
}

enum RequestTarget {
    /// Brings a request target to origin-form before anything routes on it.
    ///
    /// An absolute-form target (`GET http://internal.test/x`) names the host itself: its authority replaces
    /// `Host` (RFC 9112 §3.2.2) and the backend gets origin-form with that `Host`, so routing and the backend
    /// always agree on the host. `*` is for OPTIONS only; any other form is refused.
    ///
    /// - Returns: `nil` when `head` is fine (and possibly rewritten), else why it is refused.
    static func normalize(_ head: inout HTTPRequestHead) -> RequestRejection? {
        let uri = head.uri.utf8
        guard let first = uri.first else { return Self.invalid }
        if first == UInt8(ascii: "/") { return nil }
        if head.uri == "*" { return head.method == .OPTIONS ? nil : Self.invalid }
        let schemeLength: Int
        if Self.hasPrefix(uri, "http://") {
            schemeLength = 7
        } else if Self.hasPrefix(uri, "https://") {
            schemeLength = 8
        } else {
            return Self.invalid
        }
        let afterScheme = head.uri.dropFirst(schemeLength)
        let authorityEnd =
            afterScheme.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd]
        guard !authority.isEmpty, Authority.isValid(authority) else { return Self.invalid }
        let rest = afterScheme[authorityEnd...]
        if rest.first == "#" { return Self.invalid }
        head.headers.replaceOrAdd(name: "host", value: String(authority))
        head.uri = rest.isEmpty ? "/" : rest.first == "?" ? "/" + rest : String(rest)
        return nil
    }

    private static let invalid = RequestRejection(status: .badRequest, reason: "invalid request target")

    private static func hasPrefix(_ uri: String.UTF8View, _ prefix: String) -> Bool {
        guard uri.count >= prefix.utf8.count else { return false }
        return zip(uri, prefix.utf8).allSatisfy { byte, lower in
            byte == lower || (byte >= 0x41 && byte <= 0x5A && byte | 0x20 == lower)
        }
    }
}

/// The WebSocket handshake's key and answer (RFC 6455 §4.2.2): the proxy checks that a backend's 101 answers
/// the client's own key, so nothing but a real WebSocket server can turn a connection into a tunnel.
enum WebSocketAccept {
    private static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// A `Sec-WebSocket-Key`: the base64 of 16 bytes (24 characters, ending in `==`).
    static func isValidKey(_ key: String) -> Bool {
        guard key.utf8.count == 24, let decoded = Data(base64Encoded: key) else { return false }
        return decoded.count == 16
    }

    /// The `Sec-WebSocket-Accept` a server must send for `key`.
    static func expected(forKey key: String) -> String {
        let digest = Insecure.SHA1.hash(data: Array((key + Self.guid).utf8))
        return Data(digest).base64EncodedString()
    }
}
