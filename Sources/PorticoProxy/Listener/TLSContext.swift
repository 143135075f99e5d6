import NIOCore
import NIOSSL
import PorticoConfig

#if canImport(Glibc)
import Glibc
#endif

/// The certificates of one TLS listener, loaded and checked, with one TLS context per certificate; SNI picks
/// among them by the names each certificate carries. Built with every snapshot, so a reload re-reads the files
/// and new connections get the new certificates while live ones keep theirs.
final class ServerTLS: Sendable {
    struct Entry: Sendable {
        let names: [String]
        let context: NIOSSLContext
    }

    /// The first is the default, for clients without SNI or with an unknown name.
    let entries: [Entry]

    private init(entries: [Entry]) {
        self.entries = entries
    }

    /// The context for `serverName`: an exact name first, then a wildcard (`*.example.com`), then the default.
    func context(for serverName: String?) -> NIOSSLContext {
        if let name = serverName?.lowercased() {
            if let exact = self.entries.first(where: { $0.names.contains(name) }) { return exact.context }
            if let dot = name.firstIndex(of: ".") {
                let wildcard = "*" + name[dot...]
                if let match = self.entries.first(where: { $0.names.contains(wildcard) }) { return match.context }
            }
        }
        return self.entries[0].context
    }

    /// Loads and checks every certificate of a listener: readable files, a key that matches its certificate,
    /// a certificate that is valid now; TLS 1.2 and 1.3 only, ALPN `http/1.1`.
    ///
    /// - Parameters:
    ///   - configuration: the listener's `tls` section.
    ///   - path: its key path, for error messages (`listeners[1].tls`).
    static func load(_ configuration: ListenerTLSConfiguration, path: String) throws(ConfigurationErrors) -> ServerTLS {
        var entries: [Entry] = []
        var errors: [ConfigurationError] = []
        for (index, pair) in configuration.certificates.enumerated() {
            let itemPath = "\(path).certificates[\(index)]"
            do {
                let (chain, key) = try loadPair(pair, path: itemPath)
                var tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: chain.map { .certificate($0) },
                    privateKey: .privateKey(key)
                )
                tls.minimumTLSVersion = .tlsv12
                tls.maximumTLSVersion = .tlsv13
                tls.applicationProtocols = ["http/1.1"]
                let context: NIOSSLContext
                do {
                    context = try NIOSSLContext(configuration: tls)
                } catch {
                    throw ConfigurationError(
                        path: "\(itemPath).key",
                        message: "\(pair.key) does not match the certificate in \(pair.cert) (\(error))"
                    )
                }
                entries.append(Entry(names: names(of: chain[0]), context: context))
            } catch let error as ConfigurationError {
                errors.append(error)
            } catch {
                errors.append(ConfigurationError(path: itemPath, message: "\(error)"))
            }
        }
        guard errors.isEmpty, !entries.isEmpty else { throw ConfigurationErrors(errors) }
        return ServerTLS(entries: entries)
    }

    private static func loadPair(
        _ pair: ListenerTLSConfiguration.Certificate,
        path: String
    ) throws -> ([NIOSSLCertificate], NIOSSLPrivateKey) {
        guard access(pair.cert, R_OK) == 0 else {
            throw ConfigurationError(path: "\(path).cert", message: "cannot read \(pair.cert)")
        }
        guard access(pair.key, R_OK) == 0 else {
            throw ConfigurationError(path: "\(path).key", message: "cannot read \(pair.key)")
        }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(pair.cert)
        } catch {
            throw ConfigurationError(path: "\(path).cert", message: "\(pair.cert) is not a PEM certificate (\(error))")
        }
        guard let leaf = chain.first else {
            throw ConfigurationError(path: "\(path).cert", message: "\(pair.cert) holds no certificate")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: pair.key, format: .pem)
        } catch {
            throw ConfigurationError(path: "\(path).key", message: "\(pair.key) is not a PEM private key (\(error))")
        }
        let now = time(nil)
        if leaf.notValidAfter < now {
            throw ConfigurationError(
                path: "\(path).cert",
                message: "the certificate in \(pair.cert) expired on \(formatDate(leaf.notValidAfter))"
            )
        }
        if leaf.notValidBefore > now {
            throw ConfigurationError(
                path: "\(path).cert",
                message: "the certificate in \(pair.cert) is not valid before \(formatDate(leaf.notValidBefore))"
            )
        }
        return (chain, key)
    }

    /// DNS names in the subject alternative names, or else the common name.
    static func names(of certificate: NIOSSLCertificate) -> [String] {
        let sans = certificate._subjectAlternativeNames().compactMap { name -> String? in
            guard name.nameType == .dnsName else { return nil }
            return String(decoding: name.contents, as: UTF8.self).lowercased()
        }
        if !sans.isEmpty { return sans }
        // The common name is only exposed through the description: "…;common_name=NAME;…".
        let description = certificate.description
        guard let start = description.firstRange(of: "common_name=") else { return [] }
        let rest = description[start.upperBound...]
        return [String(rest.prefix { $0 != ";" && $0 != ">" }).lowercased()]
    }

    private static func formatDate(_ time: time_t) -> String {
        var seconds = time
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))"
    }
}

/// TLS from Portico to one pool's backends.
struct UpstreamTLS: Sendable {
    let context: NIOSSLContext
    let serverName: String?

    static func load(_ configuration: UpstreamTLSConfiguration, path: String) throws(ConfigurationErrors) -> UpstreamTLS
    {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        tls.certificateVerification = configuration.verify ? .fullVerification : .none
        if let ca = configuration.ca {
            guard access(ca, R_OK) == 0 else {
                throw ConfigurationErrors([ConfigurationError(path: "\(path).ca", message: "cannot read \(ca)")])
            }
            tls.trustRoots = .file(ca)
        }
        do {
            return UpstreamTLS(context: try NIOSSLContext(configuration: tls), serverName: configuration.serverName)
        } catch {
            throw ConfigurationErrors([ConfigurationError(path: path, message: "\(error)")])
        }
    }
}

extension PorticoConfiguration {
    /// Loads every certificate and key the configuration names and reports what is wrong with them:
    /// unreadable files, a key that does not match its certificate, an expired certificate.
    public func checkTLSMaterial() -> [ConfigurationError] {
        var errors: [ConfigurationError] = []
        for (index, listener) in self.listeners.enumerated() {
            guard let tls = listener.tls else { continue }
            do {
                _ = try ServerTLS.load(tls, path: "listeners[\(index)].tls")
            } catch {
                errors += error.errors
            }
        }
        for pool in self.pools {
            guard let tls = pool.tls else { continue }
            do {
                _ = try UpstreamTLS.load(tls, path: "pools.\(pool.name).tls")
            } catch {
                errors += error.errors
            }
        }
        return errors
    }
}
