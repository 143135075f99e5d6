import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Turns a name into the IP addresses it has now (every A and AAAA record).
public protocol NameResolver: Sendable {
    func resolve(_ name: String) async throws -> [String]
}

/// The system resolver (`getaddrinfo`: DNS, /etc/hosts, nsswitch), run on NIO's thread pool so that no
/// event loop ever blocks on it.
public struct SystemResolver: NameResolver {
    public init() {}

    public func resolve(_ name: String) async throws -> [String] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(name, nil, &hints, &result)
            guard status == 0, let first = result else { throw ResolveError(name: name, code: status) }
            defer { freeaddrinfo(first) }
            var addresses: [String] = []
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let entry = cursor {
                var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                _ = getnameinfo(
                    entry.pointee.ai_addr,
                    entry.pointee.ai_addrlen,
                    &text,
                    socklen_t(text.count),
                    nil,
                    0,
                    NI_NUMERICHOST
                )
                let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !address.isEmpty && !addresses.contains(address) { addresses.append(address) }
                cursor = entry.pointee.ai_next
            }
            return addresses
        }
    }
}

/// A resolver over a hosts-format file (`ADDRESS NAME [NAME…]` lines), re-read on every lookup: the
/// /etc/hosts-style override tests and air-gapped setups use.
public struct HostsFileResolver: NameResolver {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public func resolve(_ name: String) async throws -> [String] {
        guard let file = fopen(self.path, "r") else { throw ResolveError(name: name, code: -1) }
        defer { fclose(file) }
        var addresses: [String] = []
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0 {
            guard let line else { break }
            let text = String(cString: line).split(separator: "#", maxSplits: 1).first ?? ""
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            if fields.count >= 2, fields.dropFirst().contains(where: { $0 == name }) {
                addresses.append(String(fields[0]))
            }
        }
        free(line)
        return addresses
    }
}

public struct ResolveError: Error, CustomStringConvertible {
    public let name: String
    public let code: Int32
    public var description: String { "cannot resolve \(self.name) (\(self.code))" }
}
